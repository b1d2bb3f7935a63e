"""Shared pieces of the document: the one error shape, the answers many operations give, the
parameters, and the admin security scheme."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from serving.decisions.lifecycle import STATUSES
from serving.protocol.payloads import MAX_ID_LENGTH
from serving.reports.drift import DEFAULT_WINDOW_ROWS, MAX_WINDOW_ROWS

ADMIN = "adminToken"
CLIENT = "clientToken"

# A time bound in the query: ISO 8601, or empty for no bound (as a form leaves it).
INSTANT = {"type": "string", "anyOf": [{"format": "date-time"}, {"maxLength": 0}]}


def ref(name: str) -> dict[str, str]:
    """A reference to a schema under components."""
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: dict[str, Any], **more: Any) -> dict[str, Any]:
    """An array schema."""
    return {"type": "array", "items": items, **more}


def obj(required: Sequence[str] = (), **properties: Any) -> dict[str, Any]:
    """An object schema; keys it does not list may appear (answers grow, never shrink)."""
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    return out


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
ANY: dict[str, Any] = {}
NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_NUMBER = {"type": ["number", "null"]}
NULLABLE_INTEGER = {"type": ["integer", "null"]}
TIME = {"type": ["string", "null"], "description": "ISO 8601, UTC"}
# No NUL character: PostgreSQL cannot store one in a text column, so the service refuses it.
NO_NUL = "^[^\\u0000]*$"
# Who made a change, or why: null or absent means the default (admin-api, no reason).
SHORT_TEXT = {"type": ["string", "null"], "maxLength": 200, "pattern": NO_NUL}
# A metric with its 95% interval, null while there is no labelled data, or null with a
# `reason` when it cannot be measured (a stored truth or prediction beyond the range the
# sums can hold).
ESTIMATE = obj(
    value=NULLABLE_NUMBER,
    low=NULLABLE_NUMBER,
    high=NULLABLE_NUMBER,
    reason=STRING | {"description": "Why the metric is null, when it could not be measured."},
)

# The JSON body of every error (serving/errors.py renders them all with one handler).
ERROR = {
    "type": "object",
    "required": ["error", "details"],
    "properties": {
        "error": {"type": "string", "description": "One sentence a person can act on."},
        "details": array(ref("Detail")),
    },
    "additionalProperties": False,
}
DETAIL = {
    "type": "object",
    "required": ["field", "problem"],
    "properties": {
        "field": {"type": "string", "examples": ["observation.Age"]},
        "problem": {"type": "string", "examples": ["expected a number, got 'abc'"]},
    },
    "additionalProperties": False,
}

# What Python's str.strip() removes (str.isspace): an id made only of these is refused. Spelt
# out because JSON Schema's \s (ECMA-262) differs from Python's, and its \S matches a NUL.
WHITE_SPACE = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x3001)) if c.isspace())
# Not empty, not only white space, no NUL character.
ID_TEXT = f"^[^\\u0000]*[^\\u0000{WHITE_SPACE}][^\\u0000]*$"

OBSERVATION_ID = {
    "description": (
        "Your observation id, unique per endpoint and an idempotency key: the same id with "
        "the same observation replays the stored answer, with a different one it is 409. "
        '`7` and `"7"` name the same observation.'
    ),
    "anyOf": [
        {"type": "integer"},
        {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": ID_TEXT},
    ],
}

PREDICTION = obj(
    [
        "id",
        "observation_id",
        "observation",
        "proba",
        "prediction",
        "true_class",
        "endpoint",
        "model_version",
        "created_at",
        "updated_at",
    ],
    id=NULLABLE_INTEGER
    | {
        "description": "The stored row's number, kept for the tutorial's clients: not your "
        "id, which is observation_id."
    },
    observation_id={"type": ["integer", "string"], "description": "Your id, as you sent it."},
    observation={"type": "object", "description": "The validated observation the model saw."},
    proba=NULLABLE_NUMBER
    | {"description": "Probability of the positive class (of the predicted one if multi-class)."},
    prediction={"description": "The predicted label, or the value of a regression."},
    true_class={"description": "The ground truth sent to update, or null."},
    endpoint=STRING,
    model_version=STRING,
    created_at=TIME,
    updated_at=TIME,
    probabilities={
        "type": "object",
        "additionalProperties": NUMBER,
        "description": "Multi-class models: every label's probability.",
    },
    ab_test=INTEGER | {"description": "The A/B test that chose the version, when one did."},
    arm={"enum": ["A", "B"]},
    warnings=array(ref("Detail"), description="Ignored fields, values training never saw."),
)

# /update's answer: the stored prediction with its truth. The observation goes back only to a
# caller who authenticated (PREDICT_AUTH on): while it is off, anyone may update any id.
UPDATED = {
    **PREDICTION,
    "required": [name for name in PREDICTION["required"] if name != "observation"],
    "properties": {
        **PREDICTION["properties"],
        "observation": {
            "type": "object",
            "description": "The stored observation; only when PREDICT_AUTH is on.",
        },
    },
}

# One schema per kind of row, each a plain object: a generated client tells them apart by
# their required keys (an allOf with a const inside an anyOf left batch answers untyped).
SCORED_ROW = {
    **PREDICTION,
    "description": "A row's /predict answer, with status 200.",
    "required": [*PREDICTION["required"], "status", "warnings"],
    "properties": {
        **PREDICTION["properties"],
        "status": {"type": "integer", "enum": [200], "description": "Always 200."},
    },
}
REFUSED_ROW = obj(
    ["observation_id", "status", "error", "details"],
    # Untyped: a refused row's id is whatever was sent, a list or an object too.
    observation_id={"description": "The row's id as sent (null when absent)."},
    status=INTEGER | {"description": "The status /predict would have answered."},
    error=STRING,
    details=array(ref("Detail")),
) | {"description": "A row the model refused: its error with its status."}
BATCH_ROW = {
    "description": "A row's /predict answer with status 200, or its error with its status.",
    "anyOf": [ref("ScoredRow"), ref("RefusedRow")],
}
BATCH_ANSWER = obj(
    ["endpoint", "counts", "warnings", "results"],
    endpoint=STRING,
    counts={"type": "object", "additionalProperties": INTEGER},
    warnings=array(ref("Detail")),
    results=array(ref("BatchRow")),
)

STATUS_CHANGE = obj(
    ["status"],
    status={"enum": list(STATUSES)},
    by=SHORT_TEXT | {"description": "Who changes it (default admin-api)."},
    reason={"type": ["string", "null"], "pattern": NO_NUL},
)
WHO = obj(
    by=SHORT_TEXT | {"description": "Who (default admin-api)."},
    reason=SHORT_TEXT,
)
AB_TEST_START = obj(
    ["version_a", "version_b"],
    version_a=STRING | {"description": "A version of the endpoint."},
    version_b=STRING | {"description": "Another version of the endpoint."},
    split={
        "type": "number",
        "exclusiveMinimum": 0,
        "exclusiveMaximum": 1,
        "default": 0.5,
        "description": "The share of traffic sent to version B.",
    },
    name=SHORT_TEXT,
    by=SHORT_TEXT,
)
AB_TEST_STOP = obj(
    winner={"enum": ["A", "B", None], "description": "Force a winner."},
    promote={"type": "boolean", "default": True},
    by=SHORT_TEXT,
    reason=SHORT_TEXT,
)
RETRAIN_REQUEST = obj(
    holdout_fraction={
        "type": "number",
        "exclusiveMinimum": 0,
        "exclusiveMaximum": 1,
        "description": "Share of the newest labelled rows held out for the gate (default 0.2).",
    },
    holdout_rows={
        "type": "integer",
        "minimum": 1,
        "description": "Or: how many of the newest labelled rows to hold out.",
    },
    min_labelled={"type": "integer", "minimum": 2, "default": 500},
    include_training_data={"type": "boolean", "default": False},
    then={
        "type": "string",
        "pattern": "^(shadow|none|ab:[0-9.eE+-]+)$",
        "default": "shadow",
        "description": "After registering: shadow, none, or ab:<share of traffic to the "
        "candidate>.",
    },
    since=INSTANT,
    until=INSTANT,
    by=SHORT_TEXT,
)
RETRAIN_REPORT = obj(
    ["outcome", "endpoint", "parent_version", "version", "message", "lineage"],
    outcome={"enum": ["registered", "already registered"]},
    endpoint=STRING,
    parent_version=STRING,
    version=STRING,
    message=STRING,
    gate={"type": ["object", "null"]},
    lineage={"type": "object"},
    then={"type": ["object", "null"]},
)
ARM = obj(
    ["version", "requests", "labelled", "metrics"],
    version=STRING,
    requests=INTEGER,
    labelled=INTEGER,
    metrics={"type": "object", "additionalProperties": ref("Estimate")},
)
AB_TEST = obj(
    ["id", "endpoint", "state", "split", "arms", "verdict"],
    id=INTEGER,
    endpoint=STRING,
    name=NULLABLE_STRING,
    state={"enum": ["running", "stopped"]},
    split=NUMBER,
    started_at=TIME,
    started_by=NULLABLE_STRING,
    ended_at=TIME,
    ended_by=NULLABLE_STRING,
    arms=obj(["A", "B"], A=ref("Arm"), B=ref("Arm")),
    verdict=obj(["result"], result=STRING),
    winner=NULLABLE_STRING,
)
SHADOW_CHANGE = obj(
    ["endpoint", "version", "enabled"], endpoint=STRING, version=STRING, enabled=BOOLEAN
)
SHADOW = obj(
    ["endpoint", "version", "enabled", "scored", "labelled", "shadow", "answering", "verdict"],
    endpoint=STRING,
    version=STRING,
    enabled=BOOLEAN,
    scored=INTEGER,
    labelled=INTEGER,
    answered_by={"type": "object", "additionalProperties": INTEGER},
    shadow=obj(["metrics"], metrics={"type": "object", "additionalProperties": ref("Estimate")}),
    answering=obj(["metrics"], metrics={"type": "object", "additionalProperties": ref("Estimate")}),
    deltas={"type": "object", "additionalProperties": NULLABLE_NUMBER},
    verdict=obj(["result"], result=STRING),
)
HISTORY_ROW = obj(
    ["endpoint", "version", "from", "to", "by", "at"],
    endpoint=STRING,
    version=STRING,
    to={"enum": list(STATUSES)},
    by=STRING,
    reason=NULLABLE_STRING,
    at=STRING,
    **{"from": {"enum": [*STATUSES, None]}},
)
VERSION_INFO = obj(
    ["endpoint", "version", "task", "inputs", "status"],
    endpoint=STRING,
    version=STRING,
    task=STRING,
    classes=array(
        {"type": ["string", "integer", "number", "boolean"]},
        description="The model's labels (classifiers only).",
    ),
    positive_class={},
    inputs=array({"type": "object"}, description="The input schema, field by field."),
    status={"enum": [*STATUSES, None]},
    metrics={},
    out_of_range={"enum": ["warn", "reject"]},
    metadata_keys=array(STRING),
)
READY = obj(
    ["status", "checks"],
    status={"enum": ["ready", "not ready"]},
    checks=obj(
        ["models_loaded", "database"],
        models_loaded=INTEGER,
        database={
            "type": "string",
            "description": "ok, unreachable, busy, or the migration the schema needs",
        },
        broken_models=array({"type": "object"}),
    ),
    detail={
        "type": "object",
        "description": "Why not ready (errors, model folders): only with the admin token.",
    },
)
PUBLISHED_FILE = obj(["size", "sha256"], size=INTEGER, sha256=STRING)
PUBLISHED_VERSION = obj(
    ["endpoint", "version", "published_by", "published_at", "files", "status", "task"],
    endpoint=STRING,
    version=STRING,
    published_by=STRING,
    published_at=TIME,
    files={"type": "object", "additionalProperties": PUBLISHED_FILE},
    status={"enum": list(STATUSES)},
    task=STRING,
    fast_path={"type": "object"},
)
ENDPOINT_SUMMARY = obj(
    ["endpoint", "default", "versions"],
    endpoint=STRING,
    default=BOOLEAN,
    versions=array(
        obj(
            ["version", "status", "task"],
            version=STRING,
            status={"enum": [*STATUSES, None]},
            task=STRING,
        )
    ),
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": ERROR,
    "Detail": DETAIL,
    "ObservationId": OBSERVATION_ID,
    "Prediction": PREDICTION,
    "Updated": UPDATED,
    "BatchRow": BATCH_ROW,
    "ScoredRow": SCORED_ROW,
    "RefusedRow": REFUSED_ROW,
    "BatchAnswer": BATCH_ANSWER,
    "StatusChange": STATUS_CHANGE,
    "Who": WHO,
    "AbTestStart": AB_TEST_START,
    "AbTestStop": AB_TEST_STOP,
    "RetrainRequest": RETRAIN_REQUEST,
    "RetrainReport": RETRAIN_REPORT,
    "Estimate": ESTIMATE,
    "Arm": ARM,
    "AbTest": AB_TEST,
    "ShadowChange": SHADOW_CHANGE,
    "Shadow": SHADOW,
    "HistoryRow": HISTORY_ROW,
    "VersionInfo": VERSION_INFO,
    "Ready": READY,
    "EndpointSummary": ENDPOINT_SUMMARY,
    "PublishedVersion": PUBLISHED_VERSION,
}

# Every error status an operation may list, and what it means there.
ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "BadRequest",
        "Malformed body: not JSON, not UTF-8, nested too deeply, or not the "
        "expected kind of value; or a malformed query parameter.",
    ),
    401: ("Unauthorized", "No `Authorization: Bearer <token>` header."),
    403: (
        "Forbidden",
        "Admin operations: wrong admin token, or ADMIN_TOKEN is not set on this server. "
        "Prediction routes: not ADMIN_TOKEN, PREDICT_TOKEN or an active API key, or a "
        "revoked key.",
    ),
    404: (
        "NotFound",
        "Unknown endpoint, version, test, key or observation id, or no version "
        "in the status asked for.",
    ),
    409: (
        "Conflict",
        "The id is stored with a different observation; the version is "
        "archived; several versions share the status asked for; a test is already running "
        "or stopped; the version to publish exists already.",
    ),
    413: (
        "PayloadTooLarge",
        "The body is larger than MAX_BODY_BYTES (batches: MAX_BATCH_BODY_BYTES; published "
        "model versions: MAX_MODEL_UPLOAD_BYTES), "
        "however it is framed; or the batch has more than MAX_BATCH_ROWS rows or "
        "MAX_BATCH_COLUMNS CSV columns, or needed more than BATCH_CPU_SECONDS of CPU "
        "before it could be stored. Nothing was stored.",
    ),
    422: (
        "InvalidInput",
        "Valid JSON whose content is not: a missing field, a wrong type, "
        "Infinity, a bad id, an unknown class or status. `details` names every field.",
    ),
    503: (
        "Unavailable",
        "The database is unreachable, busy or too slow: retry with the same id after the "
        "`Retry-After` header's seconds.",
    ),
}


def ab_test_start(versions: Sequence[str]) -> dict[str, Any]:
    """AbTestStart with the versions this server loaded: any other name is refused."""
    properties = AB_TEST_START["properties"]
    return {
        **AB_TEST_START,
        "properties": {
            **properties,
            "version_a": properties["version_a"] | {"enum": list(versions)},
            "version_b": properties["version_b"] | {"enum": list(versions)},
        },
    }


# An endpoint's or version's name (serving.model.registry): in URLs and folder names.
PLAIN_NAME = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"

# Response headers: every answer carries X-Request-ID, every 503 Retry-After.
HEADERS: dict[str, dict[str, Any]] = {
    "RequestId": {
        "description": "The request's id: the caller's `X-Request-ID` when it is a plain token "
        "(letters, digits and `._:-`, at most 128), else a new one. Log lines carry it too.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    },
    "RetryAfter": {
        "description": "Seconds to wait before retrying (with the same id: nothing was stored).",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
}
REQUEST_ID = {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}


def error_responses(
    schema: str = "Error", prefix: str = "", statuses: Collection[int] | None = None
) -> dict[str, dict[str, Any]]:
    """One response component per error status (those in `statuses`, or all), named
    `prefix` + the status's name, each with the `schema` body."""
    return {
        f"{prefix}{name}": {
            "description": description,
            "headers": REQUEST_ID
            | (
                {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
                if status == 503
                else {}
            ),
            "content": {"application/json": {"schema": ref(schema)}},
        }
        for status, (name, description) in ERRORS.items()
        if statuses is None or status in statuses
    }


def parameters(endpoints: Sequence[str], versions: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Path and query parameters. Endpoints and versions are the ones this server loaded: any
    other name is a 404, so the enums are exactly what the server serves."""
    return {
        "Endpoint": {
            "name": "endpoint",
            "in": "path",
            "required": True,
            "description": "An endpoint this server serves.",
            "schema": {"type": "string", "enum": list(endpoints)},
        },
        # The dashboard's route names its variable `name`.
        "DashboardEndpoint": {
            "name": "name",
            "in": "path",
            "required": True,
            "description": "An endpoint this server serves.",
            "schema": {"type": "string", "enum": list(endpoints)},
        },
        "Version": {
            "name": "version",
            "in": "path",
            "required": True,
            "description": "A version of the endpoint.",
            "schema": {"type": "string", "enum": list(versions)},
        },
        # Publishing names a version (of any endpoint) that does not exist yet.
        "NewEndpoint": {
            "name": "endpoint",
            "in": "path",
            "required": True,
            "description": "The endpoint to publish to: one this server serves, or a new one.",
            "schema": {"type": "string", "pattern": PLAIN_NAME},
        },
        "NewVersion": {
            "name": "version",
            "in": "path",
            "required": True,
            "description": "The version to publish: a name no folder, published version or "
            "status history of the endpoint has.",
            "schema": {"type": "string", "pattern": PLAIN_NAME},
        },
        "TestId": {
            "name": "test_id",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        },
        "MetadataKey": {
            "name": "name",
            "in": "path",
            "required": True,
            "description": "A key of the version's model.json.",
            "schema": {"type": "string", "pattern": r"^[^/]+$"},
        },
        "VersionOrProduction": {
            "name": "version",
            "in": "query",
            "description": "This version; absent or empty: the production version.",
            "schema": {"type": "string", "enum": [*versions, ""]},
        },
        "VersionQuery": {
            "name": "version",
            "in": "query",
            "description": "This version (wins over `status`); empty is the same as absent.",
            "schema": {"type": "string", "enum": [*versions, ""]},
        },
        "StatusQuery": {
            "name": "status",
            "in": "query",
            "description": "The version in this status (default production); empty is the same "
            "as absent.",
            "schema": {"type": "string", "enum": [*STATUSES, ""]},
        },
        "Since": {
            "name": "since",
            "in": "query",
            "description": "Predictions made at or after (ISO 8601; UTC without an offset).",
            "schema": INSTANT | {"examples": ["2026-11-24T00:00:00Z"]},
        },
        "Until": {
            "name": "until",
            "in": "query",
            "description": "Predictions made before (ISO 8601).",
            "schema": INSTANT | {"examples": ["2026-11-25T00:00:00Z"]},
        },
        "File": {
            "name": "filename",
            "in": "path",
            "required": True,
            "description": "A file's path under the folder the route serves.",
            "schema": {"type": "string", "examples": ["swagger-ui.css", "dashboard.css"]},
        },
        "DashboardToken": {
            "name": "token",
            "in": "query",
            "description": "DASHBOARD_TOKEN, when the server sets one (or send it as "
            "`Authorization: Bearer`); links on the page carry it along.",
            "schema": {"type": "string"},
        },
        "Window": {
            "name": "window",
            "in": "query",
            "description": f"The last N predictions (1 to {MAX_WINDOW_ROWS}, default "
            f"{DEFAULT_WINDOW_ROWS}) or a duration such as 90s, 30m, 24h or 7d.",
            "schema": {"type": "string", "examples": ["1000", "24h"]},
        },
    }


# The parameter component each path template variable uses.
PATH_PARAMETERS = {
    "endpoint": "Endpoint",
    "version": "Version",
    "test_id": "TestId",
    "name": "MetadataKey",
    "filename": "File",
}

# Listed only when PREDICT_AUTH is on; prediction routes then also accept ADMIN_TOKEN.
CLIENT_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "`Authorization: Bearer <API key>` (from `flask keys create NAME`) or "
    "`Bearer $PREDICT_TOKEN`, on /predict, /update and /predict/batch when PREDICT_AUTH is on.",
}

SECURITY_SCHEMES = {
    ADMIN: {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer $ADMIN_TOKEN`. Without ADMIN_TOKEN set on the "
        "server, admin operations are always 403.",
    }
}
