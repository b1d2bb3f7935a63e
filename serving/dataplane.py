"""The data plane: the one prediction sequence every entry point runs.

route → validate → score → store → shadow → count, over one `Services` object. `/predict`
calls `predict_one`; `/predict/batch` and `flask score` call `prepare_many` then
`PreparedBatch.commit`. What differs between entry points is a parameter with a reason
(`Plane`), never a copy of the sequence. Nothing here knows HTTP or files.

The sequence has two shapes, because a measurement says the single row must keep its own:
`predict_one` goes through the micro-batching `Scorer` and the group-committing `Writer`, so
concurrent requests in a worker meet in one scoring call and one transaction. One row through
the column path (parse into columns, check, score, build the stored columns) cost 11 ms of
CPU against 0.14 ms for route, validate, score and build the row here (Titanic model, 2026-11-30),
and concurrent requests would no longer meet. Many rows go through the column path of
`serving.batch.core`: one scoring call per version, one transaction per batch. Both store
here and only here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from serving import metrics
from serving.batch import core
from serving.batch.rows import Rows
from serving.decisions import routing
from serving.decisions.experiments import Experiments
from serving.decisions.lifecycle import Lifecycle
from serving.decisions.shadows import Shadows
from serving.errors import Conflict
from serving.model.registry import Registry
from serving.model.scoring import Scorer
from serving.store import predictions
from serving.store.predictions import Writer


@dataclass(frozen=True)
class Services:
    """What the sequence needs of a running app: which models, which version answers, how to
    score and store, and who shadows."""

    registry: Registry
    lifecycle: Lifecycle
    experiments: Experiments
    scorer: Scorer
    writer: Writer
    shadows: Shadows

    @classmethod
    def of(cls, extensions: Mapping[str, Any]) -> Services:
        """The services a Flask app holds in `app.extensions` once its models are loaded."""
        return cls(
            registry=extensions["registry"],
            lifecycle=extensions["lifecycle"],
            experiments=extensions["experiments"],
            scorer=extensions["scorer"],
            writer=extensions["writer"],
            shadows=extensions["shadows"],
        )


@dataclass(frozen=True)
class Plane:
    """What an entry point asks of the sequence besides its rows.

    - `store`: whether answers are stored (False: `flask score --no-log`, answers only).
    - `shadow`: whether shadow versions score the stored rows. Live traffic yes: a shadow is
      compared with the answering version on the requests it would have answered. Offline
      files no: a backfill is not the traffic a shadow is meant to judge, and would double a
      large file's cost.
    - `count`: whether answers are counted in the Prometheus metrics. The server yes. `flask
      score` no: its process is never scraped, so its counts would die with it, and an
      offline backfill counted beside live requests would distort their rates.
    """

    store: bool = True
    shadow: bool = True
    count: bool = True


LIVE = Plane()
OFFLINE = Plane(shadow=False, count=False)


def predict_one(
    services: Services,
    endpoint: str,
    observation_id: str | int,
    observation: dict[str, Any],
    version: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """Route, validate, score, store, shadow and count one observation; its answer as the
    API returns it (with the validation warnings). A conflicting id raises `Conflict`."""
    route = routing.choose(
        services.registry,
        services.lifecycle,
        services.experiments,
        endpoint,
        observation_id,
        version=version,
        status=status,
    )
    model = route.model
    clean, warnings = model.schema.validate(observation, reject_surprises=model.rejects_surprises)
    [score] = services.scorer.score(model, [clean])
    new = predictions.NewPrediction.scored(endpoint, route, observation_id, clean, score)
    [outcome] = services.writer.store([new])
    if isinstance(outcome, Conflict):
        raise outcome
    services.shadows.score(services.scorer, endpoint, observation, [outcome])
    answer = predictions.to_json(outcome, observation_id)
    answer["warnings"] = warnings
    label = None if model.task == "regression" else answer["prediction"]
    metrics.record_prediction(endpoint, outcome.model_version, label, warnings)
    return answer


@dataclass
class PreparedBatch:
    """Many rows routed, validated and scored, not yet stored: `commit` stores them, then
    shadows and counts. Between the two a caller may refuse the batch (an answer header that
    cannot be rendered, a spent CPU budget) with nothing stored; `flask score` prepares the
    next chunk while a writer thread commits this one."""

    services: Services
    endpoint: str
    rows: Rows
    groups: list[core.Group]
    results: core.Results
    plane: Plane

    @property
    def versions(self) -> list[str]:
        """The versions that answer rows of this batch."""
        return sorted({group.route.model.version for group in self.groups})

    def commit(self) -> core.Results:
        """Store the scored rows in one transaction (a row the database refuses fails alone),
        then let the shadows score them and count the answers, as the plane says."""
        results = self.results
        if results.new is None:
            raise RuntimeError("prepare_many builds the rows to store")
        results.record(core.save_apart(results.new) if self.plane.store else None)
        if self.plane.count:
            core.count(results, self.services.registry.endpoint(self.endpoint))
        if self.plane.shadow and self.plane.store:
            self.services.shadows.score_many(
                self.endpoint, lambda model: core.shadow_scores(model, self.rows, results)
            )
        return results


def prepare_many(
    services: Services,
    endpoint: str,
    rows: Rows,
    version: str | None = None,
    status: str | None = None,
    plane: Plane = LIVE,
    check: Callable[[str], None] | None = None,
) -> PreparedBatch:
    """Route, validate and score many rows, column by column. `check` is called after each
    step that costs CPU (a budget); `commit` does the rest."""
    groups = core.route(
        services.registry,
        services.lifecycle,
        services.experiments,
        endpoint,
        rows,
        version=version,
        status=status,
    )
    if check is not None:
        check("routing")
    results = core.prepare(endpoint, rows, groups, check=check)
    return PreparedBatch(services, endpoint, rows, groups, results, plane)
