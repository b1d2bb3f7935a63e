"""The tutorial contract: POST /predict and POST /update on the default endpoint."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from serving import predictions
from serving.errors import Conflict, InvalidInput, detail
from serving.http.context import annotate, body, registry, scorer, writer
from serving.payloads import parse_predict_body, parse_update_body

blueprint = Blueprint("predictions", __name__)


def _default_endpoint() -> str:
    return current_app.config["SETTINGS"].default_endpoint


@blueprint.post("/predict")
def predict() -> tuple[dict[str, Any], int]:
    """Score one observation with the default endpoint's model and store it."""
    request_body = parse_predict_body(body())
    endpoint = _default_endpoint()
    annotate(endpoint=endpoint, observation_id=request_body.observation_id)
    model = registry().get(endpoint)
    observation, warnings = model.schema.validate(request_body.observation)
    [result] = scorer().score(model, [observation])
    [outcome] = writer().store(
        [
            predictions.NewPrediction(
                endpoint,
                model.version,
                request_body.observation_id,
                observation,
                result.proba,
                result.label,
            )
        ]
    )
    if isinstance(outcome, Conflict):
        raise outcome
    annotate(model_version=outcome.model_version)
    answer = predictions.to_json(outcome, request_body.observation_id)
    answer["warnings"] = warnings
    return answer, 200


@blueprint.post("/update")
def update() -> tuple[dict[str, Any], int]:
    """Record the true class of a stored prediction; a second update overwrites it."""
    request_body = parse_update_body(body())
    endpoint = _default_endpoint()
    annotate(endpoint=endpoint, observation_id=request_body.observation_id)
    stored = predictions.find(endpoint, request_body.observation_id)
    model = registry().find(endpoint, stored.model_version) or registry().get(endpoint)
    label = model.class_label(request_body.true_class)
    if label is None:
        raise InvalidInput(
            f"'true_class' must be one of the model's classes {model.classes}.",
            [
                detail(
                    "true_class",
                    f"expected one of {model.classes}, got {request_body.true_class!r}",
                )
            ],
        )
    row = predictions.record_truth(endpoint, request_body.observation_id, label)
    annotate(model_version=row.model_version)
    return predictions.to_json(row, request_body.observation_id), 200
