"""Traffic over time: predictions per time bucket, per endpoint and version, counted by the
database.

The bucket width is chosen to fit the data: the smallest of WIDTHS that covers the time from
the oldest prediction to now in at most MAX_BUCKETS buckets (the longest width shows only its
last MAX_BUCKETS buckets). Buckets are aligned on multiples of their width since the Unix
epoch, in UTC, so the same prediction always falls in the same bucket. One grouped query
counts them; it reads only the (endpoint, model_version, created_at) index. Buckets of whole
hours come from the hourly rollups (serving/reports/rollups.py) as far as they reach.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from serving.reports import rollups
from serving.store import dialect
from serving.store.tables import utcnow

MINUTE, HOUR, DAY = 60, 3600, 86400
# Widths a person reads at a glance, smallest first.
WIDTHS = (MINUTE, 5 * MINUTE, 15 * MINUTE, HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 7 * DAY)
MAX_BUCKETS = 48
# A short history still gets a readable axis: at least this many buckets, ending now.
MIN_BUCKETS = 12
_EPOCH = dt.datetime(1970, 1, 1)

Pair = tuple[str, str]


@dataclass(frozen=True)
class Traffic:
    """Prediction counts in consecutive buckets of `width` seconds, the last one holding
    `now`; `counts[(endpoint, version)]` has one number per bucket."""

    width: int
    starts: list[dt.datetime]
    counts: dict[Pair, list[int]] = field(default_factory=dict)

    def series(self, endpoint: str, version: str) -> list[int]:
        """One version's counts (zeros when it has none in the window)."""
        return self.counts.get((endpoint, version), [0] * len(self.starts))

    def endpoint_total(self, endpoint: str) -> list[int]:
        """Every version of an endpoint summed, bucket by bucket."""
        totals = [0] * len(self.starts)
        for (e, _), values in self.counts.items():
            if e == endpoint:
                totals = [a + b for a, b in zip(totals, values, strict=True)]
        return totals

    @property
    def width_label(self) -> str:
        """The width in words: "5 minutes", "1 hour", "7 days"."""
        for unit, name in ((DAY, "day"), (HOUR, "hour"), (MINUTE, "minute")):
            if self.width % unit == 0:
                n = self.width // unit
                return f"{n} {name}{'s' if n != 1 else ''}"
        return f"{self.width} seconds"


def choose_width(span_seconds: float) -> int:
    """The smallest width that shows `span_seconds` in at most MAX_BUCKETS buckets."""
    for width in WIDTHS:
        if span_seconds < width * (MAX_BUCKETS - 1):
            return width
    return WIDTHS[-1]


def traffic(pairs: Iterable[Pair], now: dt.datetime | None = None) -> Traffic:
    """Predictions per bucket for each (endpoint, version) pair, up to `now` (naive UTC):
    whole hours from the rollups where the bucket width allows, the rest from the log."""
    chosen = sorted(set(pairs))
    moment = now or utcnow()
    # One snapshot: a fold committing between the two reads would count its hours twice.
    return rollups.consistent(lambda: _traffic(chosen, moment))


def _traffic(pairs: list[Pair], now: dt.datetime) -> Traffic:
    oldest = _oldest(pairs)
    span = (now - oldest).total_seconds() if oldest is not None else 0.0
    width = choose_width(max(span, 0.0))
    last = _seconds(now) // width
    first = last - MAX_BUCKETS + 1
    if oldest is not None:
        first = max(first, min(_seconds(oldest) // width, last - MIN_BUCKETS + 1))
    else:
        first = last - MIN_BUCKETS + 1
    starts = [_EPOCH + dt.timedelta(seconds=b * width) for b in range(first, last + 1)]
    counts: dict[Pair, list[int]] = {}
    if pairs:
        for endpoint, version, bucket, count in _counted(pairs, width, starts[0]):
            index = int(bucket) - first
            if 0 <= index < len(starts):
                counts.setdefault((endpoint, version), [0] * len(starts))[index] += count
    return Traffic(width, starts, counts)


def _seconds(moment: dt.datetime) -> int:
    return int((moment - _EPOCH).total_seconds())


def _oldest(pairs: list[Pair]) -> dt.datetime | None:
    # One MIN per version: each is a single seek in the (endpoint, model_version, created_at)
    # index, where one MIN over an endpoint would scan all of its rows.
    found = []
    for endpoint, version in pairs:
        row = dialect.one(
            "SELECT MIN(created_at) FROM prediction WHERE endpoint = ? AND model_version = ?",
            (endpoint, version),
        )
        if row and row[0] is not None:
            found.append(_timestamp(row[0]))
    return min(found) if found else None


def _counted(pairs: list[Pair], width: int, since: dt.datetime) -> list[tuple[Any, ...]]:
    # Whole seconds, the fraction cut off before any arithmetic: widths are whole seconds, and
    # rounding instead would move 11:59:59.9999 into the bucket of 12:00 (SQLite's date
    # functions keep milliseconds, a double epoch keeps about as much).
    rolled, since = rollups.hour_counts(pairs, width, since)
    seconds = dialect.whole_seconds("created_at")
    matches = " OR ".join("(endpoint = ? AND model_version = ?)" for _ in pairs)
    sql = (
        f"SELECT endpoint, model_version, {seconds} / ? AS bucket, COUNT(*) FROM prediction "
        f"WHERE ({matches}) AND created_at >= ? GROUP BY endpoint, model_version, bucket"
    )
    # Timestamps go in as text in the stored format, which both databases compare correctly.
    params = (width, *(x for pair in pairs for x in pair), since.isoformat(sep=" "))
    return rolled + [(e, v, int(b), int(c)) for e, v, b, c in dialect.rows(sql, params)]


def _timestamp(value: Any) -> dt.datetime:
    # SQLite hands back the stored text; PostgreSQL a datetime.
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    return dt.datetime.fromisoformat(str(value))
