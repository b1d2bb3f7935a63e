"""The column path of the data plane: route many rows, check them, score each model's rows in
one call, build the rows to store, and after `save_apart` answer every row.

Knows nothing of HTTP or files, and runs no sequence of its own: `serving.dataplane` calls
`route`, `prepare`, `save_apart` (or nothing, with --no-log), `Results.record`, `count` and
`shadow_scores`, in that order, for /predict/batch and `flask score` alike.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import peewee

from serving import metrics
from serving.batch.rows import Rows
from serving.decisions import routing
from serving.decisions.experiments import Experiments
from serving.decisions.lifecycle import Lifecycle
from serving.errors import InvalidInput, ServiceError, detail
from serving.model.registry import Registry
from serving.model.runtime import LoadedModel, about_missing, missing
from serving.store.predictions import (
    NewPredictions,
    canonical_json_each,
    canonical_json_rows,
    conflict,
    save,
)
from serving.store.tables import Prediction, iso, utcnow

OK = 200

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Group:
    """The rows one route answers: a model version, and the A/B test and arm that chose it."""

    route: routing.Route
    positions: list[int]


def route(
    registry: Registry,
    lifecycle: Lifecycle,
    experiments: Experiments,
    endpoint: str,
    rows: Rows,
    version: str | None = None,
    status: str | None = None,
) -> list[Group]:
    """Which version answers which rows, by `routing.choose`, as /predict picks for one.

    While an A/B test splits the endpoint's traffic each id is routed on its own (its arm
    depends on it); otherwise the choice does not depend on the id, so it is made once for
    the whole batch. Rows that cannot be scored (a bad id) go nowhere.
    """
    keyed = [
        (i, key) for i, key in enumerate(rows.keys) if key is not None and i not in rows.errors
    ]
    positions = [i for i, _ in keyed]
    # An empty ?version= or ?status= is the same as none, as `routing.choose` reads it.
    if not version and not status and experiments.running(endpoint) is not None:
        groups: dict[tuple[str, int | None, str | None], Group] = {}
        for i, observation_id in keyed:
            chosen = routing.choose(registry, lifecycle, experiments, endpoint, observation_id)
            key = (chosen.model.version, chosen.ab_test, chosen.arm)
            groups.setdefault(key, Group(chosen, [])).positions.append(i)
        return list(groups.values())
    first = keyed[0][1] if keyed else ""
    # Resolved even when no row is valid, so an unknown version is still a 404.
    chosen = routing.choose(
        registry, lifecycle, experiments, endpoint, first, version=version, status=status
    )
    return [Group(chosen, positions)] if positions else []


@dataclass
class Results:
    """Every row's answer, column by column, in input order.

    `prepare` fills in what the models said; `record` adds what storing the rows did (an id,
    a replay of an earlier row, or a conflict).
    """

    endpoint: str
    ids: list[Any]
    errors: dict[int, ServiceError]
    warnings: list[list[dict[str, str]]]
    batch_warnings: list[dict[str, str]] = field(default_factory=list)
    # What answered each scored row and what it said; None elsewhere.
    versions: list[str | None] = field(default_factory=list)
    proba: list[float | None] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    probabilities: list[dict[str, float] | None] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    ab_test: list[int | None] = field(default_factory=list)
    arm: list[str | None] = field(default_factory=list)
    # The stored spelling of each scored row's observation, label and probabilities.
    observations: list[str | None] = field(default_factory=list)
    labels_json: list[str | None] = field(default_factory=list)
    probabilities_json: list[str | None] = field(default_factory=list)
    # The scored rows in input order, the columns to store for them, and when.
    positions: list[int] = field(default_factory=list)
    new: NewPredictions | None = None
    created_at: str | None = None
    # Filled by `record`: each row's status and stored id; rows a row stored before answered.
    status: list[int] = field(default_factory=list)
    row_ids: list[int | None] = field(default_factory=list)
    earlier: dict[int, Prediction] = field(default_factory=dict)
    stored: int = 0
    replayed: int = 0
    conflicts: int = 0

    @classmethod
    def empty(cls, endpoint: str, rows: Rows) -> Results:
        """Results for `rows` before any is scored: only the errors the rows carry."""
        n = len(rows)
        results = cls(endpoint, list(rows.ids), dict(rows.errors), [[] for _ in range(n)])
        for name in _PER_ROW:
            setattr(results, name, [None] * n)
        return results

    def __len__(self) -> int:
        return len(self.ids)

    def record(self, outcomes: Sequence[int | Prediction | ServiceError | None] | None) -> Results:
        """Take `save_apart`'s outcomes for `new` (None: nothing was stored)."""
        self.status = [OK] * len(self.ids)
        for i, error in self.errors.items():
            self.status[i] = error.status
        self.row_ids = [None] * len(self.ids)
        if outcomes is None:
            return self
        seen: set[int] = set()
        for i, outcome in zip(self.positions, outcomes, strict=True):
            if isinstance(outcome, ServiceError):
                self.status[i] = outcome.status
                self.errors[i] = outcome
                self.warnings[i] = []
            elif outcome is None:
                self.status[i] = 409
                self.errors[i] = conflict(self.ids[i])
                self.warnings[i] = []
                self.conflicts += 1
            elif isinstance(outcome, Prediction):
                self._replay(i, outcome)
                self.replayed += 1
            else:
                self.row_ids[i] = outcome
                # A repeated id with the same observation replays the row its first use stored.
                if outcome in seen:
                    self.replayed += 1
                else:
                    seen.add(outcome)
                    self.stored += 1
        return self

    def _replay(self, i: int, row: Prediction) -> None:
        # The stored answer stands, whichever version would answer today.
        self.earlier[i] = row
        self.row_ids[i] = row.id
        self.versions[i] = row.model_version
        self.proba[i] = row.proba
        self.labels[i] = None if row.prediction is None else json.loads(row.prediction)
        self.labels_json[i] = row.prediction
        self.probabilities[i] = None if row.probabilities is None else json.loads(row.probabilities)
        self.values[i] = row.value
        self.ab_test[i] = row.ab_test
        self.arm[i] = row.arm

    def counts(self) -> dict[str, int]:
        """How many rows were answered (stored anew or replayed), refused as invalid, and in
        conflict."""
        return {
            "rows": len(self.ids),
            "answered": sum(1 for status in self.status if status == OK),
            "stored": self.stored,
            "replayed": self.replayed,
            "invalid": sum(1 for status in self.status if status == 422),
            "conflicts": self.conflicts,
        }


_PER_ROW = (
    "versions",
    "proba",
    "labels",
    "probabilities",
    "values",
    "ab_test",
    "arm",
    "observations",
    "labels_json",
    "probabilities_json",
)


# What a database driver raises for one row's values (a text it cannot encode, a value too
# long for its column): that row's fault, not the batch's. Anything else (the database is
# down, a bug) still fails the whole batch.
_ROW_ERRORS = (ValueError, peewee.DataError, peewee.IntegrityError)


def save_apart(new: NewPredictions) -> list[int | Prediction | ServiceError | None]:
    """`predictions.save`, except that a row the database refuses fails alone.

    The batch is stored in one transaction as before; only if that fails for a row's values
    is it split in halves, each stored on its own, down to the rows that fail, which are
    answered with an error of their own: a few transactions for one bad row among thousands.
    """
    return _save_part(new, list(range(len(new))))


def _save_part(
    new: NewPredictions, positions: list[int]
) -> list[int | Prediction | ServiceError | None]:
    part = new if len(positions) == len(new) else _subset(new, positions)
    try:
        return list(save(part))
    except _ROW_ERRORS as exc:
        if len(positions) == 1:
            logger.warning("batch row %r refused by the database: %s", part.observation_id[0], exc)
            return [_refused()]
    middle = len(positions) // 2
    return _save_part(new, positions[:middle]) + _save_part(new, positions[middle:])


def _subset(new: NewPredictions, positions: list[int]) -> NewPredictions:
    """The rows of `new` at `positions`, in that order."""
    return NewPredictions(
        **{
            f.name: [getattr(new, f.name)[i] for i in positions]
            for f in dataclasses.fields(NewPredictions)
        }
    )


def _refused() -> InvalidInput:
    return InvalidInput(
        "The database refused this row's values; nothing was stored for it.",
        [detail("row", "refused by the database")],
    )


def prepare(
    endpoint: str,
    rows: Rows,
    groups: Sequence[Group],
    check: Callable[[str], None] | None = None,
) -> Results:
    """Check and score every group's rows with its model; build the rows to store. `check`
    is called after each group is checked and after it is scored (a CPU budget)."""
    results = Results.empty(endpoint, rows)
    results.batch_warnings = rows.ignored([group.route.model.schema for group in groups])
    for group in groups:
        model = group.route.model
        checked = rows.check(model.schema, group.positions, model.rejects_surprises)
        if check is not None:
            check(f"checking the rows of version {model.version}")
        for local, error in checked.errors.items():
            results.errors[group.positions[local]] = error
        for local, found in enumerate(checked.warnings):
            results.warnings[group.positions[local]] = found
        valid = checked.valid()
        if not valid:
            continue
        whole = len(valid) == len(group.positions)
        columns = {
            name: column if whole else [column[j] for j in valid]
            for name, column in checked.columns.items()
        }
        targets = group.positions if whole else [group.positions[j] for j in valid]
        scored = _score(results, model, group.route, columns, targets, check)
        if check is not None:
            check(f"scoring the rows of version {model.version}")
        results.positions.extend(scored)
    results.positions.sort()
    stamp = utcnow()
    results.created_at = iso(stamp)
    results.new = _new(results, [rows.keys[i] or "" for i in results.positions], stamp)
    return results


@dataclass(frozen=True)
class _Said:
    """What a model said about n rows, each value as it is stored."""

    proba: list[float | None]
    labels: list[Any]
    labels_json: list[str]
    probabilities: list[dict[str, float] | None]
    probabilities_json: list[str | None]
    values: list[float | None]


def _said(model: LoadedModel, columns: dict[str, list[Any]], n: int) -> _Said:
    scores = model.predict_columns(columns)
    none: list[Any] = [None] * n
    probabilities, probabilities_json = none, none
    if scores.probabilities is not None and scores.names is not None:
        names = scores.names
        by_class = {name: scores.probabilities[:, k].tolist() for k, name in enumerate(names)}
        probabilities_json = canonical_json_rows(by_class, n)
        probabilities = [
            dict(zip(names, row, strict=True)) for row in scores.probabilities.tolist()
        ]
    return _Said(
        proba=scores.proba.tolist() if scores.proba is not None else none,
        labels=scores.labels,
        labels_json=canonical_json_each(scores.labels),
        probabilities=probabilities,
        probabilities_json=probabilities_json,
        values=scores.values.tolist() if scores.values is not None else none,
    )


def _score(
    results: Results,
    model: LoadedModel,
    route: routing.Route,
    columns: dict[str, list[Any]],
    targets: list[int],
    check: Callable[[str], None] | None = None,
) -> list[int]:
    """Score one model's valid rows and write what it said into the rows at `targets`; the
    rows its pipeline refuses get their error instead. Returns the positions scored."""
    scored, said, refused = _said_apart(model, columns, len(targets), check)
    for k, error in refused.items():
        results.errors[targets[k]] = error
        results.warnings[targets[k]] = []
    if refused:
        columns = _pick(columns, scored)
        targets = [targets[k] for k in scored]
    observations = canonical_json_rows(columns, len(targets))
    for k, i in enumerate(targets):
        results.versions[i] = model.version
        results.proba[i] = said.proba[k]
        results.labels[i] = said.labels[k]
        results.labels_json[i] = said.labels_json[k]
        results.probabilities[i] = said.probabilities[k]
        results.probabilities_json[i] = said.probabilities_json[k]
        results.values[i] = said.values[k]
        results.ab_test[i] = route.ab_test
        results.arm[i] = route.arm
        results.observations[i] = observations[k]
    return targets


def _pick(columns: dict[str, list[Any]], rows: list[int]) -> dict[str, list[Any]]:
    return {name: [column[k] for k in rows] for name, column in columns.items()}


def _said_apart(
    model: LoadedModel,
    columns: dict[str, list[Any]],
    n: int,
    check: Callable[[str], None] | None = None,
    search: bool = True,
) -> tuple[list[int], _Said, dict[int, InvalidInput]]:
    """`_said`, except that a row the pipeline refuses (`LoadedModel.refuses_input`) fails
    alone: the rows scored (ascending), what the model said about them, and each refused
    row's 422, by row.

    One call when every row scores, as before. When it raises, the rows are grouped by which
    columns hold a null, and each group is scored in one call. A group refused for its nulls
    (the pipeline's message is about missing values) is refused whole: every row of it holds
    the same nulls, so each would be refused alone. Any other group that fails is split in
    halves, down to the rows that fail (a few calls for one bad row among thousands), or,
    with `search` off (a shadow, whose scores are optional), skipped whole. `check` (a CPU
    budget) is called before each further call, so hostile rows cost at most the budget.
    """
    try:
        return list(range(n)), _said(model, columns, n), {}
    except Exception as exc:
        if not model.refuses_input(exc):
            raise
        first = exc
    parts: list[tuple[list[int], _Said]] = []
    refused: dict[int, InvalidInput] = {}
    groups = _by_nulls(columns, n)
    for nulls, rows in groups:
        failure = first
        if len(groups) > 1:
            if check is not None:
                check(f"finding the rows version {model.version} refuses")
            try:
                parts.append((rows, _said(model, _pick(columns, rows), len(rows))))
                continue
            except Exception as exc:
                if not model.refuses_input(exc):
                    raise
                failure = exc
        if not search or (nulls and _refused_for(model, columns, rows, nulls, failure, check)):
            for k in rows:
                refused[k] = model.refusal(_observation(columns, k), failure, log=False)
        else:
            _bisect(model, columns, rows, failure, parts, refused, check)
    if refused:
        logger.warning(
            "model %s/%s refused %d of %d rows of a batch, first: %s",
            model.endpoint,
            model.version,
            len(refused),
            n,
            refused[min(refused)].message,
        )
    return (*_in_row_order(parts), refused)


def _refused_for(
    model: LoadedModel,
    columns: dict[str, list[Any]],
    rows: list[int],
    nulls: frozenset[str],
    failure: Exception,
    check: Callable[[str], None] | None,
) -> bool:
    """Whether rows that hold nulls in the same columns, refused together with `failure`,
    are each refused for those nulls: the pipeline says it cannot take missing values, and
    the same rows with a typical value in place of every null score (a row refused for
    something else, a value its transformers turn into NaN, say, still fails then)."""
    typical = model.typical
    if typical is None or not about_missing(failure):
        return False
    filled = _pick(columns, rows)
    for name in nulls:
        filled[name] = [typical[name]] * len(rows)
    if check is not None:
        check(f"finding the rows version {model.version} refuses")
    try:
        _said(model, filled, len(rows))
    except Exception as exc:
        if not model.refuses_input(exc):
            raise
        return False
    return True


def _observation(columns: dict[str, list[Any]], k: int) -> dict[str, Any]:
    return {name: column[k] for name, column in columns.items()}


def _by_nulls(columns: dict[str, list[Any]], n: int) -> list[tuple[frozenset[str], list[int]]]:
    """The rows grouped by the columns in which they hold a null, groups in order of their
    first row."""
    groups: dict[frozenset[str], list[int]] = {}
    for k in range(n):
        nulls = frozenset(name for name, column in columns.items() if missing(column[k]))
        groups.setdefault(nulls, []).append(k)
    return list(groups.items())


def _in_row_order(parts: list[tuple[list[int], _Said]]) -> tuple[list[int], _Said]:
    """The rows the parts scored, ascending, and what was said of them in that order."""
    scored = [(k, part, j) for rows, part in parts for j, k in enumerate(rows)]
    scored.sort(key=lambda item: item[0])
    said = _Said(
        *([getattr(part, f.name)[j] for _, part, j in scored] for f in dataclasses.fields(_Said))
    )
    return [k for k, _, _ in scored], said


def _bisect(
    model: LoadedModel,
    columns: dict[str, list[Any]],
    rows: list[int],
    exc: Exception,
    parts: list[tuple[list[int], _Said]],
    refused: dict[int, InvalidInput],
    check: Callable[[str], None] | None,
) -> None:
    """Score the halves of `rows`, which failed together with `exc`, down to the rows that
    fail alone; what scored goes to `parts`."""
    if len(rows) == 1:
        [k] = rows
        refused[k] = model.refusal(_observation(columns, k), exc, log=False)
        return
    if check is not None:
        check(f"finding the rows version {model.version} refuses")
    middle = len(rows) // 2
    for half in (rows[:middle], rows[middle:]):
        try:
            parts.append((half, _said(model, _pick(columns, half), len(half))))
        except Exception as again:
            if not model.refuses_input(again):
                raise
            _bisect(model, columns, half, again, parts, refused, check)


def shadow_scores(model: LoadedModel, rows: Rows, results: Results) -> list[dict[str, Any]]:
    """A shadow version's scores of the stored rows another version answered, as
    `shadow_score` rows. The shadow checks the rows by its own schema and skips the ones it
    refuses, as it does for a single prediction."""
    positions = [
        i
        for i, row_id in enumerate(results.row_ids)
        if row_id is not None and results.versions[i] != model.version
    ]
    if not positions:
        return []
    checked = rows.check(model.schema, positions, model.rejects_surprises)
    valid = checked.valid()
    if not valid:
        return []
    columns = {name: [column[j] for j in valid] for name, column in checked.columns.items()}
    # A row the shadow's pipeline refuses is skipped, as one its schema refuses is.
    scored, said, _ = _said_apart(model, columns, len(valid), search=False)
    valid = [valid[k] for k in scored]
    return [
        {
            "prediction_id": results.row_ids[positions[j]],
            "endpoint": model.endpoint,
            "model_version": model.version,
            "proba": said.proba[k],
            "prediction": said.labels_json[k],
            "probabilities": said.probabilities_json[k],
            "value": said.values[k],
        }
        for k, j in enumerate(valid)
    ]


def count(results: Results, models: dict[str, LoadedModel]) -> None:
    """Count the answered rows in the Prometheus metrics, version by version, as /predict
    counts each of its answers (replays too)."""
    answered: dict[str, list[int]] = {}
    for i, status in enumerate(results.status):
        version = results.versions[i]
        if status == OK and version is not None:
            answered.setdefault(version, []).append(i)
    for version, positions in answered.items():
        model = models.get(version)
        regression = model is not None and model.task == "regression"
        metrics.record_predictions(
            results.endpoint,
            version,
            [None if regression else results.labels[i] for i in positions],
            [results.warnings[i] for i in positions],
        )


def _new(results: Results, keys: list[str], stamp: Any) -> NewPredictions:
    """The columns to store for the scored rows."""
    picked = results.positions
    return NewPredictions(
        endpoint=[results.endpoint] * len(picked),
        model_version=[results.versions[i] or "" for i in picked],
        observation_id=keys,
        observation=[results.observations[i] or "" for i in picked],
        proba=[results.proba[i] for i in picked],
        prediction=[results.labels_json[i] for i in picked],
        probabilities=[results.probabilities_json[i] for i in picked],
        value=[results.values[i] for i in picked],
        ab_test=[results.ab_test[i] for i in picked],
        arm=[results.arm[i] for i in picked],
        created_at=[stamp] * len(picked),
    )
