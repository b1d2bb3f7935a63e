"""Predict and update: the tutorial routes on the default endpoint, and /api/v1/<endpoint>/…"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from serving.errors import InvalidInput, detail
from serving.http.auth import authenticated
from serving.http.context import annotate, body, registry, services
from serving.protocol.payloads import parse_predict_body, parse_update_body
from serving.store import predictions

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
    from serving import dataplane  # imported at start-up: see serving.http

    # The endpoint first: an unknown one is 404 whatever the body holds.
    registry().endpoint(endpoint)
    request_body = parse_predict_body(body())
    annotate(endpoint=endpoint, observation_id=request_body.observation_id)
    answer = dataplane.predict_one(
        services(),
        endpoint,
        request_body.observation_id,
        request_body.observation,
        version=request.args.get("version"),
        status=request.args.get("status"),
    )
    annotate(model_version=answer["model_version"])
    return answer, 200


@blueprint.post("/api/v1/<endpoint>/update")
def update(endpoint: str) -> tuple[dict[str, Any], int]:
    """Record the true class (or value) of a stored prediction; a second update overwrites."""
    from serving.reports import quality  # imported at start-up: see serving.http

    # The endpoint first: an unknown one is 404 whatever the body holds.
    versions = registry().endpoint(endpoint)
    request_body = parse_update_body(body())
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
