"""Drift: how far recent inputs have moved from the training profile in model.json.

Each profiled feature is cut into bins that training's profile gives shares to; recent values
are counted into the same bins, and the two distributions are compared with the population
stability index:

    PSI = sum over bins i of (r_i - t_i) * ln(r_i / t_i)

where t_i and r_i are the training and recent shares of bin i, both of all rows (a "missing"
bin holds null values, so a change in how often a value is missing moves the PSI too). A share
below EPSILON = 1e-4 counts as EPSILON, since an empty bin would make the logarithm infinite;
shares are not renormalised after that. PSI < 0.1 is stable, 0.1 to 0.25 moderate, above
0.25 major.

Bins:
- numeric features: bins (-inf, e1], (e1, e2], ..., (ek, +inf) with edges at the distinct
  inner training deciles. Profiles written by serving/model/profile.py carry these bins with the
  exact share of training values in each (`bins`). An older profile with only the 11
  `quantiles` gets shares estimated from them (each tenth of training goes to the bin holding
  its upper decile), which for a feature with few distinct values is rough: the answer flags
  such features `approximate`, and an unchanged distribution may then show some PSI.
- categorical features: one bin per category with at least MIN_CATEGORY_SHARE of the
  training rows, and an "other" bin for the rarer ones and any category training never saw
  (its training share is what the listed categories and missing values leave). Rare
  categories are pooled because a few recent rows spread over many tiny bins would look like
  drift by chance alone.

By chance alone, n recent rows from an unchanged distribution over k bins give a PSI of about
(k - 1) / n: 0.01 for 11 bins and 1,000 rows, but 0.1 for 100 rows.

All functions are pure but `recent_observations`, which reads the stored predictions.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from serving.errors import BadRequest, detail
from serving.model.runtime import LoadedModel
from serving.store.database import unit_of_work
from serving.store.tables import Prediction, iso, utcnow

EPSILON = 1e-4
MODERATE, MAJOR = 0.1, 0.25
MIN_CATEGORY_SHARE = 0.01
DEFAULT_WINDOW_ROWS = 1000
MAX_WINDOW_ROWS = 100_000
MAX_WINDOW_SECONDS = 366 * 86400
STABLE, MODERATE_DRIFT, MAJOR_DRIFT, NO_OBSERVATIONS = "stable", "moderate", "major", "no_data"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def psi(training: Sequence[float], recent: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population stability index of two distributions over the same bins (see the module
    docstring); shares below `epsilon` count as `epsilon`."""
    total = 0.0
    for t, r in zip(training, recent, strict=True):
        t, r = max(t, epsilon), max(r, epsilon)
        total += (r - t) * math.log(r / t)
    return total


def classify(value: float | None) -> str:
    """stable below 0.1, moderate from 0.1 to 0.25, major above; no_data without a PSI."""
    if value is None:
        return NO_OBSERVATIONS
    if value < MODERATE:
        return STABLE
    return MODERATE_DRIFT if value <= MAJOR else MAJOR_DRIFT


@dataclass(frozen=True)
class Bin:
    """One bin: what it holds, and its share of the training rows and of the recent ones."""

    name: str
    type: str  # range, category, other or missing
    training: float
    recent: float | None
    low: float | None = None
    high: float | None = None

    def to_json(self) -> dict[str, Any]:
        """As the drift answer lists it; a range has its bounds (null: unbounded)."""
        out: dict[str, Any] = {"bin": self.name, "type": self.type}
        if self.type == "range":
            out["low"], out["high"] = self.low, self.high
        out["training"], out["recent"] = self.training, self.recent
        return out


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift: its bins, PSI and class, and its missing shares."""

    feature: str
    kind: str
    rows: int
    bins: list[Bin]
    missing_training: float
    missing_recent: float | None
    unseen_recent: float | None = None  # categorical: share of values training never saw
    # Numeric: deciles repeat, so the feature has values many rows share and the training
    # shares of its bins are estimates (see the module docstring).
    approximate: bool = False

    @property
    def psi(self) -> float | None:
        """PSI over the bins; None without recent rows."""
        if not self.rows:
            return None
        return psi([b.training for b in self.bins], [b.recent or 0.0 for b in self.bins])

    def to_json(self) -> dict[str, Any]:
        """As the drift answer shows one feature."""
        value = self.psi
        out: dict[str, Any] = {
            "feature": self.feature,
            "kind": self.kind,
            "psi": value,
            "class": classify(value),
            "missing": {"training": self.missing_training, "recent": self.missing_recent},
        }
        if self.kind == "categorical":
            out["unseen"] = self.unseen_recent
        else:
            out["approximate"] = self.approximate
        out["bins"] = [b.to_json() for b in self.bins]
        return out


class ProfileError(ValueError):
    """A profile entry this module cannot bin; the message says why."""


def _share(entry: Mapping[str, Any], key: str) -> float:
    value = entry.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ProfileError(f"'{key}' is not a share between 0 and 1")
    return float(value)


def numeric_edges(quantiles: Sequence[float]) -> tuple[list[float], list[float]]:
    """Bin edges from training quantiles, and each bin's share of the present training values:
    len(edges) + 1 bins, (-inf, e1], (e1, e2], ..., (ek, +inf)."""
    if len(quantiles) < 2:
        return [], [1.0]
    edges = sorted(set(quantiles[1:-1]))
    shares = [0.0] * (len(edges) + 1)
    step = 1 / (len(quantiles) - 1)
    for upper in quantiles[1:]:
        shares[bisect.bisect_left(edges, upper)] += step
    return edges, shares


def _exact_bins(bins: Any) -> tuple[list[float], list[float]] | None:
    """The profile's own bins (serving/model/profile.py), when it has valid ones: exact training
    shares, where shares from deciles are only estimates."""
    if not isinstance(bins, dict):
        return None
    edges, shares = bins.get("edges"), bins.get("shares")
    numbers = all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
        for x in [*(edges or []), *(shares or [])]
    )
    if (
        not isinstance(edges, list)
        or not isinstance(shares, list)
        or not numbers
        or len(shares) != len(edges) + 1
        or edges != sorted(set(edges))
    ):
        return None
    return [float(e) for e in edges], [float(s) for s in shares]


def _bound(value: float) -> str:
    return f"{value:.6g}"


def numeric_drift(feature: str, entry: Mapping[str, Any], values: Sequence[Any]) -> FeatureDrift:
    """Drift of a numeric feature; None, NaN and anything not a number count as missing."""
    quantiles = entry.get("quantiles")
    if not isinstance(quantiles, list) or not all(
        isinstance(q, int | float) and not isinstance(q, bool) and math.isfinite(q)
        for q in quantiles
    ):
        raise ProfileError("no 'quantiles' list of numbers in the profile")
    if len(quantiles) == 1:
        raise ProfileError("'quantiles' needs at least two values")
    missing = _share(entry, "missing")
    exact = _exact_bins(entry.get("bins"))
    edges, shares = exact or numeric_edges([float(q) for q in quantiles])
    # bool is an int: True and False count as 1 and 0, as pandas profiled them.
    numbers = np.array([float(v) for v in values if isinstance(v, int | float)], np.float64)
    numbers = numbers[~np.isnan(numbers)]
    n = len(values)
    counts = np.bincount(
        np.searchsorted(np.array(edges), numbers, side="left"), minlength=len(edges) + 1
    )
    present = 1.0 - missing
    lows: list[float | None] = [None, *edges]
    highs: list[float | None] = [*edges, None]
    bins = [
        Bin(
            f"{'(-inf' if low is None else '(' + _bound(low)}, "
            f"{'+inf)' if high is None else _bound(high) + ']'}",
            "range",
            share * present,
            int(count) / n if n else None,
            low,
            high,
        )
        for low, high, share, count in zip(lows, highs, shares, counts, strict=True)
    ]
    missing_recent = (n - len(numbers)) / n if n else None
    bins.append(Bin("missing", "missing", missing, missing_recent))
    approximate = exact is None and len(set(quantiles)) < len(quantiles)
    return FeatureDrift(
        feature, "numeric", n, bins, missing, missing_recent, approximate=approximate
    )


def categorical_drift(
    feature: str, entry: Mapping[str, Any], values: Sequence[Any]
) -> FeatureDrift:
    """Drift of a categorical feature; values compare as text, as training profiled them."""
    frequencies = entry.get("frequencies")
    if not isinstance(frequencies, Mapping):
        raise ProfileError("no 'frequencies' object in the profile")
    missing = _share(entry, "missing")
    listed = {str(k): _share(frequencies, k) for k in frequencies}
    kept = [k for k, share in listed.items() if share >= MIN_CATEGORY_SHARE]
    # Whatever the kept categories and missing values leave: rare and never-seen categories.
    other = max(0.0, 1.0 - sum(listed[k] for k in kept) - missing)
    n = len(values)
    counts = dict.fromkeys(kept, 0)
    absent = unseen = pooled = 0
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            absent += 1
            continue
        text = value if isinstance(value, str) else str(value)
        if text in counts:
            counts[text] += 1
        else:
            pooled += 1
            if text not in listed:
                unseen += 1

    def recent(count: int) -> float | None:
        return count / n if n else None

    bins = [Bin(k, "category", listed[k], recent(counts[k])) for k in kept]
    bins.append(Bin("other", "other", other, recent(pooled)))
    bins.append(Bin("missing", "missing", missing, recent(absent)))
    return FeatureDrift(
        feature, "categorical", n, bins, missing, recent(absent), unseen_recent=recent(unseen)
    )


def feature_drift(feature: str, entry: Mapping[str, Any], values: Sequence[Any]) -> FeatureDrift:
    """Drift of one feature from its profile entry (`kind` numeric or categorical)."""
    kind = entry.get("kind")
    if kind == "numeric":
        return numeric_drift(feature, entry, values)
    if kind == "categorical":
        return categorical_drift(feature, entry, values)
    raise ProfileError(f"unknown profile kind {kind!r}")


@dataclass(frozen=True)
class Window:
    """Which recent predictions to compare: the last `rows`, made since `seconds` ago when
    given (still at most `rows` of them)."""

    rows: int
    seconds: int | None = None

    def to_json(self) -> dict[str, Any]:
        """As the answer echoes it."""
        return {"rows": self.rows, "seconds": self.seconds}


_WINDOW_HELP = (
    f"a number of predictions (1 to {MAX_WINDOW_ROWS}) or a duration such as 90s, 30m, 24h or 7d"
)


def parse_window(raw: str | None) -> Window:
    """`?window=`: the last N predictions (default DEFAULT_WINDOW_ROWS), or a duration (the
    predictions of the last 30m, 24h, 7d..., at most MAX_WINDOW_ROWS of them, newest first)."""
    if raw is None or not raw.strip():
        return Window(DEFAULT_WINDOW_ROWS)
    text = raw.strip().lower()
    # Not str.isdigit: it is true of "²", which int() refuses (a 500); and at most 9 digits,
    # since int() refuses more than 4300.
    if re.fullmatch(r"\d{1,9}", text):
        rows = int(text)
        if not 1 <= rows <= MAX_WINDOW_ROWS:
            raise _bad_window(raw, f"expected {_WINDOW_HELP}, got {rows} predictions")
        return Window(rows)
    match = re.fullmatch(r"(\d{1,9})([smhd])", text)
    if not match:
        raise _bad_window(raw, f"expected {_WINDOW_HELP}, got {raw[:40]!r}")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not 1 <= seconds <= MAX_WINDOW_SECONDS:
        raise _bad_window(raw, f"a duration must be from 1s to 366d, got {raw[:40]!r}")
    return Window(MAX_WINDOW_ROWS, seconds)


def _bad_window(raw: str, problem: str) -> BadRequest:
    return BadRequest(f"'window' must be {_WINDOW_HELP}.", [detail("window", problem)])


@dataclass(frozen=True)
class Recent:
    """Observations of the window, newest first, and when the oldest and newest were made."""

    observations: list[dict[str, Any]]
    oldest: Any = None
    newest: Any = None


@unit_of_work(long_running=True)  # a report: may outlast a request's limit
def _latest_rows(endpoint: str, version: str, window: Window) -> list[tuple[str, Any]]:
    query = Prediction.select(Prediction.observation, Prediction.created_at).where(
        (Prediction.endpoint == endpoint) & (Prediction.model_version == version)
    )
    if window.seconds is not None:
        since = utcnow() - dt.timedelta(seconds=window.seconds)
        query = query.where(Prediction.created_at >= since)
    query = query.order_by(Prediction.created_at.desc(), Prediction.id.desc())
    return cast("list[tuple[str, Any]]", list(query.limit(window.rows).tuples()))


def recent_observations(endpoint: str, version: str, window: Window) -> Recent:
    """The observations of one version's latest predictions in the window (this reads the
    database; the index on endpoint, model_version, created_at serves it)."""
    rows = _latest_rows(endpoint, version, window)
    if not rows:
        return Recent([])
    return Recent([json.loads(text) for text, _ in rows], rows[-1][1], rows[0][1])


def drift_report(
    endpoint: str,
    version: str,
    profile: Mapping[str, Any] | None,
    columns: Sequence[str],
    window: Window,
    recent: Recent,
) -> dict[str, Any]:
    """The drift answer: every input column's drift against its profile entry, and a summary.
    Columns without a usable profile entry are listed under `skipped` with the reason."""
    observations = recent.observations
    features: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for column in columns:
        entry = (profile or {}).get(column)
        if not isinstance(entry, Mapping):
            skipped.append({"feature": column, "reason": "no training profile in model.json"})
            continue
        values = [o.get(column) for o in observations]
        try:
            features.append(feature_drift(column, entry, values).to_json())
        except ProfileError as exc:
            skipped.append({"feature": column, "reason": str(exc)})
    return {
        "endpoint": endpoint,
        "version": version,
        "window": window.to_json(),
        "rows": len(observations),
        "oldest": iso(recent.oldest),
        "newest": iso(recent.newest),
        "summary": _summary(endpoint, version, features, len(observations)),
        "thresholds": {"moderate": MODERATE, "major": MAJOR, "epsilon": EPSILON},
        "features": features,
        "skipped": skipped,
    }


def model_drift(model: LoadedModel, window: Window) -> dict[str, Any]:
    """`drift_report` of one loaded version: its inputs over `window` against the profile in
    its model.json."""
    recent = recent_observations(model.endpoint, model.version, window)
    return drift_report(
        model.endpoint,
        model.version,
        model.metadata.get("profile"),
        model.columns,
        window,
        recent,
    )


def _summary(
    endpoint: str, version: str, features: list[dict[str, Any]], rows: int
) -> dict[str, Any]:
    counts = {STABLE: 0, MODERATE_DRIFT: 0, MAJOR_DRIFT: 0}
    if not rows:
        return {
            "class": NO_OBSERVATIONS,
            "message": f"No predictions of {endpoint!r} version {version!r} in this window.",
            "max_psi": None,
            "features": counts,
            "drifted": [],
        }
    for feature in features:
        counts[feature["class"]] += 1
    ranked = sorted(features, key=lambda f: -f["psi"])
    worst = next((c for c in (MAJOR_DRIFT, MODERATE_DRIFT) if counts[c]), STABLE)
    return {
        "class": worst if features else NO_OBSERVATIONS,
        "message": None if features else "No input has a training profile to compare with.",
        "max_psi": ranked[0]["psi"] if ranked else None,
        "features": counts,
        "drifted": [f["feature"] for f in ranked if f["class"] != STABLE],
    }
