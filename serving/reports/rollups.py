"""Hourly rollups of the prediction log, so that reports read hours instead of rows.

Per endpoint, version and hour (UTC, counted since the Unix epoch) three tables hold what the
reports sum: `rollup_count` (predictions and labelled ones: traffic, the counts of
`/performance`), `rollup_binary` (a binary classifier's labelled rows per probability bucket,
stored truth and stored label, with the sums behind log loss and Brier score: confusion
matrix, calibration, ROC AUC) and `rollup_regression` (the sums behind MAE, RMSE and R²).
Each hour's rows are the same sums `serving.reports.quality` takes over the raw log, so a report
from rollups plus raw rows agrees with a full scan to rounding. An hour of a busy binary
classifier holds up to a few thousand groups (AUC_BUCKETS buckets, two truths, mostly one
label per bucket), so `rollup_binary_daily` sums them again per whole day: a month's report
reads about 30 days of groups, not 720 hours of them.

`fold` keeps them: it rolls up every hour that ended SETTLE_SECONDS ago ("sealed"), and
rolls up again every sealed hour in which a ground truth arrived since it last ran (the
rows' `updated_at`, which `/update` sets). An hour is always rolled up whole (its old rows
deleted, its sums inserted), so folding twice gives the same rows. The service folds every
ROLLUP_SECONDS in each worker, and `flask rollups` does it on demand; every folder takes the
same lock (a PostgreSQL advisory lock, SQLite's write transaction), so workers and replicas
folding at once take turns, and the next finds little left to do. A worker's periodic fold
does not queue for that lock on PostgreSQL: when another fold holds it, it leaves the work
to that one. A prune takes the same turn for each set of rows it drops
(`settle_before_drop`). "Now" is the database's clock, which stamps `updated_at`.

A report (`measure_logged`, `hour_counts`) reads, in one snapshot: the rollups of the sealed
hours in its range, except hours with a ground truth newer than the last fold, and the raw
rows of everything else (the unsealed newest hours, those relabelled hours, the partial
hours at the edges of `since` and `until`). A late label therefore counts at once, and in
the rollups from the next fold on.

What this assumes: a row is committed within SETTLE_SECONDS of the timestamp it carries
(`created_at` from the writing worker's clock, `updated_at` from the database's), clocks
included: a worker's clock behind the database's by more than that writes rows into hours
already sealed. Writes are bounded far below that by DB_STATEMENT_TIMEOUT_MS and the request
deadlines; a row committed later into a sealed hour is missed until `flask rollups
--rebuild`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask

from serving.model.runtime import LoadedModel
from serving.reports import quality
from serving.store import dialect
from serving.store.database import db, is_sqlite, run_with_retry, unit_of_work
from serving.store.predictions import canonical_json

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The schema version that made the rollups' tables.
LAYOUT_VERSION = 8
HOUR = 3600
DAY_HOURS = 24
# An hour is sealed this long after it ends (see the module docstring), and ground truths
# are looked for this far before the last fold.
SETTLE_SECONDS = 300
# Hours sealed per transaction: a first fold of a long log commits as it goes, and on SQLite
# holds the write lock for one chunk at a time.
CHUNK_HOURS = 24
# An arbitrary constant: every process folding this database takes the same advisory lock.
_LOCK_KEY = 7_402_307
_EPOCH = dt.datetime(1970, 1, 1)

_TABLES = ("rollup_count", "rollup_binary", "rollup_regression")


def hour_of(moment: dt.datetime) -> int:
    """The hour (since the Unix epoch, UTC) that holds `moment` (naive UTC)."""
    return int((moment - _EPOCH).total_seconds()) // HOUR


def hour_start(hour: int) -> dt.datetime:
    """When `hour` begins, naive UTC."""
    return _EPOCH + dt.timedelta(hours=hour)


def _text(moment: dt.datetime) -> str:
    # Timestamps go in as text in the stored format, which both databases compare correctly.
    return moment.isoformat(sep=" ")


def _moment(value: Any) -> dt.datetime:
    # SQLite hands back the stored text; PostgreSQL a datetime.
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    return dt.datetime.fromisoformat(str(value))


def _hour_sql() -> str:
    return f"{dialect.whole_seconds('created_at')} / {HOUR}"


@dataclass(frozen=True)
class Folded:
    """What one `fold` did: hours sealed, sealed hours rolled up again for new ground truth,
    and the first hour not sealed yet (None: the log is empty, or `busy`: another fold was
    running and this one did not wait for it)."""

    sealed: int
    relabelled: int
    sealed_hour: int | None
    busy: bool = False

    def describe(self) -> str:
        """One line for the command and the log."""
        if self.busy:
            return "another fold is running: left the rollups to it"
        if self.sealed_hour is None:
            return "nothing to roll up: no prediction is logged yet"
        return (
            f"rolled up {self.sealed} new hour(s) and {self.relabelled} relabelled hour(s); "
            f"rollups cover everything before {_text(hour_start(self.sealed_hour))} UTC"
        )


def _state() -> tuple[int | None, dt.datetime | None]:
    row = dialect.one("SELECT sealed_hour, labels_from FROM rollup_state WHERE id = 1", ())
    if row is None:
        return None, None
    sealed, labels_from = row
    return (
        None if sealed is None else int(sealed),
        None if labels_from is None else _moment(labels_from),
    )


def fold(now: dt.datetime | None = None, *, wait: bool = True) -> Folded:
    """Bring the rollups up to date (see the module docstring): a transaction per
    CHUNK_HOURS hours sealed, until every hour that ended SETTLE_SECONDS before `now`
    (default: the database's clock) is. With `wait` False, a fold that finds another one
    running returns at once (`busy`) instead of queueing behind it: the service's periodic
    folds, whose work the running one does anyway."""
    sealed = relabelled = 0
    while True:
        step = _fold_step(now, wait)
        if step is None:
            return Folded(sealed, relabelled, None, busy=True)
        step_sealed, step_relabelled, sealed_hour, done = step
        sealed += step_sealed
        relabelled += step_relabelled
        if done:
            return Folded(sealed, relabelled, sealed_hour)


@unit_of_work(write=True, long_running=True)
def _fold_step(now: dt.datetime | None, wait: bool) -> tuple[int, int, int | None, bool] | None:
    if wait:
        dialect.take_turns(_LOCK_KEY)
    elif not dialect.try_turn(_LOCK_KEY):
        return None
    # Read after the lock: a fold that waited for another one measures from when it starts;
    # and from the database's clock, which stamps `updated_at` (the ground truths looked
    # for below), whatever this machine's clock says.
    now = now or dialect.database_now()
    settled = now - dt.timedelta(seconds=SETTLE_SECONDS)
    target = hour_of(settled)
    begun, labels_from = _state()
    # The first hour holding a row from where the last fold stopped: the hours before it
    # hold none (a log that starts with one stray old row, a quiet weekend), so they are
    # sealed in one indexed read instead of a transaction per empty day.
    since = _EPOCH if begun is None else hour_start(begun)
    found = dialect.one(
        "SELECT MIN(created_at) FROM prediction WHERE created_at >= ?", (_text(since),)
    )
    next_row = None if found is None or found[0] is None else hour_of(_moment(found[0]))
    if begun is None:
        if next_row is None:
            return 0, 0, None, True  # nothing logged yet: nothing to seal
        begun = min(next_row, target)
    sealed = max(begun, min(target if next_row is None else next_row, target))
    relabelled: list[int] = []
    if labels_from is not None:
        relabelled = sorted(
            int(hour)
            for (hour,) in dialect.rows(
                f"SELECT DISTINCT {_hour_sql()} FROM prediction "
                "WHERE updated_at >= ? AND created_at < ?",
                (_text(labels_from), _text(hour_start(begun))),
            )
        )
    end = max(sealed, min(target, sealed + CHUNK_HOURS))
    for first, last in [*_runs(relabelled), (sealed, end)]:
        if last > first:
            _roll(first, last)
    # Whole days are summed again from their hours once every hour of them is sealed: the
    # days this step completed, and complete days with a relabelled hour.
    days = set(range(begun // DAY_HOURS, end // DAY_HOURS))
    days |= {hour // DAY_HOURS for hour in relabelled if hour // DAY_HOURS < end // DAY_HOURS}
    for first, last in _runs(sorted(days)):
        _roll_days(first, last)
    # Every ground truth not in the rollups now was committed after this fold began, so it
    # carries a time after `settled` (the module docstring's assumption).
    values = (end, _text(settled), _text(now))
    updated = db.execute_sql(
        dialect.sql(
            "UPDATE rollup_state SET sealed_hour = ?, labels_from = ?, folded_at = ? WHERE id = 1"
        ),
        values,
    ).rowcount
    if not updated:
        db.execute_sql(
            dialect.sql(
                "INSERT INTO rollup_state (id, sealed_hour, labels_from, folded_at) "
                "VALUES (1, ?, ?, ?)"
            ),
            values,
        )
    return end - begun, len(relabelled), end, end >= target


def _runs(hours: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted hours as ranges [first, last) of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for hour in hours:
        if runs and runs[-1][1] == hour:
            runs[-1] = (runs[-1][0], hour + 1)
        else:
            runs.append((hour, hour + 1))
    return runs


def _roll(first: int, last: int) -> None:
    """Roll up hours [first, last) whole: their rollup rows replaced by the log's sums."""
    for table in _TABLES:
        db.execute_sql(
            dialect.sql(f"DELETE FROM {table} WHERE hour >= ? AND hour < ?"), (first, last)
        )
    inside = "created_at >= ? AND created_at < ?"
    bounds = (_text(hour_start(first)), _text(hour_start(last)))
    keys = ["endpoint", "model_version", _hour_sql()]
    db.execute_sql(
        dialect.sql(
            "INSERT INTO rollup_count (endpoint, model_version, hour, predictions, labelled) "
            f"SELECT endpoint, model_version, {_hour_sql()}, COUNT(*), COUNT(true_class) "
            f"FROM prediction WHERE {inside} GROUP BY 1, 2, 3"
        ),
        bounds,
    )
    binary, params = quality.binary_sums(keys, inside)
    db.execute_sql(
        dialect.sql(
            "INSERT INTO rollup_binary (endpoint, model_version, hour, bucket, truth, "
            "predicted, rows, proba_sum, log_loss_pos, log_loss_pos_squares, log_loss_neg, "
            "log_loss_neg_squares, brier_pos, brier_pos_squares, brier_neg, "
            f"brier_neg_squares) {binary}"
        ),
        params + bounds,
    )
    regression, params = quality.regression_sums(keys, inside)
    db.execute_sql(
        dialect.sql(
            "INSERT INTO rollup_regression (endpoint, model_version, hour, rows, "
            "abs_error_sum, squared_error_sum, squared_error_squares, big_errors, truth_sum, "
            f"truth_squares, unmeasurable) {regression}"
        ),
        params + bounds,
    )


def _roll_days(first: int, last: int) -> None:
    """Sum days [first, last) of `rollup_binary` into `rollup_binary_daily`."""
    db.execute_sql(
        dialect.sql("DELETE FROM rollup_binary_daily WHERE day >= ? AND day < ?"), (first, last)
    )
    db.execute_sql(
        dialect.sql(
            "INSERT INTO rollup_binary_daily (endpoint, model_version, day, bucket, truth, "
            "predicted, rows, proba_sum, log_loss_pos, log_loss_pos_squares, log_loss_neg, "
            "log_loss_neg_squares, brier_pos, brier_pos_squares, brier_neg, "
            f"brier_neg_squares) SELECT endpoint, model_version, hour / {DAY_HOURS}, bucket, "
            f"truth, predicted, {_BINARY_SUMS} FROM rollup_binary "
            "WHERE hour >= ? AND hour < ? GROUP BY 1, 2, 3, 4, 5, 6"
        ),
        (first * DAY_HOURS, last * DAY_HOURS),
    )


def settle_before_drop(source: str, params: list[Any]) -> None:
    """Inside a prune's transaction, its rows locked against writes and about to be dropped
    (`serving.store.retention.BeforeDrop`): take the folds' turn, so none rolls these hours
    up while their rows go, and roll up again the hours of those rows that got a ground
    truth since the last fold; once the rows are gone no fold could find that label."""
    dialect.take_turns(_LOCK_KEY)
    sealed, labels_from = _state()
    if sealed is None or labels_from is None:
        return
    hours = sorted(
        int(hour)
        for (hour,) in dialect.rows(
            f"SELECT DISTINCT {_hour_sql()} FROM (SELECT created_at, updated_at FROM {source}) "
            "pruned WHERE updated_at >= ? AND created_at < ?",
            (*params, _text(labels_from), _text(hour_start(sealed))),
        )
    )
    for first, last in _runs(hours):
        _roll(first, last)
    days = sorted({hour // DAY_HOURS for hour in hours if hour // DAY_HOURS < sealed // DAY_HOURS})
    for first, last in _runs(days):
        _roll_days(first, last)


@unit_of_work(write=True, long_running=True)
def forget() -> None:
    """Drop every rollup: reports read the whole log until the next fold."""
    dialect.take_turns(_LOCK_KEY)
    for table in (*_TABLES, "rollup_binary_daily", "rollup_state"):
        db.execute_sql(f"DELETE FROM {table}")


def rebuild(now: dt.datetime | None = None) -> Folded:
    """Drop every rollup and fold the whole log again (after rows were written or deleted
    behind the service's back)."""
    forget()
    return fold(now)


def consistent(work: Callable[[], T]) -> T:
    """`work` (reads) as one unit of database work that sees one snapshot: the rollups and
    the raw rows as they were at one moment, whatever a fold commits meanwhile."""
    nested = db.in_transaction()

    def snapshot() -> T:
        if is_sqlite():
            # A deferred transaction: its first read fixes the snapshot (WAL mode).
            with db.atomic():
                return work()
        if not nested:
            dialect.snapshot()
        return work()

    return run_with_retry(snapshot, long_running=True)


@dataclass(frozen=True)
class Plan:
    """Where one version's report reads: rolled-up hour ranges [first, last) (first None:
    from the beginning) and raw `created_at` ranges [since, until) (None: unbounded)."""

    endpoint: str
    version: str
    hours: list[tuple[int | None, int]]
    raw: list[tuple[dt.datetime | None, dt.datetime | None]]

    def hours_sql(self) -> tuple[str, tuple[Any, ...]]:
        """The WHERE of this version's rollup rows in the plan's hours, and its parameters."""
        return self._where("hour", self.hours, lambda hour: hour)

    def days_sql(self) -> tuple[str, tuple[Any, ...], str, tuple[Any, ...]]:
        """The plan's hours as whole days and the hours left over: the WHERE of this
        version's daily rollup rows and its parameters, then the same of its hourly ones."""
        days: list[tuple[int | None, int]] = []
        hours: list[tuple[int | None, int]] = []
        for low, high in self.hours:
            first = None if low is None else -(-low // DAY_HOURS)
            last = high // DAY_HOURS
            if first is not None and first >= last:
                hours.append((low, high))
                continue
            days.append((first, last))
            if low is not None and first is not None and low < first * DAY_HOURS:
                hours.append((low, first * DAY_HOURS))
            if last * DAY_HOURS < high:
                hours.append((last * DAY_HOURS, high))
        by_day = self._where("day", days, lambda day: day)
        by_hour = self._where("hour", hours, lambda hour: hour)
        return (*by_day, *by_hour)

    def raw_sql(self) -> tuple[str, tuple[Any, ...]]:
        """The WHERE of this version's raw rows the plan reads, and its parameters."""
        return self._where("created_at", self.raw, _text)

    def _where(
        self, column: str, ranges: Iterable[tuple[Any, Any]], value: Callable[[Any], Any]
    ) -> tuple[str, tuple[Any, ...]]:
        parts, params = [], [self.endpoint, self.version]
        for low, high in ranges:
            bounds = []
            if low is not None:
                bounds.append(f"{column} >= ?")
                params.append(value(low))
            if high is not None:
                bounds.append(f"{column} < ?")
                params.append(value(high))
            parts.append(f"({' AND '.join(bounds) or '1 = 1'})")
        where = f"endpoint = ? AND model_version = ? AND ({' OR '.join(parts) or '1 = 0'})"
        return where, tuple(params)


def plan(endpoint: str, version: str, since: dt.datetime | None, until: dt.datetime | None) -> Plan:
    """Inside `consistent`: which hours of one version's predictions in [since, until) come
    from the rollups and which rows from the log."""
    everything = Plan(endpoint, version, [], [(since, until)])
    sealed, labels_from = _state()
    if sealed is None:
        return everything
    first: int | None = None
    if since is not None:
        first = hour_of(since) + (hour_start(hour_of(since)) != since)
    last = sealed if until is None else min(sealed, hour_of(until))
    if first is not None and first >= last:
        return everything
    stale_sql = (
        f"SELECT DISTINCT {_hour_sql()} FROM prediction WHERE endpoint = ? AND "
        "model_version = ? AND updated_at >= ? AND created_at < ?"
    )
    params: list[Any] = [endpoint, version, _text(labels_from or _EPOCH), _text(hour_start(last))]
    if first is not None:
        stale_sql += " AND created_at >= ?"
        params.append(_text(hour_start(first)))
    stale = sorted(int(h) for (h,) in dialect.rows(stale_sql, params))
    hours: list[tuple[int | None, int]] = []
    raw: list[tuple[dt.datetime | None, dt.datetime | None]] = []
    if since is not None and first is not None and since < hour_start(first):
        raw.append((since, hour_start(first)))
    low = first
    for hour in stale:
        if low is None or hour > low:
            hours.append((low, hour))
        raw.append((hour_start(hour), hour_start(hour + 1)))
        low = hour + 1
    if low is None or last > low:
        hours.append((low, last))
    raw.append((hour_start(last), until))
    return Plan(endpoint, version, hours, raw)


def _predictions(plan_: Plan) -> int:
    where, params = plan_.hours_sql()
    rolled = dialect.one(f"SELECT SUM(predictions) FROM rollup_count WHERE {where}", params)
    where, params = plan_.raw_sql()
    raw = dialect.one(f"SELECT COUNT(*) FROM prediction WHERE {where}", params)
    return int((rolled or (0,))[0] or 0) + int((raw or (0,))[0] or 0)


_BINARY_SUMS = (
    "SUM(rows), SUM(proba_sum), SUM(log_loss_pos), SUM(log_loss_pos_squares), "
    "SUM(log_loss_neg), SUM(log_loss_neg_squares), SUM(brier_pos), SUM(brier_pos_squares), "
    "SUM(brier_neg), SUM(brier_neg_squares)"
)


def _binary_groups(model: LoadedModel, plan_: Plan) -> list[tuple[Any, ...]]:
    """The groups `quality.binary_measurement` takes (bucketed), from rollups and raw rows."""
    by_day, day_params, by_hour, hour_params = plan_.days_sql()
    found = dialect.rows(
        f"SELECT bucket, truth, predicted, {_BINARY_SUMS} FROM rollup_binary_daily "
        f"WHERE {by_day} GROUP BY 1, 2, 3",
        day_params,
    )
    found += dialect.rows(
        f"SELECT bucket, truth, predicted, {_BINARY_SUMS} FROM rollup_binary "
        f"WHERE {by_hour} GROUP BY 1, 2, 3",
        hour_params,
    )
    where, params = plan_.raw_sql()
    sql, sums_params = quality.binary_sums([], where)
    found += dialect.rows(sql, sums_params + params)
    positive = canonical_json(model.positive_class)
    groups: dict[tuple[int, int, int], list[Any]] = {}
    for bucket, truth, predicted, rows, proba_sum, *sums in found:
        y, hit = int(truth == positive), int(predicted == positive)
        # The log loss and Brier sums of the truth this group has.
        ll, ll2, br, br2 = (sums[0], sums[1], sums[4], sums[5]) if y else sums[2:4] + sums[6:8]
        group = groups.setdefault((int(bucket), y, hit), [0, 0.0, 0.0, 0.0, 0.0, 0.0])
        for i, value in enumerate((int(rows), proba_sum, ll, ll2, br, br2)):
            group[i] += value
    return [(k, y, hit, *sums) for (k, y, hit), sums in groups.items()]


_REGRESSION_SUMS = (
    "SUM(rows), SUM(abs_error_sum), SUM(squared_error_sum), SUM(squared_error_squares), "
    "SUM(big_errors), SUM(truth_sum), SUM(truth_squares), SUM(unmeasurable)"
)


def _regression_sums(plan_: Plan) -> list[Any]:
    """The sums `quality.regression_measurement` takes, from rollups and raw rows (null
    where neither summed a row)."""
    where, params = plan_.hours_sql()
    rolled = dialect.one(f"SELECT {_REGRESSION_SUMS} FROM rollup_regression WHERE {where}", params)
    where, params = plan_.raw_sql()
    sql, sums_params = quality.regression_sums([], where)
    raw = dialect.one(sql, sums_params + params)
    totals: list[Any] = []
    for a, b in zip(rolled or (None,) * 8, raw or (None,) * 8, strict=True):
        totals.append(b if a is None else a if b is None else a + b)
    for i in (0, 4, 7):  # counts: integers (PostgreSQL sums them as numeric)
        totals[i] = int(totals[i] or 0)
    return totals


def measure_logged(
    model: LoadedModel,
    endpoint: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> quality.Measurement:
    """`quality.measure(model, quality.logged(endpoint, model.version, since, until))`, from
    the rollups of the sealed hours plus the raw rows of the rest. Up to EXACT_ROWS
    predictions, and for multi-class models, which need every row's probabilities, the rows
    themselves are read (few, or unavoidable)."""
    if model.task != "regression" and model.positive_class is None:
        return quality.measure(model, quality.logged(endpoint, model.version, since, until))

    def work() -> quality.Measurement:
        plan_ = plan(endpoint, model.version, since, until)
        predictions = _predictions(plan_)
        if model.task == "regression":
            return quality.regression_measurement(_regression_sums(plan_), predictions)
        if predictions <= quality.EXACT_ROWS:
            rows = quality.logged(endpoint, model.version, since, until)
            return quality.measured_rows(model, rows, predictions)
        groups = _binary_groups(model, plan_)
        return quality.binary_measurement(model, groups, predictions, exact=False)

    return quality.finite(consistent(work))


def hour_counts(
    pairs: Sequence[tuple[str, str]], width: int, since: dt.datetime
) -> tuple[list[tuple[str, str, int, int]], dt.datetime]:
    """Inside `consistent`: predictions per bucket of `width` seconds (a whole number of
    hours, buckets aligned on its multiples since the epoch) from `since` (a bucket's start)
    for each (endpoint, version) pair, as far as the rollups reach, and the moment from which
    the raw log must be counted."""
    sealed, _ = _state()
    if sealed is None or width % HOUR or not pairs or hour_of(since) >= sealed:
        return [], since
    matches = " OR ".join("(endpoint = ? AND model_version = ?)" for _ in pairs)
    rows = dialect.rows(
        f"SELECT endpoint, model_version, hour * {HOUR} / ?, SUM(predictions) "
        f"FROM rollup_count WHERE ({matches}) AND hour >= ? AND hour < ? GROUP BY 1, 2, 3",
        (width, *(x for pair in pairs for x in pair), hour_of(since), sealed),
    )
    counted = [(e, v, int(bucket), int(count)) for e, v, bucket, count in rows]
    return counted, hour_start(sealed)


class Folder:
    """Folds in a background thread of this process every ROLLUP_SECONDS."""

    def __init__(self, seconds: float):
        self._seconds = seconds
        self._thread_pid = 0

    def start(self) -> None:
        """Start folding, once per process (call it after a fork); not at all when
        ROLLUP_SECONDS is 0."""
        if self._seconds <= 0 or self._thread_pid == os.getpid():
            return
        self._thread_pid = os.getpid()
        threading.Thread(target=self._run, name="rollups", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self._seconds)
            try:
                folded = fold(wait=False)
            except Exception:  # a database away now is there next time; never end the thread
                logger.warning("rollup fold failed", exc_info=True)
                continue
            if folded.sealed or folded.relabelled:
                logger.info(folded.describe())


def start_folding(app: Flask) -> None:
    """In a serving process (each gunicorn worker, after the fork; `python app.py`): fold
    the rollups every ROLLUP_SECONDS."""
    folder = getattr(app, "extensions", {}).get("rollup_folder")
    if folder is not None:
        folder.start()
