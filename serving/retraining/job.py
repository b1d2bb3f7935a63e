"""The retrain job, as `flask retrain` and `POST /api/v1/<endpoint>/retrain` run it.

1. The endpoint's production version is the parent. Its labelled logged rows in the window
   ([since, until), all by default), oldest first, are the data; rows its schema refuses or
   whose truth is not one of its classes are left out and counted.
2. Too few rows (below `min_labelled`): nothing happens, and the error says how many were
   found and how many are needed.
3. The newest rows (a `holdout_fraction`, 0.2 by default, or `holdout_rows`) are held out:
   never seen in fitting, they are what the gate judges on.
4. The inputs' digest (the rows with their truths, the parent, the holdout size, the training
   data's digest) is looked up in the lineage of the endpoint's versions (published and
   folders): a candidate already registered from the same inputs means there is nothing to
   do (not an error).
5. `sklearn.base.clone` of the parent's pipeline, unfitted, is fitted on the other rows,
   after the parent's own training data when asked and when model.json names that file with
   its sha256 (and the file has that digest; otherwise it is skipped, with a sentence).
6. The gate (`serving.retraining.gate`): a candidate significantly worse than production on
   the held-out rows is not registered.
7. A candidate that passes becomes the next free version, published (skops; model.json
   with its lineage and gate) with its one first row in the status history, `testing`,
   whose reason sums it up; every worker of every replica serves it within
   STATUS_REFRESH_SECONDS, no restart. Then a shadow (default), an A/B test against
   production, or nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from flask import Flask
from sklearn.base import clone

from serving.config import REPO_ROOT, Settings
from serving.decisions.experiments import Experiments
from serving.decisions.lifecycle import TESTING, Lifecycle
from serving.decisions.shadows import Shadows
from serving.errors import Conflict, InvalidInput, ServiceError, detail
from serving.model import artifacts
from serving.model.registry import Registry
from serving.model.runtime import LoadedModel
from serving.retraining import gate as gates
from serving.retraining import rows as logged
from serving.retraining.candidate import (
    endpoint_lock,
    next_version,
    publish_candidate,
    registered_with,
)
from serving.retraining.options import AB, NONE, SHADOW, Options
from serving.store.tables import iso, utcnow

logger = logging.getLogger(__name__)

REGISTERED, ALREADY_REGISTERED, REFUSED = "registered", "already registered", "refused"


class NotEnoughData(InvalidInput):
    """Too few labelled rows to retrain on: 422, with how many there are and are needed."""


@dataclass(frozen=True)
class Context:
    """What the job needs of an app whose models are loaded."""

    settings: Settings
    registry: Registry
    lifecycle: Lifecycle
    shadows: Shadows
    experiments: Experiments

    @classmethod
    def of(cls, app: Flask) -> Context:
        """The app's components (its models must be loaded: `serving.load_models`)."""
        extensions = app.extensions
        return cls(
            app.config["SETTINGS"],
            extensions["registry"],
            extensions["lifecycle"],
            extensions["shadows"],
            extensions["experiments"],
        )


@dataclass
class Outcome:
    """What a retrain did: registered a version, found one from the same inputs, or had its
    candidate refused by the gate."""

    outcome: str
    endpoint: str
    parent: str
    version: str | None
    message: str
    lineage: dict[str, Any] = field(default_factory=dict)
    then: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """As the route answers and `flask retrain --json` prints."""
        return {
            "outcome": self.outcome,
            "endpoint": self.endpoint,
            "parent_version": self.parent,
            "version": self.version,
            "message": self.message,
            "gate": self.lineage.get("gate"),
            "lineage": self.lineage,
            "then": self.then,
        }


@dataclass(frozen=True)
class TrainingData:
    """The parent's own training data, when it joins the fit, and what lineage says of it."""

    X: pd.DataFrame | None
    y: list[Any]
    record: dict[str, Any]


def retrain(context: Context, endpoint: str, options: Options) -> Outcome:
    """Run the whole job for `endpoint` (see the module's docstring); raise a ServiceError
    with a sentence when nothing can be run (NotEnoughData for too few rows, 409 while
    another retrain of the endpoint runs or when an A/B test would be needed and one runs)."""
    options.check()
    step, split = options.next_step()
    parent = context.registry.resolve(endpoint, context.lifecycle.statuses())
    endpoint_dir = context.settings.models_dir / endpoint
    with endpoint_lock(endpoint_dir):
        if step == AB and context.experiments.running(endpoint) is not None:
            raise Conflict(
                f"Endpoint {endpoint!r} already runs an A/B test, so a candidate could not be "
                "tested against production; stop it first, or use --then shadow or none.",
                [detail("then", "an A/B test is running")],
            )
        found = logged.usable(parent, logged.labelled_rows(endpoint, options.since, options.until))
        _check_enough(endpoint, found, options)
        held = logged.holdout_size(len(found), options.holdout_fraction, options.holdout_rows)
        if held >= len(found):
            raise NotEnoughData(
                f"The holdout ({held} rows) would leave no labelled row of {endpoint!r} to fit "
                f"on: {len(found)} were found.",
                [detail("holdout_rows", f"at most {len(found) - 1}")],
            )
        cut = len(found) - held
        training = (
            _training_data(parent)
            if options.include_training_data
            else TrainingData(None, [], {"used": False, "reason": "not asked for"})
        )
        inputs = _inputs_digest(parent, found, held, training)
        existing = registered_with(endpoint_dir, endpoint, inputs)
        if existing is not None:
            return Outcome(
                ALREADY_REGISTERED,
                endpoint,
                parent.version,
                existing,
                f"Nothing new to register: {endpoint} version {existing} was retrained from "
                f"these same inputs (sha256 {inputs[:12]}).",
                {"inputs_sha256": inputs},
            )

        X_fit, y_fit = _fit_data(parent, found, cut, training)
        if parent.classes and len(set(y_fit)) < 2:
            raise NotEnoughData(
                f"The rows to fit on hold only one class ({y_fit[0]!r}); a classifier needs "
                "at least two.",
                [detail("min_labelled", "one class only")],
            )
        candidate = clone(parent.pipeline).fit(X_fit, pd.Series(y_fit))
        X_held = logged.frame(parent, found.observations[cut:])
        verdict = gates.judge(parent, candidate, X_held, found.truths[cut:])
        lineage = _lineage(parent, options, found, cut, training, inputs, verdict)
        if not verdict.passed:
            return Outcome(
                REFUSED,
                endpoint,
                parent.version,
                None,
                f"Nothing registered: the candidate retrained from version {parent.version} "
                f"is {verdict.summary()}.",
                lineage,
            )
        version = next_version(endpoint_dir, endpoint, list(context.registry.endpoint(endpoint)))
        reason = _history_reason(parent, found, cut, training, verdict, inputs)
        publish_candidate(
            candidate,
            X_fit,
            y_fit,
            X_held,
            found.truths[cut:],
            endpoint=endpoint,
            version=version,
            metadata=_metadata(parent, version, verdict, lineage),
            by=options.by,
            reason=reason,
            settings=context.settings,
            registry=context.registry,
        )
        context.lifecycle.forget()
        then = _then(context, endpoint, parent.version, version, step, split, options.by)
    message = (
        f"Registered {endpoint} version {version} (testing), retrained from version "
        f"{parent.version}: {verdict.summary()}. {then['message']}"
    )
    return Outcome(REGISTERED, endpoint, parent.version, version, message, lineage, then)


def _check_enough(endpoint: str, found: logged.Usable, options: Options) -> None:
    if len(found) >= options.min_labelled:
        return
    window = ""
    if options.since or options.until:
        window = f" in [{iso(options.since) or 'the start'}, {iso(options.until) or 'now'})"
    left_out = "".join(f"; {n} left out ({why})" for why, n in sorted(found.left_out.items()))
    raise NotEnoughData(
        f"Found {len(found)} labelled rows of {endpoint!r}{window}{left_out}; at least "
        f"{options.min_labelled} are needed to retrain (min_labelled).",
        [detail("min_labelled", f"{len(found)} found, {options.min_labelled} needed")],
    )


def _training_data(parent: LoadedModel) -> TrainingData:
    """The parent's training data when model.json names it with its sha256 and the file on
    this machine has that digest; otherwise none, and lineage says why."""
    training = parent.metadata.get("training")
    target = parent.metadata.get("target")
    named = training.get("data") if isinstance(training, dict) else None
    pinned = training.get("data_sha256") if isinstance(training, dict) else None
    if not (isinstance(named, str) and isinstance(pinned, str) and isinstance(target, str)):
        return _skipped(
            "model.json of the production version does not name its training data with its "
            "sha256 and target ('training.data', 'training.data_sha256', 'target')"
        )
    path = Path(named) if Path(named).is_absolute() else REPO_ROOT / named
    record = {"path": named, "sha256": pinned}
    if not path.is_file():
        return _skipped(f"the training data {named} is not on this machine", record)
    actual = artifacts.sha256_file(path)
    if actual != pinned:
        return _skipped(
            f"the training data {named} has sha256 {actual}, not the {pinned} model.json "
            "pins: it is not the file the production version was trained on",
            record,
        )
    try:
        raw = pd.read_csv(path)
        missing = [c for c in [*parent.columns, target] if c not in raw.columns]
        if missing:
            return _skipped(f"the training data {named} lacks the columns {missing}", record)
        truths = [parent.truth(v) for v in raw[target].tolist()]
        keep = [t is not None for t in truths]
        kept = raw.loc[keep]
        X = parent.columns_frame({c: kept[c].tolist() for c in parent.columns})
    except (ValueError, TypeError, pd.errors.ParserError) as exc:
        return _skipped(f"the training data {named} could not be read: {exc}", record)
    y = [t for t in truths if t is not None]
    return TrainingData(X, y, {"used": True, **record, "rows": len(y)})


def _skipped(reason: str, record: dict[str, Any] | None = None) -> TrainingData:
    logger.warning("training data skipped: %s", reason)
    return TrainingData(None, [], {"used": False, **(record or {}), "reason": reason})


def _inputs_digest(
    parent: LoadedModel, found: logged.Usable, held: int, training: TrainingData
) -> str:
    """What makes a candidate: the rows with their truths, the parent, the holdout size and
    the training data joined (if any)."""
    parts = {
        "rows_sha256": logged.digest(found.rows),
        "parent_version": parent.version,
        "parent_digests": parent.digests,
        "holdout_rows": held,
        "training_data_sha256": training.record.get("sha256") if training.X is not None else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _fit_data(
    parent: LoadedModel, found: logged.Usable, cut: int, training: TrainingData
) -> tuple[pd.DataFrame, list[Any]]:
    X = logged.frame(parent, found.observations[:cut])
    y = list(found.truths[:cut])
    if training.X is None:
        return X, y
    # The older data first: the order rows were seen in.
    return pd.concat([training.X, X], ignore_index=True), [*training.y, *y]


def _lineage(
    parent: LoadedModel,
    options: Options,
    found: logged.Usable,
    cut: int,
    training: TrainingData,
    inputs: str,
    verdict: gates.Gate,
) -> dict[str, Any]:
    return {
        "parent_version": parent.version,
        "parent_sha256": parent.digests,
        "method": "sklearn.base.clone of the parent's pipeline, fitted anew",
        "inputs_sha256": inputs,
        "logged_rows": {
            "since": iso(options.since),
            "until": iso(options.until),
            "rows_sha256": logged.digest(found.rows),
            "fit": logged.window(found.rows[:cut]),
            "holdout": logged.window(found.rows[cut:]),
            "left_out": dict(sorted(found.left_out.items())),
        },
        "training_data": training.record,
        "fit_rows": cut + len(training.y),
        "gate": verdict.to_json(),
        "retrained_at": iso(utcnow()),
        "retrained_by": options.by,
    }


# model.json keys of the parent that describe how the version is served, not how it was made.
_INHERITED = ("name", "task", "target", "class_labels", "positive_class", "out_of_range")


def _metadata(
    parent: LoadedModel, version: str, verdict: gates.Gate, lineage: dict[str, Any]
) -> dict[str, Any]:
    inherited = {k: parent.metadata[k] for k in _INHERITED if k in parent.metadata}
    if "target_range" in parent.metadata:
        inherited["target_range"] = parent.metadata["target_range"]
    training: dict[str, Any] = {
        "rows": lineage["fit_rows"],
        "logged_rows": lineage["logged_rows"]["fit"]["rows"],
        "trained_by": "flask retrain",
    }
    if lineage["training_data"].get("used"):
        # A later retrain of this version may join the same file, checked the same way.
        training["data"] = lineage["training_data"]["path"]
        training["data_sha256"] = lineage["training_data"]["sha256"]
    return {
        **inherited,
        "endpoint": parent.endpoint,
        "version": version,
        "initial_status": TESTING,
        "task": parent.task,
        "metrics": {"holdout": {"n": verdict.rows, **verdict.candidate}},
        "library_versions": artifacts.library_versions(),
        "training": training,
        "lineage": lineage,
    }


def _history_reason(
    parent: LoadedModel,
    found: logged.Usable,
    cut: int,
    training: TrainingData,
    verdict: gates.Gate,
    inputs: str,
) -> str:
    fit = logged.window(found.rows[:cut])
    joined = f" and {len(training.y)} rows of its training data" if training.X is not None else ""
    return (
        f"retrained from version {parent.version} on {fit['rows']} logged rows "
        f"({_second(fit['first'])} to {_second(fit['last'])} UTC){joined}; "
        f"gate: {verdict.summary()}; "
        f"inputs sha256 {inputs[:12]}"
    )


def _second(moment: str | None) -> str:
    """An ISO time from lineage, to the second, as people read it."""
    return (moment or "?")[:19].replace("T", " ")


def _then(
    context: Context,
    endpoint: str,
    parent: str,
    version: str,
    step: str,
    split: float | None,
    by: str,
) -> dict[str, Any]:
    """Start what follows a registration; a failure here leaves the version registered and
    says so."""
    try:
        if step == SHADOW:
            context.shadows.set(
                endpoint, version, True, by, f"retrained candidate, behind version {parent}"
            )
            return {"step": SHADOW, "message": f"It now shadows version {parent}."}
        if step == AB:
            test = context.experiments.start(
                endpoint, parent, version, split, f"retrained version {version}", by
            )
            return {
                "step": AB,
                "ab_test": test["id"],
                "message": f"A/B test {test['id']} started: version {parent} (A) against "
                f"version {version} (B), {split:g} of traffic to B.",
            }
    except ServiceError as exc:
        return {"step": step, "error": exc.message, "message": f"But: {exc.message}"}
    return {"step": NONE, "message": "Nothing else was started (then: none)."}
