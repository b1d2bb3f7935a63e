"""Predict and update: the tutorial routes on the default endpoint, and /api/v1/<endpoint>/…"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from serving import metrics, predictions, quality, routing
from serving.errors import Conflict, InvalidInput, detail
from serving.http.auth import authenticated
from serving.http.context import (
    annotate,
    body,
    experiments,
    lifecycle,
    registry,
    scorer,
    shadows,
    writer,
)
from serving.payloads import parse_predict_body, parse_update_body

blueprint = Blueprint("predictions", __name__)


def _default_endpoint() -> str:
    return current_app.config["SETTINGS"].default_endpoint


@blueprint.post("/predict")
def predict_default() -> tuple[dict[str, Any], int]:
    """Score one observation with the default endpoint's production version and store it."""
    return predict(_default_endpoint())


@blueprint.post("/update")
def update_default() -> tuple[dict[str, Any], int]:
    """Record the true class of a prediction made by the default endpoint."""
    return update(_default_endpoint())


@blueprint.post("/api/v1/<endpoint>/predict")
def predict(endpoint: str) -> tuple[dict[str, Any], int]:
    """Score one observation with the version chosen by ?version= or ?status= (production)."""
    request_body = parse_predict_body(body())
    annotate(endpoint=endpoint, observation_id=request_body.observation_id)
    route = routing.choose(
        registry(),
        lifecycle(),
        experiments(),
        endpoint,
        request_body.observation_id,
        version=request.args.get("version"),
        status=request.args.get("status"),
    )
    model = route.model
    observation, warnings = model.schema.validate(
        request_body.observation, reject_surprises=model.rejects_surprises
    )
    [result] = scorer().score(model, [observation])
    [outcome] = writer().store(
        [
            predictions.NewPrediction(
                endpoint=endpoint,
                model_version=model.version,
                observation_id=request_body.observation_id,
                observation=observation,
                proba=result.proba,
                label=result.label,
                probabilities=result.probabilities,
                value=result.value,
                ab_test=route.ab_test,
                arm=route.arm,
            )
        ]
    )
    if isinstance(outcome, Conflict):
        raise outcome
    annotate(model_version=outcome.model_version)
    shadows().score(scorer(), endpoint, request_body.observation, [outcome])
    answer = predictions.to_json(outcome, request_body.observation_id)
    answer["warnings"] = warnings
    label = None if model.task == "regression" else answer["prediction"]
    metrics.record_prediction(endpoint, outcome.model_version, label, warnings)
    return answer, 200


@blueprint.post("/api/v1/<endpoint>/update")
def update(endpoint: str) -> tuple[dict[str, Any], int]:
    """Record the true class (or value) of a stored prediction; a second update overwrites."""
    request_body = parse_update_body(body())
    versions = registry().endpoint(endpoint)
    annotate(endpoint=endpoint, observation_id=request_body.observation_id)
    stored = predictions.find(endpoint, request_body.observation_id)
    model = versions.get(stored.model_version) or next(iter(versions.values()))
    truth = model.truth(request_body.true_class)
    if truth is None:
        expected = f"one of {model.classes}" if model.classes else "a number"
        raise InvalidInput(
            f"'true_class' must be {expected}.",
            [detail("true_class", f"expected {expected}, got {request_body.true_class!r}")],
        )
    unmeasurable = quality.truth_problem(model, truth)
    if unmeasurable is not None:
        raise unmeasurable
    row = predictions.record_truth(endpoint, request_body.observation_id, truth)
    annotate(model_version=row.model_version)
    answer = predictions.to_json(row, request_body.observation_id)
    if not authenticated():
        # Anyone who guesses an id may update it while client authentication is off; the
        # observation, often personal data, goes back only to a caller who proved who it is.
        del answer["observation"]
    return answer, 200
