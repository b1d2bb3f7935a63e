"""Model quality from ground truth, summed by the database.

A million labelled rows must answer in under a second, so nothing here fetches rows for a
binary classifier or a regression: one pass, grouped by probability, truth and prediction,
yields the confusion matrix, calibration bins, ROC AUC and the sums behind log loss and Brier
score. Multi-class models fetch their labelled rows (every class's probability is needed) and
use scikit-learn's own functions.

Which rows are measured is a `Rows`: a SQL source yielding `proba, predicted, truth, value,
probabilities` (labels as canonical JSON text), built by `logged` or `shadowed`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn import metrics as skm

from serving.errors import InvalidInput, detail
from serving.model.runtime import LoadedModel
from serving.reports import statistics
from serving.reports.statistics import Estimate
from serving.store import dialect
from serving.store.database import unit_of_work
from serving.store.predictions import canonical_json
from serving.store.tables import iso

# scikit-learn clips probabilities to [eps, 1 - eps] of float64 before taking logarithms.
_EPS = float(np.finfo(np.float64).eps)
CALIBRATION_BINS = 10
# Up to EXACT_ROWS predictions, ROC AUC ranks every distinct probability exactly. Beyond,
# probabilities are grouped in AUC_BUCKETS equal buckets (a tie within a bucket counts half),
# so one pass over a million rows stays well under a second and an hour of the rollups
# (serving/reports/rollups.py) holds at most a few thousand groups whatever its traffic. The
# error is at most half the share of positive-negative pairs that share a bucket (about 5e-4 for
# spread-out scores), and in practice far less: within a bucket 0.001 wide a positive
# outranks a negative about as often as not, so the halves cancel.
EXACT_ROWS = 200_000
AUC_BUCKETS = 1_000
# Regression sums stay far from float64's 1.8e308 whatever finite values are stored: a row
# whose truth or value exceeds MEASURABLE in magnitude is counted, not summed (its square,
# 4e200 at most, cannot overflow a sum of any realistic row count), and an error above
# FOURTH_POWER_LIMIT drops only the RMSE interval, which needs fourth powers. /update refuses
# such truths, so only rows stored before that check, or absurd predictions, reach these.
MEASURABLE = 1e100
FOURTH_POWER_LIMIT = 1e50
# A model.json `target_range` ({"min", "max"}) accepts truths this many widths beyond it.
TARGET_RANGE_SLACK = 100.0


@dataclass(frozen=True)
class Rows:
    """A SQL source of labelled rows and its parameters; `?` marks a parameter."""

    sql: str
    params: tuple[Any, ...]
    # The same rows, labelled or not (how many predictions there were), with the same params.
    count_sql: str


def logged(
    endpoint: str,
    version: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    ab_test: int | None = None,
    arm: str | None = None,
) -> Rows:
    """Predictions a version answered, optionally in [since, until) or in one A/B arm."""
    where = ["endpoint = ?", "model_version = ?"]
    params: list[Any] = [endpoint, version]
    for clause, value in (
        ("created_at >= ?", since),
        ("created_at < ?", until),
        ("ab_test = ?", ab_test),
        ("arm = ?", arm),
    ):
        if value is not None:
            where.append(clause)
            # Timestamps go in as text in the stored format, which both databases compare
            # correctly against their own column.
            params.append(value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value)
    condition = " AND ".join(where)
    return Rows(
        "SELECT proba, prediction AS predicted, true_class AS truth, value, probabilities "
        f"FROM prediction WHERE {condition} AND true_class IS NOT NULL",
        tuple(params),
        f"SELECT COUNT(*) FROM prediction WHERE {condition}",
    )


def shadowed(endpoint: str, version: str, answering: bool) -> Rows:
    """Rows a shadow version scored: its own scores, or (answering=True) the scores of the
    version that answered those same requests."""
    side = "p" if answering else "s"
    joined = (
        "FROM shadow_score s JOIN prediction p ON p.id = s.prediction_id "
        "WHERE s.endpoint = ? AND s.model_version = ?"
    )
    return Rows(
        f"SELECT {side}.proba, {side}.prediction AS predicted, p.true_class AS truth, "
        f"{side}.value, {side}.probabilities {joined} AND p.true_class IS NOT NULL",
        (endpoint, version),
        f"SELECT COUNT(*) {joined}",
    )


@dataclass
class Measurement:
    """Quality of one set of rows: plain metrics, the same with intervals, and the sums the
    A/B tests compare."""

    task: str
    predictions: int
    labelled: int
    correct: int = 0
    estimates: dict[str, Estimate] = field(default_factory=dict)
    confusion_matrix: dict[str, Any] | None = None
    calibration: list[dict[str, Any]] | None = None
    # Regression: per-row absolute error sums, for Welch's test between arms.
    abs_error_sum: float = 0.0
    abs_error_squares: float = 0.0
    # Regression: labelled rows beyond MEASURABLE, left out of every sum; while there are
    # any, the error metrics are null and the arms cannot be compared.
    unmeasurable: int = 0

    @property
    def metrics(self) -> dict[str, float | None]:
        """Each metric's value (None where undefined, e.g. ROC AUC with one class present)."""
        return {name: estimate.value for name, estimate in self.estimates.items()}

    @property
    def reasons(self) -> dict[str, str]:
        """Why a metric is null, for those that could not be measured."""
        return {name: e.reason for name, e in self.estimates.items() if e.reason is not None}

    def to_json(self) -> dict[str, Any]:
        """As `GET /api/v1/<endpoint>/performance` shows one version."""
        answer: dict[str, Any] = {
            "task": self.task,
            "predictions": self.predictions,
            "labelled": self.labelled,
            "metrics": self.metrics,
            "intervals": {
                name: [e.low, e.high] for name, e in self.estimates.items() if e.low is not None
            },
        }
        if self.confusion_matrix is not None:
            answer["confusion_matrix"] = self.confusion_matrix
        if self.calibration is not None:
            answer["calibration"] = self.calibration
        if self.reasons:
            answer["reasons"] = self.reasons
        return answer


@unit_of_work(long_running=True)  # a report: may outlast a request's limit
def _measured(model: LoadedModel, rows: Rows) -> Measurement:
    return measured_rows(model, rows, _scalar(rows.count_sql, rows.params))


def measure(model: LoadedModel, rows: Rows) -> Measurement:
    """Quality of `rows` as predictions of `model`'s kind (its task and classes)."""
    return finite(_measured(model, rows))


def finite(result: Measurement) -> Measurement:
    """The last guard before JSON, which has no Infinity or NaN: whatever slipped past the
    sums' range checks becomes null with a reason, never a 500 or an invalid answer."""
    result.estimates = {name: e.finite() for name, e in result.estimates.items()}
    return result


def truth_bounds(model: LoadedModel) -> tuple[float, float, str]:
    """The ground truths a regression accepts, [low, high], and a phrase saying so: within
    TARGET_RANGE_SLACK widths of model.json's `target_range` when it has one, and within
    MEASURABLE in any case, so that one absurd value cannot poison every report."""
    low, high, why = -MEASURABLE, MEASURABLE, f"at most {MEASURABLE:g} in magnitude"
    declared = model.metadata.get("target_range")
    if isinstance(declared, dict) and {"min", "max"} <= declared.keys():
        lowest, highest = float(declared["min"]), float(declared["max"])
        width = max(highest - lowest, abs(lowest), abs(highest), 1.0)
        low = max(low, lowest - TARGET_RANGE_SLACK * width)
        high = min(high, highest + TARGET_RANGE_SLACK * width)
        why = (
            f"within {TARGET_RANGE_SLACK:g} widths of the model's target_range "
            f"[{lowest:g}, {highest:g}], i.e. [{low:g}, {high:g}]"
        )
    return low, high, why


def truth_problem(model: LoadedModel, truth: Any) -> InvalidInput | None:
    """Why a regression's ground truth is refused (outside `truth_bounds`), or None."""
    if model.task != "regression" or not isinstance(truth, int | float):
        return None
    low, high, why = truth_bounds(model)
    if low <= truth <= high:
        return None
    return InvalidInput(
        f"'true_class' must be {why}.",
        [detail("true_class", f"expected a number {why}, got {truth!r}")],
    )


def performance_report(
    endpoint: str,
    versions: Sequence[LoadedModel],
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> dict[str, Any]:
    """Per-version quality from ground truth, as `GET /api/v1/<endpoint>/performance` answers:
    from the hourly rollups plus the newest rows (`rollups.measure_logged`), the same figures
    as `measure(model, logged(...))` over the whole log."""
    # Here, not at the top: the rollups are built from this module's sums.
    from serving.reports import rollups

    return {
        "endpoint": endpoint,
        "since": iso(since),
        "until": iso(until),
        "versions": [
            {
                "version": model.version,
                **rollups.measure_logged(model, endpoint, since, until).to_json(),
            }
            for model in versions
        ],
    }


def _binary(model: LoadedModel, rows: Rows, predictions: int) -> Measurement:
    """One pass: rows grouped by probability (or its EXACT_ROWS bucket), truth and prediction,
    with the sums behind every metric; the rest happens on those few groups in Python."""
    positive = canonical_json(model.positive_class)
    real = dialect.float_type()
    exact = predictions <= EXACT_ROWS
    key = "proba" if exact else f"FLOOR(proba * {AUC_BUCKETS})"
    groups = _query(
        f"""
        SELECT {key} AS k, y, hit, COUNT(*), SUM(proba),
               SUM(ll), SUM(ll * ll), SUM(br), SUM(br * br)
        FROM (
            SELECT proba, y, hit,
                   -LN(CASE WHEN q < CAST(? AS {real}) THEN CAST(? AS {real})
                            WHEN q > CAST(? AS {real}) THEN CAST(? AS {real})
                            ELSE q END) AS ll,
                   (proba - y) * (proba - y) AS br
            FROM (
                SELECT proba,
                       CASE WHEN truth = ? THEN 1 ELSE 0 END AS y,
                       CASE WHEN predicted = ? THEN 1 ELSE 0 END AS hit,
                       CASE WHEN truth = ? THEN proba ELSE 1 - proba END AS q
                FROM ({rows.sql}) src
                WHERE proba IS NOT NULL
            ) labelled
        ) scored
        GROUP BY k, y, hit
        """,
        (_EPS, _EPS, 1 - _EPS, 1 - _EPS, positive, positive, positive, *rows.params),
    )
    return binary_measurement(model, groups, predictions, exact)


def binary_measurement(
    model: LoadedModel, groups: Sequence[Sequence[Any]], predictions: int, exact: bool
) -> Measurement:
    """A binary classifier's quality from its groups: (key, y, hit, rows, sum of
    probabilities, sum and sum of squares of log loss, the same of Brier score), where the
    key is the probability itself when `exact`, else its bucket FLOOR(proba * AUC_BUCKETS)."""
    n = sum(g[3] for g in groups)
    result = Measurement(model.task, predictions, n)
    if n == 0:
        result.estimates = {name: statistics.NO_ESTIMATE for name in BINARY_METRICS}
        return result
    cells = {(y, hit): 0 for y in (0, 1) for hit in (0, 1)}
    for _, y, hit, count, *_ in groups:
        cells[(y, hit)] += count
    tp, positives, predicted_positive = (
        cells[(1, 1)],
        cells[(1, 0)] + cells[(1, 1)],
        cells[(0, 1)] + cells[(1, 1)],
    )
    result.correct = cells[(1, 1)] + cells[(0, 0)]
    # Rows and columns in the model's class order; flag 1 is the positive class.
    flags = [int(c == model.positive_class) for c in model.classes]
    result.confusion_matrix = {
        "labels": model.classes,
        "matrix": [[cells[(t, p)] for p in flags] for t in flags],
    }
    f1 = 2 * tp / (predicted_positive + positives) if predicted_positive + positives else None
    auc = _roc_auc(groups, positives, n - positives)
    result.estimates = {
        "accuracy": statistics.proportion(result.correct, n),
        "precision": statistics.proportion(tp, predicted_positive),
        "recall": statistics.proportion(tp, positives),
        "f1": Estimate(f1),
        "roc_auc": statistics.roc_auc(auc, positives, n - positives),
        "log_loss": statistics.mean(
            sum(g[5] for g in groups), sum(g[6] for g in groups), n, bounds=(0.0, None)
        ),
        "brier": statistics.mean(
            sum(g[7] for g in groups), sum(g[8] for g in groups), n, bounds=(0.0, 1.0)
        ),
    }
    per_bin = AUC_BUCKETS // CALIBRATION_BINS
    bins = [
        (
            _bin(float(g[0])) if exact else min(CALIBRATION_BINS - 1, int(g[0]) // per_bin),
            g[3],
            g[4],
            g[3] if g[1] else 0,
        )
        for g in groups
    ]
    result.calibration = _calibration(bins)
    return result


def binary_sums(keys: Sequence[str], where: str) -> tuple[str, tuple[Any, ...]]:
    """SQL summing a binary classifier's labelled rows of `prediction` that match `where`,
    grouped by `keys` (expressions over the table's columns) and then by probability bucket
    (FLOOR(proba * AUC_BUCKETS)), stored truth and stored label: the keys, bucket, truth,
    label, rows, sum of probabilities, then the sum and sum of squares of log loss and of
    Brier score if the truth is the positive class, and the same if it is not. The positive
    class is left to the reader, so the sums suit any binary model (the rollups). Its
    parameters come first, then `where`'s."""
    real = dialect.float_type()
    selected = "".join(f"{key}, " for key in keys)
    groups = ", ".join(str(i) for i in range(1, len(keys) + 4))

    def clipped(q: str) -> str:
        # As scikit-learn and `_binary` clip a probability before its logarithm.
        return (
            f"CASE WHEN {q} < CAST(? AS {real}) THEN CAST(? AS {real}) "
            f"WHEN {q} > CAST(? AS {real}) THEN CAST(? AS {real}) ELSE {q} END"
        )

    sql = f"""
        SELECT {selected}CAST(FLOOR(proba * {AUC_BUCKETS}) AS INTEGER), true_class, prediction,
               COUNT(*), SUM(proba), SUM(llp), SUM(llp * llp), SUM(lln), SUM(lln * lln),
               SUM(brp), SUM(brp * brp), SUM(brn), SUM(brn * brn)
        FROM (
            SELECT endpoint, model_version, created_at, proba, true_class, prediction,
                   -LN({clipped("proba")}) AS llp, -LN({clipped("1 - proba")}) AS lln,
                   (proba - 1) * (proba - 1) AS brp, proba * proba AS brn
            FROM prediction
            WHERE ({where}) AND true_class IS NOT NULL AND proba IS NOT NULL
              AND probabilities IS NULL
        ) scored
        GROUP BY {groups}
        """
    clip = (_EPS, _EPS, 1 - _EPS, 1 - _EPS)
    return sql, clip + clip


def regression_sums(keys: Sequence[str], where: str) -> tuple[str, tuple[Any, ...]]:
    """SQL summing a regression's labelled rows of `prediction` that match `where`, grouped
    by `keys`: the keys, then the sums `regression_measurement` takes, in its order. Its
    parameters come first, then `where`'s."""
    real = dialect.float_type()
    selected = "".join(f"{key}, " for key in keys)
    grouped = f"GROUP BY {', '.join(str(i) for i in range(1, len(keys) + 1))}" if keys else ""
    # The CASEs come before any arithmetic on a row: PostgreSQL raises on an overflowing
    # subtraction or product (SQLite gives Infinity), so an unmeasurable row is never summed.
    sql = f"""
        SELECT {selected}COUNT(*), SUM(ae), SUM(ae * ae),
               SUM(CASE WHEN ae <= ? THEN ae * ae * ae * ae END),
               SUM(CASE WHEN ae > ? THEN 1 ELSE 0 END),
               SUM(t), SUM(t * t), SUM(1 - ok)
        FROM (
            SELECT endpoint, model_version, created_at,
                   CASE WHEN ok = 1 THEN ABS(value - t) END AS ae,
                   CASE WHEN ok = 1 THEN t END AS t, ok
            FROM (
                SELECT endpoint, model_version, created_at, value, t,
                       CASE WHEN ABS(value) <= ? AND ABS(t) <= ? THEN 1 ELSE 0 END AS ok
                FROM (SELECT endpoint, model_version, created_at, value,
                             CAST(true_class AS {real}) AS t
                      FROM prediction
                      WHERE ({where}) AND true_class IS NOT NULL AND value IS NOT NULL
                     ) labelled
            ) checked
        ) errors
        {grouped}
        """
    return sql, (FOURTH_POWER_LIMIT, FOURTH_POWER_LIMIT, MEASURABLE, MEASURABLE)


BINARY_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier")
REGRESSION_METRICS = ("mae", "rmse", "r2")


def _roc_auc(groups: Sequence[Sequence[Any]], positives: int, negatives: int) -> float | None:
    """Mann-Whitney: the chance a positive outranks a negative, ties counting half, walking
    the groups in order of probability."""
    if positives == 0 or negatives == 0:
        return None
    by_key: dict[float, list[int]] = {}
    for k, y, _, count, *_ in groups:
        by_key.setdefault(float(k), [0, 0])[y] += count
    below = 0
    pairs = 0.0
    for k in sorted(by_key):
        neg, pos = by_key[k]
        pairs += pos * (below + 0.5 * neg)
        below += neg
    return pairs / (positives * negatives)


def measured_rows(model: LoadedModel, rows: Rows, predictions: int) -> Measurement:
    """Quality of `rows`, of which there are `predictions` labelled or not, inside a unit of
    database work the caller opened (`measure` opens its own)."""
    if model.task == "regression":
        return _regression(rows, predictions)
    if model.positive_class is not None:
        return _binary(model, rows, predictions)
    return _multiclass(model, rows, predictions)


def _multiclass(model: LoadedModel, rows: Rows, predictions: int) -> Measurement:
    fetched = _query(
        f"SELECT truth, predicted, proba, probabilities FROM ({rows.sql}) src", rows.params
    )
    result = Measurement(model.task, predictions, len(fetched))
    names = [str(c) for c in model.classes]
    if not fetched:
        result.estimates = {name: statistics.NO_ESTIMATE for name in BINARY_METRICS}
        return result
    index = {canonical_json(c): i for i, c in enumerate(model.classes)}
    truth = np.array([index[t] for t, _, _, _ in fetched])
    predicted = np.array([index[p] for _, p, _, _ in fetched])
    probabilities = np.array([[json.loads(pr)[name] for name in names] for *_, pr in fetched])
    result.correct = int((truth == predicted).sum())
    labels = list(range(len(names)))
    losses = -np.log(np.clip(probabilities[np.arange(len(truth)), truth], _EPS, 1 - _EPS))
    onehot = np.eye(len(names))[truth]
    briers = ((probabilities - onehot) ** 2).sum(axis=1)
    present = len(set(truth.tolist())) == len(names)
    auc = (
        float(skm.roc_auc_score(truth, probabilities, multi_class="ovr", labels=labels))
        if present
        else None
    )
    average = {"labels": labels, "average": "macro", "zero_division": 0}
    result.estimates = {
        "accuracy": statistics.proportion(result.correct, len(truth)),
        "precision": Estimate(float(skm.precision_score(truth, predicted, **average))),
        "recall": Estimate(float(skm.recall_score(truth, predicted, **average))),
        "f1": Estimate(float(skm.f1_score(truth, predicted, **average))),
        "roc_auc": Estimate(auc),
        "log_loss": statistics.mean(
            float(losses.sum()), float((losses**2).sum()), len(truth), bounds=(0.0, None)
        ),
        # Summed over the classes: a row's Brier score lies in [0, 2].
        "brier": statistics.mean(
            float(briers.sum()), float((briers**2).sum()), len(truth), bounds=(0.0, 2.0)
        ),
    }
    matrix = skm.confusion_matrix(truth, predicted, labels=labels)
    result.confusion_matrix = {"labels": model.classes, "matrix": matrix.tolist()}
    # Calibration of the top label: its probability against how often it was right.
    result.calibration = _calibration(
        [(_bin(p), 1, p, int(t == q)) for t, q, p, _ in fetched if p is not None]
    )
    return result


def _regression(rows: Rows, predictions: int) -> Measurement:
    real = dialect.float_type()
    # The CASEs come before any arithmetic on a row: PostgreSQL raises on an overflowing
    # subtraction or product (SQLite gives Infinity), so an unmeasurable row is never summed.
    sums = _query(
        f"""
        SELECT COUNT(*), SUM(ae), SUM(ae * ae),
               SUM(CASE WHEN ae <= ? THEN ae * ae * ae * ae END),
               SUM(CASE WHEN ae > ? THEN 1 ELSE 0 END),
               SUM(t), SUM(t * t), SUM(1 - ok)
        FROM (
            SELECT CASE WHEN ok = 1 THEN ABS(value - t) END AS ae,
                   CASE WHEN ok = 1 THEN t END AS t, ok
            FROM (
                SELECT value, t,
                       CASE WHEN ABS(value) <= ? AND ABS(t) <= ? THEN 1 ELSE 0 END AS ok
                FROM (SELECT value, CAST(truth AS {real}) AS t FROM ({rows.sql}) src
                      WHERE value IS NOT NULL) labelled
            ) checked
        ) errors
        """,
        (FOURTH_POWER_LIMIT, FOURTH_POWER_LIMIT, MEASURABLE, MEASURABLE, *rows.params),
    )[0]
    return regression_measurement(sums, predictions)


def regression_measurement(sums: Sequence[Any], predictions: int) -> Measurement:
    """A regression's quality from its sums: labelled rows, sum of absolute errors, of their
    squares and of their fourth powers (those up to FOURTH_POWER_LIMIT), errors beyond it,
    sum of truths and of their squares, unmeasurable rows (nulls where no row was summed)."""
    n, abs_sum, sq_sum, sq_squares, big_errors, t_sum, t_squares, unmeasurable = sums
    result = Measurement("regression", predictions, n)
    if not n:
        result.estimates = {name: statistics.NO_ESTIMATE for name in REGRESSION_METRICS}
        return result
    if unmeasurable:
        result.unmeasurable = int(unmeasurable)
        rows_text = (
            "1 labelled row has" if unmeasurable == 1 else f"{unmeasurable} labelled rows have"
        )
        why = (
            f"{rows_text} a truth or prediction beyond {MEASURABLE:g} in magnitude; "
            "send /update again for them with the real value"
        )
        result.estimates = {name: Estimate(None, reason=why) for name in REGRESSION_METRICS}
        return result
    result.abs_error_sum, result.abs_error_squares = abs_sum, sq_sum
    mse = statistics.mean(sq_sum, sq_squares or 0.0, n, bounds=(0.0, None))
    if big_errors:
        # Fourth powers of these errors would overflow: the RMSE keeps no interval.
        mse = Estimate(mse.value)
    total = t_squares - t_sum * t_sum / n
    result.estimates = {
        "mae": statistics.mean(abs_sum, sq_sum, n, bounds=(0.0, None)),
        "rmse": statistics.NO_ESTIMATE
        if mse.value is None
        else Estimate(
            math.sqrt(mse.value),
            None if mse.low is None else math.sqrt(max(0.0, mse.low)),
            None if mse.high is None else math.sqrt(mse.high),
        ),
        "r2": Estimate(1 - sq_sum / total if total > 0 else None),
    }
    return result


def _bin(probability: float) -> int:
    return min(CALIBRATION_BINS - 1, max(0, math.floor(probability * CALIBRATION_BINS)))


def _calibration(bins: Sequence[tuple[int, int, float, int]]) -> list[dict[str, Any]]:
    """Per fixed-width bin of predicted probability: rows, mean prediction, observed rate,
    from (bin, rows, sum of probabilities, rows that came true) tuples."""
    counts = [0] * CALIBRATION_BINS
    predicted = [0.0] * CALIBRATION_BINS
    observed = [0] * CALIBRATION_BINS
    for b, count, total, hits in bins:
        counts[b] += count
        predicted[b] += total
        observed[b] += hits
    return [
        {
            "lower": b / CALIBRATION_BINS,
            "upper": (b + 1) / CALIBRATION_BINS,
            "count": counts[b],
            "mean_predicted": predicted[b] / counts[b] if counts[b] else None,
            "observed_rate": observed[b] / counts[b] if counts[b] else None,
        }
        for b in range(CALIBRATION_BINS)
    ]


def _query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    return dialect.rows(sql, params)


def _scalar(sql: str, params: Sequence[Any]) -> Any:
    row = dialect.one(sql, params)
    return row[0] if row and row[0] is not None else 0
