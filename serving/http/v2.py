"""The Open Inference Protocol (v2 REST): health, metadata and infer over the data plane.

A thin entry point like /predict: `inference_v2` turns tensors into rows and answers into
tensors, `dataplane` routes, validates, scores, stores, shadows and counts. Errors on these
routes are `{"error": "<sentence>"}`, as the protocol says, with the statuses the rest of the
API uses (400 malformed, 404 unknown model or version, 409, 413, 422 invalid content, 503).

Readiness: a version is ready when this process has loaded it and its status lets it answer
when named (any status but archived); a model without a version is ready when it has a
production version, the one that answers by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from serving.decisions.lifecycle import ARCHIVED, PRODUCTION
from serving.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    ServiceError,
    Unavailable,
    render_http_exception,
    render_short,
)
from serving.http import bodies, health
from serving.http.context import annotate, lifecycle, registry, services
from serving.model.folders import version_order
from serving.protocol.payloads import id_key

if TYPE_CHECKING:
    from serving.model.runtime import LoadedModel
    from serving.protocol.inference_v2 import InferRequest

SERVER_NAME = "sklearn-serving"
# The API's version, as the OpenAPI document's info.version says.
SERVER_VERSION = "1"

blueprint = Blueprint("v2", __name__, url_prefix="/v2")
# Infer is a prediction route: with PREDICT_AUTH on it needs a client token (see CLIENT_BLUEPRINTS).
infer_blueprint = Blueprint("v2_infer", __name__, url_prefix="/v2")


def _short_errors(bp: Blueprint) -> None:
    @bp.errorhandler(ServiceError)
    def service_error(error: ServiceError) -> Response:
        return render_short(error)

    @bp.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return render_http_exception(error, current_app.config["MAX_CONTENT_LENGTH"], short=True)


_short_errors(blueprint)
_short_errors(infer_blueprint)


@blueprint.get("")
def server_metadata() -> dict[str, Any]:
    """Server metadata: name, version and protocol extensions (Triton's binary tensor data)."""
    from serving.protocol import binary_tensors

    return {
        "name": SERVER_NAME,
        "version": SERVER_VERSION,
        "extensions": [binary_tensors.EXTENSION],
    }


@blueprint.get("/health/live")
def server_live() -> dict[str, Any]:
    """The process is up and answering (as /health)."""
    return {"live": True}


@blueprint.get("/health/ready")
def server_ready() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Ready to infer: the database answers and the models are loaded (as /ready)."""
    ok, _checks, _why = health.readiness()
    return {"ready": ok}, 200 if ok else 503, {} if ok else dict(Unavailable.headers)


@blueprint.get("/models/<endpoint>")
def model_metadata(endpoint: str) -> dict[str, Any]:
    """Model metadata: versions, platform, one input per column, the outputs.

    Describes the production version (without one, the newest version)."""
    return _metadata(endpoint, _default_model(endpoint))


@blueprint.get("/models/<endpoint>/versions/<version>")
def version_metadata(endpoint: str, version: str) -> dict[str, Any]:
    """Model metadata of one version."""
    return _metadata(endpoint, registry().version(endpoint, version))


@blueprint.get("/models/<endpoint>/ready")
def model_ready(endpoint: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Whether the model answers infer requests without a version: it has a production version."""
    registry().endpoint(endpoint)
    return _ready(endpoint, None)


@blueprint.get("/models/<endpoint>/versions/<version>/ready")
def version_ready(endpoint: str, version: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Whether this version answers infer requests naming it: loaded and not archived."""
    registry().version(endpoint, version)
    return _ready(endpoint, version)


@infer_blueprint.post("/models/<endpoint>/infer")
def infer(endpoint: str) -> dict[str, Any] | Response:
    """Score, store and answer rows sent as one tensor per column (pandas codec).

    Routed as /predict: the production version, or the running A/B test's arm for each row's
    id. One row is the request's `id`; n rows are `parameters.observation_ids`, else
    `<id>-<row>`. Tensors may come, and outputs go, as Triton's binary tensor data."""
    return _infer(endpoint, None)


@infer_blueprint.post("/models/<endpoint>/versions/<version>/infer")
def infer_version(endpoint: str, version: str) -> dict[str, Any] | Response:
    """Score, store and answer rows with this version (as /predict?version=)."""
    return _infer(endpoint, version)


def _default_model(endpoint: str) -> LoadedModel:
    versions = registry().endpoint(endpoint)
    statuses = lifecycle().statuses()
    production = [v for v in versions if statuses.get((endpoint, v)) == PRODUCTION]
    return versions[production[0] if production else max(versions, key=version_order)]


def _metadata(endpoint: str, model: LoadedModel) -> dict[str, Any]:
    from serving.protocol import inference_v2

    statuses = lifecycle().statuses()
    versions = registry().endpoint(endpoint)
    labels = model.classes or [0.0]
    return {
        "name": endpoint,
        "versions": sorted(
            (v for v in versions if statuses.get((endpoint, v)) != ARCHIVED), key=version_order
        ),
        "platform": inference_v2.PLATFORM,
        "inputs": inference_v2.input_metadata(model.schema),
        "outputs": inference_v2.output_metadata(model.task, inference_v2.label_datatype(labels)),
        "parameters": {
            "content_type": inference_v2.CONTENT_TYPE,
            "version": model.version,
            "status": statuses.get((endpoint, model.version)),
            "task": model.task,
            "classes": [str(c) for c in model.classes],
        },
    }


def _ready(endpoint: str, version: str | None) -> tuple[dict[str, Any], int, dict[str, str]]:
    answer: dict[str, Any] = {"name": endpoint, "ready": False}
    if version is not None:
        answer["version"] = version
    try:
        registry().resolve(endpoint, lifecycle().statuses(), version=version)
    except (NotFound, Conflict):
        # No production version, or an archived one: known, loaded, but not answering.
        return answer, 503, dict(Unavailable.headers)
    answer["ready"] = True
    return answer, 200, {}


def _infer(endpoint: str, version: str | None) -> dict[str, Any] | Response:
    # Imported here, as every view's scoring code is: see serving.http.
    from serving import dataplane
    from serving.protocol import binary_tensors, inference_v2

    # The model first: an unknown one is 404 whatever the body holds.
    model = registry().resolve(endpoint, lifecycle().statuses(), version=version)
    settings = current_app.config["SETTINGS"]
    # The limit is the whole body's, binary tensor data included.
    raw = bodies.read(settings.max_batch_body_bytes, "MAX_BATCH_BODY_BYTES")
    body = binary_tensors.read_request(raw, request.headers.get(binary_tensors.HEADER))
    decoded = inference_v2.decode(body, model.schema, settings.http_batch_max_rows)
    inference_v2.check_outputs(decoded, model.task)
    annotate(endpoint=endpoint, rows=len(decoded), observation_id=decoded.id)
    if len(decoded) == 1:
        try:
            answer = dataplane.predict_one(
                services(),
                endpoint,
                decoded.observation_ids[0],
                decoded.observations[0],
                version=version,
            )
        except InvalidInput as error:
            raise _about_inputs(error, 0) from error
        answers = [answer]
    else:
        answers = _infer_many(endpoint, version, decoded, settings.batch_cpu_seconds)
    versions = sorted({str(a["model_version"]) for a in answers}, key=version_order)
    annotate(model_version=",".join(versions))
    answered = registry().find(endpoint, versions[0]) or model
    response = inference_v2.encode(
        endpoint, decoded, answers, answered.classes, answered.positive_class
    )
    framed = binary_tensors.frame_response(response, decoded.binary_outputs)
    if framed is None:
        return response
    content, header_length = framed
    return Response(
        content,
        content_type=binary_tensors.MEDIA_TYPE,
        headers={binary_tensors.HEADER: str(header_length)},
    )


def _infer_many(
    endpoint: str, version: str | None, decoded: InferRequest, cpu_seconds: float
) -> list[dict[str, Any]]:
    """Many rows through the column path, all or nothing: an invalid row refuses the request
    before anything is stored. A row whose id is stored with another observation is a 409
    naming it; the other rows were stored, and resending them replays their answers."""
    from serving import dataplane
    from serving.batch import render
    from serving.batch.budget import CpuBudget
    from serving.batch.rows import JsonRows

    budget = CpuBudget(cpu_seconds)
    ids = decoded.observation_ids
    rows = JsonRows(
        ids=list(ids),
        keys=[id_key(i) for i in ids],
        errors={},
        observations=list(decoded.observations),
    )
    prepared = dataplane.prepare_many(
        services(), endpoint, rows, version=version, check=budget.check
    )
    _raise_first(prepared.results.errors)
    budget.check("preparing the rows to store")
    results = prepared.commit()
    _raise_first(results.errors)
    return [render.row_json(results, i) for i in range(len(results))]


def _raise_first(errors: dict[int, ServiceError]) -> None:
    if not errors:
        return
    row = min(errors)
    error = errors[row]
    if isinstance(error, InvalidInput):
        raise _about_inputs(error, row)
    raise error


def _about_inputs(error: InvalidInput, row: int) -> InvalidInput:
    """A /predict validation error reworded for tensors: each field is an input, with its row."""
    problems = [
        f"input {d['field'].removeprefix('observation.')!r}, row {row}: {d['problem']}"
        if d["field"].startswith("observation.")
        else f"{d['field']}, row {row}: {d['problem']}"
        for d in error.details
    ]
    message = f"Invalid {'; '.join(problems)}." if problems else error.message
    return InvalidInput(message, error.details)
