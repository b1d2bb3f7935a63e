"""What the views' own code cannot say about them: per Flask endpoint, the request and reply
schemas, the error statuses, who may call it. Method and path come from the app's URL map,
the summary and description from the view's docstring (serving/openapi/document.py).

Adding a route? Write its view with a docstring (first paragraph: the summary) and add one
entry to OPERATIONS under its Flask endpoint name (`blueprint.function`). tests/test_openapi.py
fails naming any route without an entry, and any entry without a route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serving.decisions.lifecycle import STATUSES
from serving.openapi.components import (
    ANY,
    ERRORS,
    INTEGER,
    NO_NUL,
    NULLABLE_INTEGER,
    STRING,
    TIME,
    array,
    obj,
    ref,
)

# In a schema reference, stands for the model whose schemas apply: "" in the generic
# `/api/v1/{endpoint}/…` operation, "income." in its copy at `/api/v1/income/…`.
MODEL = "{model}"

JSON = "application/json"
BINARY = "application/octet-stream"
CSV = "text/csv"
HTML = "text/html"


@dataclass(frozen=True)
class Reply:
    """The success response: its status and its body per media type."""

    status: int = 200
    content: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = "OK"
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # OpenAPI links: which later operations take values from this answer.
    links: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Body:
    """A request body per media type."""

    content: dict[str, dict[str, Any]]
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class Operation:
    """What the document says of one view beyond its method, path and docstring."""

    tag: str
    reply: Reply
    errors: tuple[int, ...] = ()
    body: Body | None = None
    query: tuple[str, ...] = ()
    admin: bool = False
    # A prediction route: with PREDICT_AUTH on, it needs a client token (401, 403).
    client: bool = False
    # Also describe the operation once per served endpoint, at its own path with its own
    # model's schemas (the path's {endpoint} filled in).
    per_endpoint: bool = False
    # Uses the default endpoint's model schemas (the tutorial routes).
    default_endpoint: bool = False
    # Said after the docstring's own description.
    description: str = ""
    # Only for a view whose docstring is not ours (Flask's static files view).
    summary: str = ""
    # Default: the view function's name (with `_<method>` when it serves several methods).
    operation_id: str = ""
    # A path variable whose parameter is not the usual one for its name (PATH_PARAMETERS).
    path_parameters: dict[str, str] = field(default_factory=dict)
    # Other answers that are not errors (such as /ready's 503).
    more: tuple[Reply, ...] = ()
    # Errors as the Open Inference Protocol has them, `{"error": ...}` (the v2 routes).
    short_errors: bool = False


def json_reply(schema: dict[str, Any], status: int = 200, description: str = "OK") -> Reply:
    """A JSON success response."""
    return Reply(status, {JSON: {"schema": schema}}, description)


def json_body(schema: dict[str, Any], required: bool = True, description: str = "") -> Body:
    """A JSON request body. The service reads JSON whatever the Content-Type says."""
    return Body({JSON: {"schema": schema}}, required, description)


def file_reply(description: str, *types: str) -> Reply:
    """A static file, of one of these types (its name says which)."""
    return Reply(200, {t: {"schema": {"type": "string"}} for t in types}, description)


# Every 503 says when to come back.
RETRY = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}


def html_reply(status: int = 200, description: str = "The page.") -> Reply:
    """An HTML page (the dashboard answers its errors as pages too)."""
    headers = RETRY if status == 503 else {}
    return Reply(status, {HTML: {"schema": {"type": "string"}}}, description, headers)


# The statuses every predict-like operation can answer.
SCORING = (400, 404, 409, 413, 422, 503)

PREDICT_BODY = json_body(ref(f"{MODEL}PredictRequest"))
PREDICT_REPLY = json_reply(ref("Prediction"), description="The prediction, stored.")
PREDICT_DESCRIPTION = (
    "The version that answers: `?version=`, else the one in `?status=`, else the running A/B "
    "test's arm for this id, else production. Values outside the training data are answered "
    "with `warnings` (422 when the model's `out_of_range` is `reject`)."
)
UPDATE_BODY = json_body(ref(f"{MODEL}UpdateRequest"))
UPDATE_REPLY = json_reply(
    ref("Updated"),
    description="The stored prediction with its truth; the observation only to an "
    "authenticated caller.",
)
BATCH_BODY = Body(
    {
        JSON: {"schema": ref(f"{MODEL}BatchRequest")},
        CSV: {
            "schema": {
                "type": "string",
                "description": "A header line with `id` and the model's columns, one row per "
                "observation; empty cells are missing.",
            }
        },
        "multipart/form-data": {
            "schema": obj(
                ["file"],
                file={
                    "type": "string",
                    "contentMediaType": "text/csv",
                    "description": "The CSV (or a .json file of rows): a file part, or a plain "
                    "field holding the text.",
                },
            )
        },
    },
    description="A JSON array of predict bodies, CSV text, or an uploaded CSV file; a body "
    "of any other type is read as JSON.",
)


def _count(what: str) -> dict[str, Any]:
    return {
        "description": f"CSV answers only: {what}.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }


BATCH_REPLY = Reply(
    200,
    {
        JSON: {"schema": ref("BatchAnswer")},
        CSV: {"schema": {"type": "string", "description": "One line per row, in input order."}},
    },
    "One answer per row in input order: JSON, or CSV when `Accept` prefers text/csv (its "
    "counts then in the X-Batch-* headers, as JSON's `counts`).",
    headers={
        "X-Batch-Rows": _count("rows read"),
        "X-Batch-Answered": _count("rows answered with a prediction (stored or replayed)"),
        "X-Batch-Stored": _count("predictions stored anew"),
        "X-Batch-Replayed": _count("rows whose id and observation were stored already"),
        "X-Batch-Invalid": _count("rows refused as invalid (422)"),
        "X-Batch-Conflicts": _count("ids stored with a different observation (409)"),
        "X-Batch-Warnings": {
            "description": "CSV answers with batch warnings only: the warnings, "
            "percent-encoded, at most 4,000 characters.",
            "schema": {"type": "string"},
        },
    },
)
BATCH_DESCRIPTION = (
    "Every valid row is scored and stored; a row the model refuses gets its own error and "
    "status in the answer, which is still 200."
)


def _model_file(media_type: str, what: str) -> dict[str, Any]:
    return {"type": "string", "contentMediaType": media_type, "description": what}


PUBLISH_BODY = Body(
    {
        "multipart/form-data": {
            "schema": {
                **obj(
                    ["dtypes.pickle", "columns.json", "model.json"],
                    **{
                        "pipeline.skops": _model_file(
                            "application/octet-stream",
                            "The pipeline saved by skops (send this or pipeline.pickle).",
                        ),
                        "pipeline.pickle": _model_file(
                            "application/octet-stream",
                            "The pipeline saved by joblib: only with ALLOW_PICKLE_UPLOADS=true.",
                        ),
                        "dtypes.pickle": _model_file(
                            "application/octet-stream", "The input columns' dtypes."
                        ),
                        "columns.json": _model_file("application/json", "The input columns."),
                        "model.json": _model_file(
                            "application/json",
                            "The metadata; its `sha256` map pins every other file.",
                        ),
                        "by": {
                            "type": "string",
                            "maxLength": 200,
                            "pattern": NO_NUL,
                            "description": "Who publishes (default admin-api).",
                        },
                    },
                ),
                "additionalProperties": False,
            }
        }
    },
    description="One file part per model file, named as the file (curl -F "
    "'model.json=@folder/model.json' ...), at most MAX_MODEL_UPLOAD_BYTES in all.",
)
WHO_BODY = json_body(ref("Who"), required=False, description="Optional: who and why.")

TAGS = {
    "default endpoint": "The tutorial routes: DEFAULT_ENDPOINT.",
    "any endpoint": "The same routes for any endpoint.",
    "operations": "Probes and metrics.",
    "documentation": "This document and its interactive view.",
    "dashboard": "HTML pages for people.",
    "open inference protocol (v2)": "KServe's Open Inference Protocol (v2 REST): health, "
    "metadata, infer.",
    "endpoints and versions": "Endpoints, their versions and statuses, model metadata.",
    "quality and drift": "Quality from ground truth, and inputs against training.",
    "A/B tests and shadows": "Comparing versions on live traffic.",
}

STATUS = {"enum": [*STATUSES, None]}


def v2(reply: Reply, errors: tuple[int, ...] = (), **more: Any) -> Operation:
    """An Open Inference Protocol operation: its own tag and error shape."""
    return Operation("open inference protocol (v2)", reply, errors, short_errors=True, **more)


V2_READY = (
    Reply(
        503,
        {JSON: {"schema": ref("ModelReady")}},
        "Known but not answering: no production version, or the version is archived.",
        RETRY,
    ),
)
# Triton's binary tensor data extension: a JSON part of Inference-Header-Content-Length
# bytes, then raw tensor bytes. OpenAPI cannot describe the JSON part inside it, so the
# binary form is a second media type with its framing in the descriptions.
BINARY_FRAMING = {
    "schema": {
        "type": "string",
        "format": "binary",
        "description": "A JSON part (the InferenceRequest or InferenceResponse, each binary "
        "tensor with `parameters.binary_data_size` instead of `data`), then each binary "
        "tensor's bytes in tensor order; the Inference-Header-Content-Length header gives "
        "the JSON part's length.",
    }
}
V2_INFER_BODY = Body(
    {JSON: {"schema": ref("InferenceRequest")}, BINARY: BINARY_FRAMING},
    description="JSON, or Triton's binary tensor data extension (application/octet-stream, "
    "with the Inference-Header-Content-Length header).",
)
V2_INFER_REPLY = Reply(
    200,
    {JSON: {"schema": ref("InferenceResponse")}, BINARY: BINARY_FRAMING},
    "The outputs; rows stored. Binary (application/octet-stream) when an output asks for "
    "it: `parameters.binary_data` true, or the request's `parameters.binary_data_output`.",
    {
        "Inference-Header-Content-Length": {
            "description": "In a binary answer: the length of its JSON part in bytes.",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
)
V2_INFER_DESCRIPTION = (
    "One input per model column (pandas codec), datatype as the model metadata says, shape "
    "[n] or [n, 1]. A row whose id is stored with another observation is 409 (the others "
    "are stored); an invalid row refuses the request with nothing stored. Tensors may be "
    "sent, and outputs asked, as Triton's binary tensor data: little-endian, row-major, BOOL "
    "one byte, BYTES a 4-byte little-endian length then the bytes; the sizes must add up to "
    "the body (400 naming the input otherwise). MAX_BATCH_BODY_BYTES counts the whole body."
)

OPERATIONS: dict[str, Operation] = {
    # The tutorial routes, served by the default endpoint.
    "predictions.predict_default": Operation(
        "default endpoint",
        PREDICT_REPLY,
        SCORING,
        PREDICT_BODY,
        default_endpoint=True,
        client=True,
        description=PREDICT_DESCRIPTION,
    ),
    "predictions.update_default": Operation(
        "default endpoint",
        UPDATE_REPLY,
        (400, 404, 413, 422, 503),
        UPDATE_BODY,
        default_endpoint=True,
        client=True,
    ),
    "batch.predict_batch_default": Operation(
        "default endpoint",
        BATCH_REPLY,
        SCORING,
        BATCH_BODY,
        query=("VersionQuery", "StatusQuery"),
        default_endpoint=True,
        client=True,
        description=BATCH_DESCRIPTION,
    ),
    # Probes and metrics.
    "health.health": Operation("operations", json_reply(obj(["status"], status={"const": "ok"}))),
    "health.ready": Operation(
        "operations",
        json_reply(ref("Ready"), description="Ready."),
        more=(
            Reply(503, {JSON: {"schema": ref("Ready")}}, "Not ready: `checks` says why.", RETRY),
        ),
    ),
    "metrics.scrape": Operation(
        "operations",
        Reply(
            200,
            {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
            "The Prometheus text format (OpenMetrics when Accept asks for it).",
        ),
        operation_id="metrics",
    ),
    "docs.openapi_json": Operation(
        "documentation", json_reply({"type": "object"}), operation_id="openapi"
    ),
    "docs.docs": Operation("documentation", html_reply()),
    "docs.asset": Operation(
        "documentation",
        file_reply(
            "The file (JavaScript, CSS, an icon).",
            "text/css",
            "text/javascript",
            "image/png",
            "application/octet-stream",
        ),
        (404,),
        operation_id="docs_asset",
    ),
    # Pages for people.
    "dashboard.index": Operation(
        "dashboard",
        html_reply(),
        query=("DashboardToken",),
        operation_id="dashboard",
        more=(
            html_reply(401, "DASHBOARD_TOKEN is set and the request does not carry it."),
            html_reply(503, "The database is unreachable."),
        ),
    ),
    "dashboard.endpoint": Operation(
        "dashboard",
        html_reply(),
        query=("DashboardToken", "VersionOrProduction", "Window"),
        operation_id="dashboard_endpoint",
        path_parameters={"name": "DashboardEndpoint"},
        more=tuple(
            html_reply(status, f"The error page: {ERRORS[status][1]}")
            for status in (400, 401, 404, 409, 503)
        ),
    ),
    "dashboard.static": Operation(
        "dashboard",
        file_reply("The file.", "text/css"),
        (404,),
        summary="The dashboard's stylesheet",
        operation_id="dashboard_static",
    ),
    # Endpoints, versions and statuses.
    "endpoints.list_endpoints": Operation(
        "endpoints and versions",
        json_reply(obj(["endpoints"], endpoints=array(ref("EndpointSummary")))),
        (503,),
    ),
    "endpoints.endpoint_info": Operation(
        "endpoints and versions",
        json_reply(
            obj(
                ["endpoint", "versions", "broken_versions"],
                endpoint=STRING,
                versions=array(ref("VersionInfo")),
                broken_versions=array({"type": "object"}),
            )
        ),
        (404, 503),
    ),
    "endpoints.metadata_key": Operation(
        "endpoints and versions",
        json_reply(
            obj(
                ["endpoint", "version", "key", "value"],
                endpoint=STRING,
                version=STRING,
                key=STRING,
                value=ANY,
            )
        ),
        (404, 409, 503),
        query=("VersionQuery",),
    ),
    "endpoints.status_history": Operation(
        "endpoints and versions",
        json_reply(obj(["endpoint", "history"], endpoint=STRING, history=array(ref("HistoryRow")))),
        (404, 503),
    ),
    "endpoints.change_status": Operation(
        "endpoints and versions",
        json_reply(
            obj(
                ["endpoint", "version", "status", "changed"],
                endpoint=STRING,
                version=STRING,
                status=STRING,
                changed=array(
                    obj(["version", "from", "to"], version=STRING, to=STATUS, **{"from": STATUS})
                ),
            )
        ),
        (400, 404, 409, 413, 422, 503),
        json_body(ref("StatusChange")),
        admin=True,
        description="Promoting to production archives the previous production version.",
    ),
    "publishing.publish_version": Operation(
        "endpoints and versions",
        json_reply(
            ref("PublishedVersion"),
            201,
            "Published: stored with its first status, served by this worker now and by every "
            "worker and replica within STATUS_REFRESH_SECONDS.",
        ),
        (409, 413, 422, 503),
        PUBLISH_BODY,
        admin=True,
        path_parameters={"endpoint": "NewEndpoint", "version": "NewVersion"},
        description="422 names what is wrong: a missing or unknown file, a digest that does not "
        "match, a pickle the server does not accept, or why the version cannot load. 409: the "
        "version exists (a folder, a published version, or a status history); a published "
        "version is never overwritten.",
    ),
    # Predictions on any endpoint.
    "predictions.predict": Operation(
        "any endpoint",
        PREDICT_REPLY,
        SCORING,
        PREDICT_BODY,
        query=("VersionQuery", "StatusQuery"),
        per_endpoint=True,
        client=True,
        description=PREDICT_DESCRIPTION,
    ),
    "predictions.update": Operation(
        "any endpoint",
        UPDATE_REPLY,
        (400, 404, 413, 422, 503),
        UPDATE_BODY,
        per_endpoint=True,
        client=True,
    ),
    "batch.predict_batch": Operation(
        "any endpoint",
        BATCH_REPLY,
        SCORING,
        BATCH_BODY,
        query=("VersionQuery", "StatusQuery"),
        per_endpoint=True,
        client=True,
        description=BATCH_DESCRIPTION,
    ),
    # Quality and drift.
    "quality.performance": Operation(
        "quality and drift",
        json_reply(
            obj(
                ["endpoint", "since", "until", "versions"],
                endpoint=STRING,
                since=TIME,
                until=TIME,
                versions=array(obj(["version"], version=STRING)),
            )
        ),
        (400, 404, 503),
        query=("VersionQuery", "Since", "Until"),
    ),
    "drift.drift": Operation(
        "quality and drift",
        json_reply(
            obj(
                ["endpoint", "version", "window", "rows", "summary", "features", "skipped"],
                endpoint=STRING,
                version=STRING,
                window=obj(["rows", "seconds"], rows=INTEGER, seconds=NULLABLE_INTEGER),
                rows=INTEGER,
                oldest=TIME,
                newest=TIME,
                summary=obj(["class"], **{"class": STRING}),
                features=array({"type": "object"}),
                skipped=array(obj(["feature", "reason"], feature=STRING, reason=STRING)),
            )
        ),
        (400, 404, 409, 503),
        query=("VersionOrProduction", "Window"),
    ),
    # A/B tests and shadows.
    "experiments.start_test": Operation(
        "A/B tests and shadows",
        Reply(
            201,
            {JSON: {"schema": ref("AbTest")}},
            "Started.",
            links={
                link: {
                    "operationId": operation_id,
                    "parameters": {
                        "endpoint": "$request.path.endpoint",
                        "test_id": "$response.body#/id",
                    },
                }
                for link, operation_id in (("ShowTest", "show_test"), ("StopTest", "stop_test"))
            },
        ),
        (400, 404, 409, 413, 422, 503),
        json_body(ref("AbTestStart")),
        admin=True,
    ),
    "experiments.list_tests": Operation(
        "A/B tests and shadows",
        json_reply(obj(["endpoint", "ab_tests"], endpoint=STRING, ab_tests=array(ref("AbTest")))),
        (404, 409, 503),
    ),
    "experiments.show_test": Operation(
        "A/B tests and shadows", json_reply(ref("AbTest")), (404, 409, 503)
    ),
    "experiments.stop_test": Operation(
        "A/B tests and shadows",
        json_reply(ref("AbTest")),
        (400, 404, 409, 413, 422, 503),
        json_body(ref("AbTestStop"), required=False),
        admin=True,
    ),
    "experiments.list_shadows": Operation(
        "A/B tests and shadows",
        json_reply(
            obj(
                ["endpoint", "shadows", "history"],
                endpoint=STRING,
                shadows=array(ref("Shadow")),
                history=array(ref("ShadowChange")),
            )
        ),
        (404, 503),
    ),
    "experiments.show_shadow": Operation(
        "A/B tests and shadows", json_reply(ref("Shadow")), (404, 503)
    ),
    "experiments.enable_shadow": Operation(
        "A/B tests and shadows",
        json_reply(ref("ShadowChange")),
        (400, 404, 413, 422, 503),
        WHO_BODY,
        admin=True,
    ),
    "experiments.disable_shadow": Operation(
        "A/B tests and shadows",
        json_reply(ref("ShadowChange")),
        (400, 404, 413, 422, 503),
        WHO_BODY,
        admin=True,
    ),
    # Retraining.
    "retraining.retrain": Operation(
        "A/B tests and shadows",
        json_reply(ref("RetrainReport"), 201, "A candidate was registered."),
        (400, 404, 409, 413, 422, 503),
        json_body(ref("RetrainRequest"), required=False),
        admin=True,
        more=(json_reply(ref("RetrainReport"), 200, "Registered already, from the same inputs."),),
    ),
    # The Open Inference Protocol (v2 REST).
    "v2.server_metadata": v2(json_reply(ref("ServerMetadata"))),
    "v2.server_live": v2(json_reply(ref("ServerLive"))),
    "v2.server_ready": v2(
        json_reply(ref("ServerReady")),
        more=(Reply(503, {JSON: {"schema": ref("ServerReady")}}, "Not ready.", RETRY),),
    ),
    "v2.model_metadata": v2(json_reply(ref("ModelMetadata")), (404, 503)),
    "v2.version_metadata": v2(json_reply(ref("ModelMetadata")), (404, 503)),
    "v2.model_ready": v2(json_reply(ref("ModelReady")), (404,), more=V2_READY),
    "v2.version_ready": v2(json_reply(ref("ModelReady")), (404,), more=V2_READY),
    "v2_infer.infer": v2(
        V2_INFER_REPLY,
        SCORING,
        body=V2_INFER_BODY,
        client=True,
        description=V2_INFER_DESCRIPTION,
    ),
    "v2_infer.infer_version": v2(
        V2_INFER_REPLY,
        SCORING,
        body=V2_INFER_BODY,
        client=True,
        description=V2_INFER_DESCRIPTION,
    ),
}
