"""Storing predictions and their ground truth: idempotent on (endpoint, observation id).

The key (endpoint, observation id) is unique in `prediction_key`, not in `prediction` (which
PostgreSQL partitions by time, where no unique index can leave the time out): a row is
written only when its key was new, and found again through its key's id and time.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

import peewee

from serving.errors import Conflict, ObservationNotFound, Unavailable, detail
from serving.model.batching import MicroBatcher
from serving.protocol.payloads import id_key
from serving.store import dialect
from serving.store.database import (
    db,
    is_sqlite,
    release_connection,
    unit_of_work,
)
from serving.store.tables import Prediction, PredictionKey, iso, utcnow


def canonical_json(value: Any) -> str:
    """One spelling per value, so stored observations compare as strings."""
    return _canonical(value)


# json.dumps with these options, built once: json.dumps builds a new encoder for every call
# that passes any option.
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False).encode


# How `canonical_json` spells the plain values a validated observation holds (json.dumps uses
# float.__repr__, int.__repr__ and, with ensure_ascii, this encoder for strings).
_PLAIN_JSON = {
    float: float.__repr__,
    int: int.__repr__,
    str: encode_basestring_ascii,
    bool: lambda value: "true" if value else "false",
    type(None): lambda _value: "null",
}


_SCALARS = {float, int, bool, type(None)}


def canonical_json_each(values: Sequence[Any]) -> list[str]:
    """`canonical_json` of each value: the same text, faster for plain values."""
    if values and set(map(type, values)) <= _SCALARS:
        # Numbers, booleans and nulls never contain a comma: encode the list, split it.
        return canonical_json(list(values))[1:-1].split(",")
    try:
        out = [_PLAIN_JSON[type(v)](v) for v in values]
    except KeyError:
        return [canonical_json(v) for v in values]
    if "nan" in out or "inf" in out or "-inf" in out:
        raise ValueError("Out of range float values are not JSON compliant")
    return out


def canonical_json_rows(columns: Mapping[str, Sequence[Any]], rows: int) -> list[str]:
    """`canonical_json` of `rows` objects that share their keys, given key by key."""
    names = sorted(columns)
    if not names:
        return ["{}"] * rows
    template = (
        "{"
        + ",".join(encode_basestring_ascii(name).replace("%", "%%") + ":%s" for name in names)
        + "}"
    )
    fragments = [canonical_json_each(columns[name]) for name in names]
    return [template % row for row in zip(*fragments, strict=True)]


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

    @classmethod
    def scored(
        cls,
        endpoint: str,
        route: Any,
        observation_id: str | int,
        observation: dict[str, Any],
        score: Any,
    ) -> NewPrediction:
        """What `route` (a `routing.Route`: its model, A/B test and arm) said of one validated
        observation, `score` a `runtime.Score`, ready to store."""
        return cls(
            endpoint=endpoint,
            model_version=route.model.version,
            observation_id=observation_id,
            observation=observation,
            proba=score.proba,
            label=score.label,
            probabilities=score.probabilities,
            value=score.value,
            ab_test=route.ab_test,
            arm=route.arm,
        )

    def row(self) -> dict[str, Any]:
        """The columns of its table row."""
        return {
            "endpoint": self.endpoint,
            "model_version": self.model_version,
            "observation_id": id_key(self.observation_id),
            "observation": canonical_json(self.observation),
            **stored_score(self.proba, self.label, self.probabilities, self.value),
            "ab_test": self.ab_test,
            "arm": self.arm,
            "created_at": utcnow(),
        }


def stored_score(
    proba: float | None, label: Any, probabilities: dict[str, float] | None, value: float | None
) -> dict[str, Any]:
    """One score as the `prediction` and `shadow_score` tables store it: the label and the
    probabilities as canonical JSON. The one spelling of a score as row columns (the column
    path, `batch.core`, spells the same text a column at a time)."""
    return {
        "proba": proba,
        "prediction": canonical_json(label),
        "probabilities": None if probabilities is None else canonical_json(probabilities),
        "value": value,
    }


@dataclass(frozen=True)
class NewPredictions:
    """Many scored observations about to be stored, column by column: what `save` takes.

    Each field holds one value per row, as the table stores it: ids as `id_key` spells them,
    observations, labels and probabilities as canonical JSON text.
    """

    endpoint: Sequence[str]
    model_version: Sequence[str]
    observation_id: Sequence[str]
    observation: Sequence[str]
    proba: Sequence[float | None]
    prediction: Sequence[str | None]
    probabilities: Sequence[str | None]
    value: Sequence[float | None]
    ab_test: Sequence[int | None]
    arm: Sequence[str | None]
    created_at: Sequence[dt.datetime]

    def __len__(self) -> int:
        return len(self.observation_id)

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, Any]]) -> NewPredictions:
        """Rows as `NewPrediction.row` makes them, turned into columns."""
        return cls(**{column: [row[column] for row in rows] for column in _INSERTED})

    def rows(self, positions: Sequence[int]) -> list[tuple[Any, ...]]:
        """The rows at `positions`, each a tuple of its columns in INSERT order."""
        columns = [getattr(self, column) for column in _INSERTED]
        return [tuple(column[i] for column in columns) for i in positions]


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
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        first.setdefault((row["endpoint"], row["observation_id"]), row)
    answers: list[Prediction | Conflict] = []
    for item, row, outcome in zip(batch, rows, save(NewPredictions.of(rows)), strict=True):
        if outcome is None:
            answers.append(conflict(item.observation_id))
        elif isinstance(outcome, Prediction):
            answers.append(outcome)
        else:
            answers.append(
                Prediction(id=outcome, **first[(row["endpoint"], row["observation_id"])])
            )
    return answers


def save(batch: NewPredictions) -> list[int | Prediction | None]:
    """Store many predictions in one transaction, the bulk form of `store`. Each row is
    answered with the id this call stored it under, the row stored before with the same
    observation (a replay), or None when its id is stored with a different observation (a
    conflict).

    The first row of each (endpoint, observation id) is the one written; a later row with the
    same key replays it when its observation is the same and conflicts when it differs.
    """
    if not len(batch):
        return []
    keys = list(zip(batch.endpoint, batch.observation_id, strict=True))
    # Walking backwards leaves each key with its first position.
    first = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1), strict=True))
    inserted, earlier = _write_new(batch, first)
    observations = batch.observation
    outcomes: list[int | Prediction | None] = []
    for i, key in enumerate(keys):
        new_id = inserted.get(key)
        if new_id is not None:
            same = first[key] == i or observations[first[key]] == observations[i]
            outcomes.append(new_id if same else None)
        else:
            existing = earlier[key]
            outcomes.append(existing if existing.observation == observations[i] else None)
    return outcomes


# A large batch may legitimately outlast a request's statement_timeout.
@unit_of_work(write=True, long_running=lambda batch, _first: len(batch) > _ROWS_PER_STATEMENT)
def _write_new(
    batch: NewPredictions, first: dict[tuple[str, str], int]
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], Prediction]]:
    """Insert-or-ignore the first row of each key, then read the rows stored before under
    the keys that were not inserted."""
    inserted = _insert_new(batch, sorted(first.values()))
    earlier = _fetch([key for key in first if key not in inserted])
    orphans = [key for key in first if key not in inserted and key not in earlier]
    if orphans:
        # A key whose row is gone (deleted by hand, or pruned between the two statements
        # above): its id is free again, so the row is stored anew rather than failing.
        _forget_orphan_keys(orphans)
        inserted.update(_insert_new(batch, sorted(first[key] for key in orphans)))
        earlier.update(_fetch([key for key in orphans if key not in inserted]))
    return inserted, earlier


def _forget_orphan_keys(keys: Sequence[tuple[str, str]]) -> None:
    param = dialect.param()
    # The id alone finds the row on SQLite (its primary key; times there are text, which
    # another writer may have spelt otherwise); PostgreSQL also needs the time to look in
    # one partition only.
    same_time = "" if is_sqlite() else ' AND p."created_at" = "prediction_key"."created_at"'
    for endpoint, observation_id in keys:
        db.execute_sql(
            'DELETE FROM "prediction_key" WHERE "endpoint" = '
            f'{param} AND "observation_id" = {param} AND NOT EXISTS (SELECT 1 FROM '
            f'"prediction" p WHERE p."id" = "prediction_key"."id"{same_time})',
            (endpoint, observation_id),
        )


def conflict(observation_id: str | int) -> Conflict:
    """The error of an id stored with a different observation."""
    return Conflict(
        f"Observation id {observation_id!r} is already stored with a different "
        "observation; use a new id, or resend the stored observation to replay its answer.",
        [detail("id", "already stored with a different observation")],
    )


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
    # for every batch cost more than executing it. The ids come from the keys just won.
    one = "(" + ", ".join([param] * (len(_INSERTED) + 1)) + ")"
    columns = ", ".join(f'"{c}"' for c in ("id", *_INSERTED))
    return f'INSERT INTO "prediction" ({columns}) VALUES {", ".join([one] * rows)}'


# The key's columns: what makes an id unique, and where its row is (id and time).
_KEY = ("endpoint", "observation_id", "created_at")
_KEY_AT = tuple(_INSERTED.index(c) for c in _KEY)


@functools.lru_cache(maxsize=128)
def _key_sql(rows: int, param: str) -> str:
    one = "(" + ", ".join([param] * len(_KEY)) + ")"
    columns = ", ".join(f'"{c}"' for c in _KEY)
    return (
        f'INSERT INTO "prediction_key" ({columns}) VALUES {", ".join([one] * rows)} '
        'ON CONFLICT DO NOTHING RETURNING "id", "endpoint", "observation_id"'
    )


# From this many new rows on, PostgreSQL gets them through COPY, several times faster than
# INSERT ... VALUES; fewer are not worth the extra round trip.
_COPY_MIN_ROWS = 1000
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_NULL = "\\N"


def _insert_new(batch: NewPredictions, positions: list[int]) -> dict[tuple[str, str], int]:
    """Insert-or-ignore the rows at `positions`; return the ids of the rows inserted."""
    if len(positions) >= _COPY_MIN_ROWS and dialect.has_copy():
        for attempt in (1, 2):
            try:
                # A savepoint: an id stored already undoes only this attempt.
                with db.atomic():
                    return _copy(batch, positions)
            except peewee.IntegrityError:
                if attempt == 2:
                    break
                # Leave out the ids stored already (a resumed or repeated file) and try once
                # more; a writer racing us is left to the insert-or-ignore below.
                stored = set(_stored(batch, positions))
                keys = list(zip(batch.endpoint, batch.observation_id, strict=True))
                positions = [i for i in positions if keys[i] not in stored]
                if not positions:
                    return {}
    return {(e, o): i for i, e, o in _insert(batch.rows(positions))}


def _stored(batch: NewPredictions, positions: list[int]) -> list[tuple[str, str]]:
    """Which of these rows' keys are stored already (PostgreSQL)."""
    by_endpoint: dict[str, list[str]] = {}
    for i in positions:
        by_endpoint.setdefault(batch.endpoint[i], []).append(batch.observation_id[i])
    found: list[tuple[str, str]] = []
    for endpoint, ids in by_endpoint.items():
        cursor = db.execute_sql(
            'SELECT "endpoint", "observation_id" FROM "prediction_key" '
            'WHERE "endpoint" = %s AND "observation_id" = ANY(%s)',
            (endpoint, ids),
        )
        found.extend(cursor.fetchall())
    return found


def _copy(batch: NewPredictions, positions: list[int]) -> dict[tuple[str, str], int]:
    """COPY new rows into the table (PostgreSQL); IntegrityError if any id is stored already.

    COPY answers nothing, so the ids are taken from the sequence first and written with the
    rows.
    """
    whole = len(positions) == len(batch)
    picked = {
        c: list(getattr(batch, c)) if whole else [getattr(batch, c)[i] for i in positions]
        for c in _INSERTED
    }
    with peewee.__exception_wrapper__:  # type: ignore[attr-defined]  # not in peewee-stubs
        cursor = db.cursor()
        cursor.execute(
            # The sequence's name is looked up once (a subquery), not once per row.
            "SELECT nextval((SELECT pg_get_serial_sequence('prediction_key', 'id'))) "
            "FROM generate_series(1, %s)",
            (len(positions),),
        )
        ids = [row[0] for row in cursor.fetchall()]
        _copy_keys(cursor, ids, picked)
        columns = [list(map(str, ids))] + [_copy_text(c, picked[c]) for c in _INSERTED]
        text = "".join(map("\t".join, zip(*columns, strict=True)))
        names = ", ".join(f'"{c}"' for c in ("id", *_INSERTED))
        cursor.copy_expert(
            f'COPY "prediction" ({names}) FROM STDIN', io.StringIO(text), size=1 << 20
        )
    keys = zip(picked["endpoint"], picked["observation_id"], strict=True)
    return dict(zip(keys, ids, strict=True))


def _copy_keys(cursor: Any, ids: list[int], picked: dict[str, list[Any]]) -> None:
    """COPY the rows' keys first: an id stored already fails here, before any row is sent."""
    # created_at is the last inserted column too: its text ends the line.
    columns = [list(map(str, ids))] + [_copy_text(c, picked[c]) for c in _KEY]
    text = "".join(map("\t".join, zip(*columns, strict=True)))
    cursor.copy_expert(
        'COPY "prediction_key" ("id", "endpoint", "observation_id", "created_at") FROM STDIN',
        io.StringIO(text),
        size=1 << 20,
    )


def _copy_text(column: str, values: list[Any]) -> list[str]:
    """A column's values as COPY's text format spells them; the last column ends the line."""
    null = _COPY_NULL
    if column in ("proba", "value"):
        out = [null if v is None else repr(float(v)) for v in values]
    elif column == "ab_test":
        out = [null if v is None else str(int(v)) for v in values]
    elif column == "created_at":
        spelled = {v: v.isoformat() for v in set(values)}
        out = [spelled[v] for v in values]
    else:
        out = [null if v is None else v for v in values]
        # One scan of the whole column instead of one translate per value: escapes are rare.
        text = "".join(out)
        if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
            escapes = _COPY_ESCAPES
            out = [null if v is None else v.translate(escapes) for v in values]
    if column == _INSERTED[-1]:
        out = [v + "\n" for v in out]
    return out


def _insert(rows: Iterable[tuple[Any, ...]]) -> list[tuple[int, str, str]]:
    """Insert-or-ignore; return (id, endpoint, observation_id) of the rows actually inserted.

    The keys go first (insert-or-ignore on the one unique index); only the rows whose key
    was new are written, under the id their key got. Rows hold distinct keys."""
    pending = list(rows)
    inserted: list[tuple[int, str, str]] = []
    param = dialect.param()
    for start in range(0, len(pending), _ROWS_PER_STATEMENT):
        chunk = pending[start : start + _ROWS_PER_STATEMENT]
        keys = [row[i] for row in chunk for i in _KEY_AT]
        won = db.execute_sql(_key_sql(len(chunk), param), keys).fetchall()
        if not won:
            continue
        ids = {(e, o): i for i, e, o in won}
        e, o = _KEY_AT[0], _KEY_AT[1]
        new = [(ids[(row[e], row[o])], *row) for row in chunk if (row[e], row[o]) in ids]
        db.execute_sql(_insert_sql(len(new), param), [value for row in new for value in row])
        inserted.extend(won)
    return inserted


def _fetch(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Prediction]:
    by_endpoint: dict[str, list[str]] = {}
    for endpoint, observation_id in keys:
        by_endpoint.setdefault(endpoint, []).append(observation_id)
    found: dict[tuple[str, str], Prediction] = {}
    for endpoint, ids in by_endpoint.items():
        if len(ids) > _ROWS_PER_STATEMENT and dialect.has_copy():
            found.update(_fetch_many(endpoint, ids))
            continue
        for start in range(0, len(ids), _ROWS_PER_STATEMENT):
            query = _keyed().where(
                (PredictionKey.endpoint == endpoint)
                & PredictionKey.observation_id.in_(ids[start : start + _ROWS_PER_STATEMENT])
            )
            found.update({(p.endpoint, p.observation_id): p for p in query})
    return found


def _keyed() -> peewee.ModelSelect[Prediction]:
    """Stored rows found through their keys: the key's id and time name one row, and on
    PostgreSQL the time names its partition, so no other partition is searched."""
    same = (PredictionKey.id == Prediction.id) & (PredictionKey.created_at == Prediction.created_at)
    return Prediction.select().join(PredictionKey, on=same)


def _fetch_many(endpoint: str, ids: list[str]) -> dict[tuple[str, str], Prediction]:
    """Many stored rows of one endpoint in one query (PostgreSQL): an array parameter is
    planned once, where IN lists of 500 cost a planning each."""
    names = [f.column_name for f in Prediction._meta.sorted_fields]
    columns = ", ".join(f'p."{name}"' for name in names)
    cursor = db.execute_sql(
        f'SELECT {columns} FROM "prediction_key" k JOIN "prediction" p '
        'ON p."id" = k."id" AND p."created_at" = k."created_at" '
        'WHERE k."endpoint" = %s AND k."observation_id" = ANY(%s)',
        (endpoint, ids),
    )
    rows = [Prediction(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]
    return {(p.endpoint, p.observation_id): p for p in rows}


class Writer:
    """Group commit: concurrent `store` calls in one process share one transaction."""

    def __init__(self, max_batch: int, max_wait: float):
        # A failed group is retried member by member, so one request's bad row fails only
        # that request; an unreachable database fails them all at once, without retries.
        self._batcher: MicroBatcher[NewPrediction, Prediction | Conflict] = MicroBatcher(
            store, max_batch=max_batch, max_wait=max_wait, shared_errors=(Unavailable,)
        )

    def store(self, batch: Sequence[NewPrediction]) -> list[Prediction | Conflict]:
        """Store these predictions, committed before this returns, maybe with others'."""
        # Never queue holding a connection: the leader writing for us may need it (issue 14).
        release_connection()
        return self._batcher.submit(batch)


def find(endpoint: str, observation_id: str | int) -> Prediction:
    """The stored prediction for an id; ObservationNotFound if there is none."""
    found = _stored_row(endpoint, id_key(observation_id))
    if found is None:
        raise _not_found(observation_id)
    return found


def record_truth(endpoint: str, observation_id: str | int, true_class: Any) -> Prediction:
    """Set (or overwrite) the true class of a stored prediction and record when."""
    row = _set_truth(endpoint, id_key(observation_id), canonical_json(true_class))
    if row is None:
        raise _not_found(observation_id)
    return row


@unit_of_work()
def _stored_row(endpoint: str, key: str) -> Prediction | None:
    return (
        _keyed()
        .where((PredictionKey.endpoint == endpoint) & (PredictionKey.observation_id == key))
        .first()
    )


@unit_of_work(write=True)
def _set_truth(endpoint: str, key: str, truth_json: str) -> Prediction | None:
    stored = (
        PredictionKey.select(PredictionKey.id, PredictionKey.created_at)
        .where((PredictionKey.endpoint == endpoint) & (PredictionKey.observation_id == key))
        .tuples()
        .first()
    )
    if stored is None:
        return None
    # Id and time as values: PostgreSQL then plans the UPDATE for one partition only.
    row = (Prediction.id == stored[0]) & (Prediction.created_at == stored[1])
    updated = (
        Prediction.update(true_class=truth_json, updated_at=dialect.now_after_row_lock())
        .where(row)
        .execute()
    )
    if not updated:
        return None
    return Prediction.get(row)


def _not_found(observation_id: str | int) -> ObservationNotFound:
    return ObservationNotFound(
        f"No prediction is stored with id {observation_id!r}; predict it before updating it.",
        [detail("id", "unknown observation id")],
    )


def to_json(row: Prediction, observation_id: str | int | None = None) -> dict[str, Any]:
    """A stored prediction as the API returns it; the id is echoed as the caller spelled it."""
    return answer(
        id=row.id,
        observation_id=row.observation_id if observation_id is None else observation_id,
        observation=json.loads(row.observation),
        proba=row.proba,
        prediction=None if row.prediction is None else json.loads(row.prediction),
        true_class=None if row.true_class is None else json.loads(row.true_class),
        endpoint=row.endpoint,
        model_version=row.model_version,
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
        probabilities=None if row.probabilities is None else json.loads(row.probabilities),
        ab_test=row.ab_test,
        arm=row.arm,
    )


def answer(
    *,
    id: int | None,
    observation_id: str | int,
    observation: dict[str, Any],
    proba: float | None,
    prediction: Any,
    true_class: Any,
    endpoint: str,
    model_version: str,
    created_at: str | None,
    updated_at: str | None,
    probabilities: dict[str, float] | None,
    ab_test: int | None,
    arm: str | None,
) -> dict[str, Any]:
    """The API's JSON for one prediction, from its decoded values: the one shape single and
    batch answers share."""
    out = {
        "id": id,
        "observation_id": observation_id,
        "observation": observation,
        "proba": proba,
        "prediction": prediction,
        "true_class": true_class,
        "endpoint": endpoint,
        "model_version": model_version,
        "created_at": created_at,
        "updated_at": updated_at,
    }
    if probabilities is not None:
        out["probabilities"] = probabilities
    if ab_test is not None:
        out["ab_test"] = ab_test
        out["arm"] = arm
    return out
