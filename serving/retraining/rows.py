"""The labelled rows an endpoint logged: read in time order, checked against the production
version's schema, digested, and split into the rows a candidate is fitted on and the newest
rows, held out for the gate."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import pandas as pd

from serving.errors import ServiceError
from serving.model.runtime import LoadedModel
from serving.store.database import unit_of_work
from serving.store.tables import Prediction, iso


@dataclass(frozen=True)
class LabelledRow:
    """One stored prediction with its ground truth, as the table holds them (JSON text)."""

    id: int
    observation_id: str
    observation: str
    true_class: str
    created_at: dt.datetime


@dataclass
class Usable:
    """The rows a model can learn from: validated observations and their truths, in time
    order, and how many were left out and why."""

    rows: list[LabelledRow] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    truths: list[Any] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.rows)


@unit_of_work(long_running=True)  # every labelled row of a window: may outlast a request's limit
def labelled_rows(
    endpoint: str, since: dt.datetime | None, until: dt.datetime | None
) -> list[LabelledRow]:
    """Every prediction of `endpoint` with a true class, made in [since, until), oldest first
    (ties in time by row id, the order they were stored in)."""
    query = Prediction.select(
        Prediction.id,
        Prediction.observation_id,
        Prediction.observation,
        Prediction.true_class,
        Prediction.created_at,
    ).where((Prediction.endpoint == endpoint) & Prediction.true_class.is_null(False))
    if since is not None:
        query = query.where(Prediction.created_at >= since)
    if until is not None:
        query = query.where(Prediction.created_at < until)
    # peewee-stubs type .tuples() as model rows.
    rows = cast(
        "list[tuple[int, str, str, str, Any]]",
        list(query.order_by(Prediction.created_at, Prediction.id).tuples()),
    )
    return [LabelledRow(i, o, obs, truth, _instant(at)) for i, o, obs, truth, at in rows]


def _instant(value: Any) -> dt.datetime:
    # SQLite hands back text for a timestamp another driver wrote.
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


def usable(model: LoadedModel, rows: list[LabelledRow]) -> Usable:
    """The rows `model` can learn from: the observation must pass its schema (the version
    that answered may have read other inputs) and the truth must be one of its classes (a
    finite number for a regression). The others are counted by reason, never guessed at."""
    out = Usable()
    for row in rows:
        try:
            clean, _ = model.schema.validate(json.loads(row.observation), reject_surprises=False)
        except ServiceError:
            out.left_out["observation the production version refuses"] += 1
            continue
        truth = model.truth(json.loads(row.true_class))
        if truth is None or (isinstance(truth, float) and not math.isfinite(truth)):
            out.left_out["true class the production version does not know"] += 1
            continue
        out.rows.append(row)
        out.observations.append(clean)
        out.truths.append(truth)
    return out


def frame(model: LoadedModel, observations: list[dict[str, Any]]) -> pd.DataFrame:
    """Validated observations as the DataFrame the production pipeline was fitted on."""
    return model.columns_frame({name: [o[name] for o in observations] for name in model.columns})


def digest(rows: list[LabelledRow]) -> str:
    """sha256 of the rows as stored (id, observation, truth), in order: the same window with
    the same ground truth gives the same digest, whatever the database."""
    hasher = hashlib.sha256()
    for row in rows:
        hasher.update(f"{row.observation_id}\t{row.observation}\t{row.true_class}\n".encode())
    return hasher.hexdigest()


def holdout_size(total: int, fraction: float | None, count: int | None) -> int:
    """How many of `total` rows are held out: `count`, else `fraction` of them rounded up."""
    if count is not None:
        return count
    return math.ceil(total * (0.2 if fraction is None else fraction))


def window(rows: list[LabelledRow]) -> dict[str, Any]:
    """How many rows and the times of the first and last, as lineage records them."""
    return {
        "rows": len(rows),
        "first": iso(rows[0].created_at) if rows else None,
        "last": iso(rows[-1].created_at) if rows else None,
    }
