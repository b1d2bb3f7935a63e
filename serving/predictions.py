"""Storing predictions and their ground truth: idempotent on (endpoint, observation id)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from serving.batching import MicroBatcher
from serving.database import db, run_with_retry, write_transaction
from serving.errors import Conflict, ObservationNotFound, detail
from serving.payloads import id_key
from serving.tables import Prediction, utcnow


def canonical_json(value: Any) -> str:
    """One spelling per value, so stored observations compare as strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class NewPrediction:
    """A scored observation about to be stored."""

    endpoint: str
    model_version: str
    observation_id: str | int
    observation: dict[str, Any]
    proba: float | None
    label: Any
    probabilities: dict[str, float] | None = None
    value: float | None = None
    ab_test: int | None = None
    arm: str | None = None

    def row(self) -> dict[str, Any]:
        """The columns of its table row."""
        return {
            "endpoint": self.endpoint,
            "model_version": self.model_version,
            "observation_id": id_key(self.observation_id),
            "observation": canonical_json(self.observation),
            "proba": self.proba,
            "prediction": canonical_json(self.label),
            "probabilities": None
            if self.probabilities is None
            else canonical_json(self.probabilities),
            "value": self.value,
            "ab_test": self.ab_test,
            "arm": self.arm,
            "created_at": utcnow(),
        }


def store(batch: Sequence[NewPrediction]) -> list[Prediction | Conflict]:
    """Store a batch in one transaction; answer each item with its committed row or a Conflict.

    Insert-or-ignore first, then read back only the ids that were already there: an id stored
    before (by an earlier request, a concurrent one, or earlier in this batch) replays its
    stored row when the observation is the same and conflicts when it differs. Never
    check-then-insert, which races.
    """
    if not batch:
        return []
    rows = [item.row() for item in batch]
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        unique.setdefault((row["endpoint"], row["observation_id"]), row)

    def work() -> dict[tuple[str, str], Prediction]:
        with write_transaction():
            stored = {
                (e, o): Prediction(id=i, **unique[(e, o)]) for i, e, o in _insert(unique.values())
            }
            stored.update(_fetch([key for key in unique if key not in stored]))
        return stored

    stored = run_with_retry(work)
    return [
        _outcome(item, row, stored[(row["endpoint"], row["observation_id"])])
        for item, row in zip(batch, rows, strict=True)
    ]


_INSERTED = (
    "endpoint",
    "model_version",
    "observation_id",
    "observation",
    "proba",
    "prediction",
    "probabilities",
    "value",
    "ab_test",
    "arm",
    "created_at",
)
# Rows per INSERT statement: well under SQLite's limit of 32,766 bound parameters.
_ROWS_PER_STATEMENT = 500


@functools.lru_cache(maxsize=128)
def _insert_sql(rows: int, param: str) -> str:
    # Written once per batch size: on the hot path, peewee building the same INSERT again
    # for every batch cost more than executing it.
    one = "(" + ", ".join([param] * len(_INSERTED)) + ")"
    columns = ", ".join(f'"{c}"' for c in _INSERTED)
    return (
        f'INSERT INTO "prediction" ({columns}) VALUES {", ".join([one] * rows)} '
        'ON CONFLICT DO NOTHING RETURNING "id", "endpoint", "observation_id"'
    )


def _insert(rows: Iterable[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """Insert-or-ignore; return (id, endpoint, observation_id) of the rows actually inserted."""
    pending = list(rows)
    inserted: list[tuple[int, str, str]] = []
    for start in range(0, len(pending), _ROWS_PER_STATEMENT):
        chunk = pending[start : start + _ROWS_PER_STATEMENT]
        params = [row[column] for row in chunk for column in _INSERTED]
        cursor = db.execute_sql(_insert_sql(len(chunk), db.obj.param), params)
        inserted.extend(cursor.fetchall())
    return inserted


def _fetch(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Prediction]:
    by_endpoint: dict[str, list[str]] = {}
    for endpoint, observation_id in keys:
        by_endpoint.setdefault(endpoint, []).append(observation_id)
    found: dict[tuple[str, str], Prediction] = {}
    for endpoint, ids in by_endpoint.items():
        query = Prediction.select().where(
            (Prediction.endpoint == endpoint) & Prediction.observation_id.in_(ids)
        )
        found.update({(p.endpoint, p.observation_id): p for p in query})
    return found


def _outcome(
    item: NewPrediction, row: dict[str, Any], existing: Prediction
) -> Prediction | Conflict:
    if existing.observation != row["observation"]:
        return Conflict(
            f"Observation id {item.observation_id!r} is already stored with a different "
            "observation; use a new id, or resend the stored observation to replay its answer.",
            [detail("id", "already stored with a different observation")],
        )
    return existing


class Writer:
    """Group commit: concurrent `store` calls in one process share one transaction."""

    def __init__(self, max_batch: int, max_wait: float):
        self._batcher: MicroBatcher[NewPrediction, Prediction | Conflict] = MicroBatcher(
            store, max_batch=max_batch, max_wait=max_wait
        )

    def store(self, batch: Sequence[NewPrediction]) -> list[Prediction | Conflict]:
        """Store these predictions, committed before this returns, maybe with others'."""
        return self._batcher.submit(batch)


def find(endpoint: str, observation_id: str | int) -> Prediction:
    """The stored prediction for an id; ObservationNotFound if there is none."""

    def work() -> Prediction | None:
        return Prediction.get_or_none(
            (Prediction.endpoint == endpoint)
            & (Prediction.observation_id == id_key(observation_id))
        )

    found = run_with_retry(work)
    if found is None:
        raise _not_found(observation_id)
    return found


def record_truth(endpoint: str, observation_id: str | int, true_class: Any) -> Prediction:
    """Set (or overwrite) the true class of a stored prediction and record when."""
    key = id_key(observation_id)

    def work() -> Prediction | None:
        with write_transaction():
            updated = (
                Prediction.update(true_class=canonical_json(true_class), updated_at=utcnow())
                .where((Prediction.endpoint == endpoint) & (Prediction.observation_id == key))
                .execute()
            )
            if not updated:
                return None
            return Prediction.get(
                (Prediction.endpoint == endpoint) & (Prediction.observation_id == key)
            )

    row = run_with_retry(work)
    if row is None:
        raise _not_found(observation_id)
    return row


def _not_found(observation_id: str | int) -> ObservationNotFound:
    return ObservationNotFound(
        f"No prediction is stored with id {observation_id!r}; predict it before updating it.",
        [detail("id", "unknown observation id")],
    )


def to_json(row: Prediction, observation_id: str | int | None = None) -> dict[str, Any]:
    """A stored prediction as the API returns it; the id is echoed as the caller spelled it."""
    answer = {
        "id": row.id,
        "observation_id": row.observation_id if observation_id is None else observation_id,
        "observation": json.loads(row.observation),
        "proba": row.proba,
        "prediction": None if row.prediction is None else json.loads(row.prediction),
        "true_class": None if row.true_class is None else json.loads(row.true_class),
        "endpoint": row.endpoint,
        "model_version": row.model_version,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
    }
    if row.probabilities is not None:
        answer["probabilities"] = json.loads(row.probabilities)
    if row.ab_test is not None:
        answer["ab_test"] = row.ab_test
        answer["arm"] = row.arm
    return answer


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    # SQLite hands back text for timestamps written by another driver; both print alike.
    return value.isoformat() + "Z" if hasattr(value, "isoformat") else f"{value}Z"
