"""Shadow versions: they score every request to their endpoint and never answer.

A shadow's score is stored next to the prediction that answered (table `shadow_score`), so
once ground truth arrives the two can be compared on exactly the same rows. Shadow work
happens after the answer is committed and never changes it: a shadow that cannot score an
observation, or a failed shadow write, is logged and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from serving.errors import ServiceError
from serving.model.batching import MicroBatcher
from serving.model.registry import Registry
from serving.model.runtime import LoadedModel
from serving.model.scoring import Scorer
from serving.reports import quality, statistics
from serving.reports.quality import Measurement, measure, shadowed
from serving.store import dialect
from serving.store.database import unit_of_work
from serving.store.predictions import stored_score
from serving.store.refreshing import Refreshing
from serving.store.tables import Prediction, ShadowScore, ShadowVersion, iso

logger = logging.getLogger(__name__)

SHADOW_BETTER, ANSWERING_BETTER, NOT_YET, NO_LABELLED_DATA = (
    "shadow better",
    "answering better",
    "not yet significant",
    "no labelled data",
)


class Shadows:
    """Which versions shadow which endpoint (cached `refresh_seconds`), their scoring and
    their comparison with the answering versions."""

    def __init__(self, registry: Registry, refresh_seconds: float, max_batch: int, wait: float):
        self._registry = registry
        self._enabled: Refreshing[dict[str, list[str]]] = Refreshing(
            _read_enabled, refresh_seconds, {}
        )
        self._writer: MicroBatcher[dict[str, Any], None] = MicroBatcher(
            _store_scores, max_batch=max_batch, max_wait=wait
        )

    def versions(self, endpoint: str) -> list[str]:
        """The endpoint's shadow versions, at most `refresh_seconds` old."""
        return self._enabled.get().get(endpoint, [])

    def set(
        self, endpoint: str, version: str, enabled: bool, by: str, reason: str | None
    ) -> dict[str, Any]:
        """Turn a version's shadowing on or off, recording who and why."""
        self._registry.version(endpoint, version)
        row = _record_change(endpoint, version, enabled, by, reason)
        self._enabled.forget()
        return _row_json(row)

    def history(self, endpoint: str) -> list[dict[str, Any]]:
        """Every shadow change of an endpoint's versions, oldest first."""
        return _history(endpoint)

    def score(
        self,
        scorer: Scorer,
        endpoint: str,
        observation: dict[str, Any],
        answered: list[Prediction],
    ) -> None:
        """Score stored predictions with every shadow of the endpoint and store the scores.

        `observation` is what the caller sent (each shadow validates it by its own schema);
        `answered` are the stored rows it produced. Never raises.
        """
        try:
            for version in self.versions(endpoint):
                model = self._registry.find(endpoint, version)
                rows = [p for p in answered if p.model_version != version]
                if model is None or not rows:
                    continue
                try:
                    clean, _ = model.schema.validate(
                        observation, reject_surprises=model.rejects_surprises
                    )
                    # A value its pipeline refuses is skipped as one its schema refuses is,
                    # and the next shadow still scores.
                    [score] = scorer.score(model, [clean], log_refusal=False)
                except ServiceError as refused:
                    logger.info(
                        "shadow %s/%s skipped an observation: %s", endpoint, version, refused
                    )
                    continue
                self._writer.submit([_score_row(p.id, model, score) for p in rows])
        except Exception:
            logger.exception("shadow scoring failed for endpoint %s; the answer stands", endpoint)

    def score_many(
        self, endpoint: str, scores: Callable[[LoadedModel], list[dict[str, Any]]]
    ) -> None:
        """Store every shadow's scores of many stored predictions at once (a batch):
        `scores(model)` gives a shadow's `shadow_score` rows. Never raises."""
        try:
            versions = self.versions(endpoint)
        except Exception:
            logger.exception("shadow versions unreadable for %s; the answers stand", endpoint)
            return
        for version in versions:
            try:
                model = self._registry.find(endpoint, version)
                rows = scores(model) if model is not None else []
                if rows:
                    _store_scores(rows)
            except Exception:
                logger.exception(
                    "shadow %s/%s failed to score a batch; the answers stand", endpoint, version
                )

    def compare(self, endpoint: str, version: str) -> dict[str, Any]:
        """The shadow against the versions that answered the same requests, on the rows whose
        ground truth has arrived: both sides' metrics, their deltas, and a paired test."""
        model = self._registry.version(endpoint, version)
        shadow = measure(model, shadowed(endpoint, version, answering=False))
        answering = measure(model, shadowed(endpoint, version, answering=True))
        paired = _paired_test(model, endpoint, version)
        if shadow.labelled == 0:
            outcome = NO_LABELLED_DATA
        elif paired.significant and paired.better is not None:
            outcome = SHADOW_BETTER if paired.better == "B" else ANSWERING_BETTER
        else:
            outcome = NOT_YET
        return {
            "endpoint": endpoint,
            "version": version,
            "enabled": version in self.versions(endpoint),
            "scored": shadow.predictions,
            "labelled": shadow.labelled,
            "answered_by": _answered_by(endpoint, version),
            "shadow": _side(shadow),
            "answering": _side(answering),
            "deltas": _deltas(shadow, answering),
            "verdict": {
                "result": outcome,
                "test": paired.test,
                "statistic": paired.statistic,
                "p_value": paired.p_value,
                "alpha": statistics.ALPHA,
            },
        }


def _side(m: Measurement) -> dict[str, Any]:
    return {"metrics": {name: e.to_json() for name, e in m.estimates.items()}}


def _deltas(shadow: Measurement, answering: Measurement) -> dict[str, float | None]:
    """Shadow minus answering, per metric (for log loss, Brier and errors, lower is better)."""
    mine, theirs = shadow.metrics, answering.metrics
    return {
        name: None if value is None or (other := theirs.get(name)) is None else value - other
        for name, value in mine.items()
    }


# Reports: they may outlast a request's statement_timeout.
@unit_of_work(long_running=True)
def _paired_test(model: LoadedModel, endpoint: str, version: str) -> statistics.TestResult:
    joined = (
        "FROM shadow_score s JOIN prediction p ON p.id = s.prediction_id "
        "WHERE s.endpoint = ? AND s.model_version = ? AND p.true_class IS NOT NULL"
    )
    if model.task == "regression":
        real = dialect.float_type()
        limit = quality.MEASURABLE
        # As quality's sums: a row beyond the measurable range is counted, never subtracted
        # or squared (PostgreSQL raises on overflow, SQLite gives Infinity).
        [(n, total, squares, unmeasurable)] = dialect.rows(
            "SELECT COUNT(*), SUM(d), SUM(d * d), SUM(1 - ok) FROM ("
            "SELECT CASE WHEN ok = 1 THEN ABS(pv - t) - ABS(sv - t) END AS d, ok FROM ("
            f"SELECT pv, sv, t, CASE WHEN ABS(pv) <= {limit!r} AND ABS(sv) <= {limit!r} "
            f"AND ABS(t) <= {limit!r} THEN 1 ELSE 0 END AS ok FROM ("
            f"SELECT p.value AS pv, s.value AS sv, CAST(p.true_class AS {real}) AS t {joined}"
            ") src) checked) paired",
            (endpoint, version),
        )
        if unmeasurable:
            return statistics.TestResult("paired t-test on absolute error", None, None, None)
        return statistics.paired_t(total or 0.0, squares or 0.0, n)
    [(only_answering, only_shadow)] = dialect.rows(
        "SELECT "
        "SUM(CASE WHEN p.prediction = p.true_class AND s.prediction <> p.true_class "
        "THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN p.prediction <> p.true_class AND s.prediction = p.true_class "
        f"THEN 1 ELSE 0 END) {joined}",
        (endpoint, version),
    )
    return statistics.mcnemar(int(only_answering or 0), int(only_shadow or 0))


@unit_of_work(long_running=True)
def _answered_by(endpoint: str, version: str) -> dict[str, int]:
    rows = dialect.rows(
        "SELECT p.model_version, COUNT(*) FROM shadow_score s "
        "JOIN prediction p ON p.id = s.prediction_id "
        "WHERE s.endpoint = ? AND s.model_version = ? GROUP BY p.model_version",
        (endpoint, version),
    )
    return {v: int(n) for v, n in rows}


def _score_row(prediction_id: int, model: LoadedModel, score: Any) -> dict[str, Any]:
    return {
        "prediction_id": prediction_id,
        "endpoint": model.endpoint,
        "model_version": model.version,
        **stored_score(score.proba, score.label, score.probabilities, score.value),
    }


@unit_of_work(write=True)
def _store_scores(rows: list[dict[str, Any]]) -> list[None]:
    # A replayed request scores again; the unique (prediction, version) key keeps one row.
    ShadowScore.insert_many(rows).on_conflict_ignore().execute()
    return [None] * len(rows)


@unit_of_work(write=True)
def _record_change(
    endpoint: str, version: str, enabled: bool, by: str, reason: str | None
) -> ShadowVersion:
    return ShadowVersion.create(
        endpoint=endpoint, version=version, enabled=enabled, changed_by=by, reason=reason
    )


@unit_of_work()
def _history(endpoint: str) -> list[dict[str, Any]]:
    query = (
        ShadowVersion.select().where(ShadowVersion.endpoint == endpoint).order_by(ShadowVersion.id)
    )
    return [_row_json(row) for row in query]


def _read_enabled() -> dict[str, list[str]]:
    latest: dict[tuple[str, str], bool] = {}
    for row in ShadowVersion.select().order_by(ShadowVersion.id):
        latest[(row.endpoint, row.version)] = row.enabled
    enabled: dict[str, list[str]] = {}
    for (endpoint, version), on in sorted(latest.items()):
        if on:
            enabled.setdefault(endpoint, []).append(version)
    return enabled


def _row_json(row: ShadowVersion) -> dict[str, Any]:
    return {
        "endpoint": row.endpoint,
        "version": row.version,
        "enabled": row.enabled,
        "by": row.changed_by,
        "reason": row.reason,
        "at": iso(row.changed_at),
    }
