"""Every route of the service, one `Operation` per method and path.

Adding a route? Add one entry to OPERATIONS: its method, its path with `{name}` for each
variable, the success reply and the error statuses it can answer. tests/test_openapi.py fails
naming any route of the app that has no entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serving.openapi.components import (
    ANY,
    ERRORS,
    INTEGER,
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
    """One method on one path, as the document shows it."""

    method: str
    path: str
    operation_id: str
    summary: str
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
    description: str = ""
    # Other answers that are not errors (such as /ready's 503).
    more: tuple[Reply, ...] = ()


def json_reply(schema: dict[str, Any], status: int = 200, description: str = "OK") -> Reply:
    """A JSON success response."""
    return Reply(status, {JSON: {"schema": schema}}, description)


def json_body(schema: dict[str, Any], required: bool = True, description: str = "") -> Body:
    """A JSON request body. The service reads JSON whatever the Content-Type says."""
    return Body({JSON: {"schema": schema}}, required, description)


def file_reply(description: str) -> Reply:
    """A static file, of whatever type its name says."""
    return Reply(200, {"*/*": {"schema": {"type": "string", "format": "binary"}}}, description)


def html_reply(status: int = 200, description: str = "The page.") -> Reply:
    """An HTML page (the dashboard answers its errors as pages too)."""
    return Reply(status, {HTML: {"schema": {"type": "string"}}}, description)


# The statuses every predict-like operation can answer.
SCORING = (400, 404, 409, 413, 422, 503)
ADMIN_ERRORS = (401, 403)

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
                    "description": "The CSV (or a .json file of rows).",
                },
            )
        },
    },
    description="A JSON array of predict bodies, CSV text, or an uploaded CSV file; a body "
    "of any other type is read as JSON.",
)
BATCH_REPLY = Reply(
    200,
    {
        JSON: {"schema": ref("BatchAnswer")},
        CSV: {"schema": {"type": "string", "description": "One line per row, in input order."}},
    },
    "One answer per row in input order: JSON, or CSV when `Accept` prefers text/csv.",
    headers={
        "X-Batch-Ok": {
            "description": "CSV answers: rows scored (also X-Batch-<status> per error status).",
            "schema": {"type": "string"},
        }
    },
)
BATCH_DESCRIPTION = (
    "Every valid row is scored and stored; a row the model refuses gets its own error and "
    "status in the answer, which is still 200."
)
WHO_BODY = json_body(ref("Who"), required=False, description="Optional: who and why.")

OPERATIONS: tuple[Operation, ...] = (
    # The tutorial routes, served by the default endpoint.
    Operation(
        "post",
        "/predict",
        "predict_default",
        "Score one observation with the default endpoint",
        "default endpoint",
        PREDICT_REPLY,
        SCORING,
        PREDICT_BODY,
        default_endpoint=True,
        client=True,
        description=PREDICT_DESCRIPTION,
    ),
    Operation(
        "post",
        "/update",
        "update_default",
        "Record the true class of a default-endpoint prediction",
        "default endpoint",
        UPDATE_REPLY,
        (400, 404, 413, 422, 503),
        UPDATE_BODY,
        default_endpoint=True,
        client=True,
    ),
    Operation(
        "post",
        "/predict/batch",
        "predict_batch_default",
        "Score a batch with the default endpoint",
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
    Operation(
        "get",
        "/health",
        "health",
        "The process is up",
        "operations",
        json_reply(obj(["status"], status={"const": "ok"})),
    ),
    Operation(
        "get",
        "/ready",
        "ready",
        "The database answers and models are loaded",
        "operations",
        json_reply(ref("Ready"), description="Ready."),
        more=(json_reply(ref("Ready"), 503, "Not ready: `checks` says why."),),
    ),
    Operation(
        "get",
        "/metrics",
        "metrics",
        "Prometheus metrics, summed over every worker",
        "operations",
        Reply(
            200,
            {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
            "The Prometheus text format (OpenMetrics when Accept asks for it).",
        ),
    ),
    Operation(
        "get",
        "/openapi.json",
        "openapi",
        "This document",
        "documentation",
        json_reply({"type": "object"}),
    ),
    Operation(
        "get",
        "/docs",
        "docs",
        "Interactive documentation of this document (Swagger UI, served locally)",
        "documentation",
        Reply(200, {HTML: {"schema": {"type": "string"}}}),
    ),
    Operation(
        "get",
        "/docs/assets/{filename}",
        "docs_asset",
        "One of Swagger UI's files, from the installed flask-swagger-ui package",
        "documentation",
        file_reply("The file (JavaScript, CSS, an icon)."),
        (404,),
    ),
    # Pages for people.
    Operation(
        "get",
        "/",
        "dashboard",
        "The dashboard: every endpoint, its versions, traffic and running A/B tests",
        "dashboard",
        html_reply(),
        query=("DashboardToken",),
        more=(
            html_reply(401, "DASHBOARD_TOKEN is set and the request does not carry it."),
            html_reply(503, "The database is unreachable."),
        ),
    ),
    Operation(
        "get",
        "/dashboard/{endpoint}",
        "dashboard_endpoint",
        "One endpoint's dashboard: versions, traffic, quality, calibration, drift, A/B tests",
        "dashboard",
        html_reply(),
        query=("DashboardToken", "VersionOrProduction", "Window"),
        more=tuple(
            html_reply(status, f"The error page: {ERRORS[status][1]}")
            for status in (400, 401, 404, 409, 503)
        ),
    ),
    Operation(
        "get",
        "/dashboard/static/{filename}",
        "dashboard_static",
        "The dashboard's stylesheet",
        "dashboard",
        file_reply("The file."),
        (404,),
    ),
    # Endpoints, versions and statuses.
    Operation(
        "get",
        "/api/v1/endpoints",
        "list_endpoints",
        "Every endpoint with its versions and their statuses",
        "endpoints and versions",
        json_reply(obj(["endpoints"], endpoints=array(ref("EndpointSummary")))),
        (503,),
    ),
    Operation(
        "get",
        "/api/v1/{endpoint}",
        "endpoint_info",
        "One endpoint: versions, statuses, input schema, model.json keys",
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
    Operation(
        "get",
        "/api/v1/{endpoint}/key/{name}",
        "metadata_key",
        "One model.json key of a version (default: the production version)",
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
    Operation(
        "get",
        "/api/v1/{endpoint}/history",
        "status_history",
        "Every status change of the endpoint's versions, oldest first",
        "endpoints and versions",
        json_reply(obj(["endpoint", "history"], endpoint=STRING, history=array(ref("HistoryRow")))),
        (404, 503),
    ),
    *(
        Operation(
            method,
            "/api/v1/{endpoint}/versions/{version}/status",
            f"change_status_{method}",
            "Move a version to testing, staging, production or archived",
            "endpoints and versions",
            json_reply(
                obj(
                    ["endpoint", "version", "status", "changed"],
                    endpoint=STRING,
                    version=STRING,
                    status=STRING,
                    changed=array(obj(["version", "from", "to"], version=STRING, to=STRING)),
                )
            ),
            (400, 404, 409, 413, 422, 503),
            json_body(ref("StatusChange")),
            admin=True,
            description="Promoting to production archives the previous production version.",
        )
        for method in ("put", "post")
    ),
    # Predictions on any endpoint.
    Operation(
        "post",
        "/api/v1/{endpoint}/predict",
        "predict",
        "Score one observation",
        "any endpoint",
        PREDICT_REPLY,
        SCORING,
        PREDICT_BODY,
        query=("VersionQuery", "StatusQuery"),
        per_endpoint=True,
        client=True,
        description=PREDICT_DESCRIPTION,
    ),
    Operation(
        "post",
        "/api/v1/{endpoint}/update",
        "update",
        "Record the true class (or value) of a stored prediction",
        "any endpoint",
        UPDATE_REPLY,
        (400, 404, 413, 422, 503),
        UPDATE_BODY,
        per_endpoint=True,
        client=True,
        description="A second update overwrites the first and sets `updated_at`.",
    ),
    Operation(
        "post",
        "/api/v1/{endpoint}/predict/batch",
        "predict_batch",
        "Score a batch (JSON rows or CSV)",
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
    Operation(
        "get",
        "/api/v1/{endpoint}/performance",
        "performance",
        "Per-version quality from ground truth",
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
    Operation(
        "get",
        "/api/v1/{endpoint}/drift",
        "drift",
        "Recent inputs of a version against its training profile (PSI per input)",
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
    Operation(
        "post",
        "/api/v1/{endpoint}/ab-tests",
        "start_test",
        "Start an A/B test between two versions",
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
    Operation(
        "get",
        "/api/v1/{endpoint}/ab-tests",
        "list_tests",
        "The endpoint's A/B tests, newest first",
        "A/B tests and shadows",
        json_reply(obj(["endpoint", "ab_tests"], endpoint=STRING, ab_tests=array(ref("AbTest")))),
        (404, 409, 503),
    ),
    Operation(
        "get",
        "/api/v1/{endpoint}/ab-tests/{test_id}",
        "show_test",
        "One A/B test: per-arm figures and the verdict",
        "A/B tests and shadows",
        json_reply(ref("AbTest")),
        (404, 409, 503),
    ),
    Operation(
        "post",
        "/api/v1/{endpoint}/ab-tests/{test_id}/stop",
        "stop_test",
        "Stop a test; promote a significant (or forced) winner",
        "A/B tests and shadows",
        json_reply(ref("AbTest")),
        (400, 404, 409, 413, 422, 503),
        json_body(ref("AbTestStop"), required=False),
        admin=True,
    ),
    Operation(
        "get",
        "/api/v1/{endpoint}/shadows",
        "list_shadows",
        "Shadow versions with their comparison, and the history of changes",
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
    Operation(
        "get",
        "/api/v1/{endpoint}/shadows/{version}",
        "show_shadow",
        "A shadow version against the answering versions on the same labelled rows",
        "A/B tests and shadows",
        json_reply(ref("Shadow")),
        (404, 503),
    ),
    Operation(
        "put",
        "/api/v1/{endpoint}/shadows/{version}",
        "enable_shadow",
        "Make a version score every request without answering",
        "A/B tests and shadows",
        json_reply(ref("ShadowChange")),
        (400, 404, 413, 422, 503),
        WHO_BODY,
        admin=True,
    ),
    Operation(
        "delete",
        "/api/v1/{endpoint}/shadows/{version}",
        "disable_shadow",
        "Stop shadowing; scores already stored stay",
        "A/B tests and shadows",
        json_reply(ref("ShadowChange")),
        (400, 404, 413, 422, 503),
        WHO_BODY,
        admin=True,
    ),
)
