"""Put the document together: every rule of the app's URL map, described by its view's
docstring and its entry in the operations table, with each served endpoint's schemas."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

from werkzeug.routing import Map

from serving.config import Settings
from serving.model.folders import version_order
from serving.model.registry import Registry
from serving.openapi import inference_v2
from serving.openapi.components import (
    ADMIN,
    CLIENT,
    CLIENT_SCHEME,
    ERRORS,
    HEADERS,
    PATH_PARAMETERS,
    REQUEST_ID,
    SCHEMAS,
    SECURITY_SCHEMES,
    ab_test_start,
    error_responses,
    parameters,
)
from serving.openapi.inputs import endpoint_components, generic_components
from serving.openapi.operations import MODEL, OPERATIONS, TAGS, Operation, Reply

DESCRIPTION = """\
Predictions from scikit-learn pipelines, one endpoint per model, with versions, A/B tests,
shadow versions, quality from ground truth and drift.

Each served endpoint has its own `/api/v1/<name>/predict`, `/update` and `/predict/batch`
paths whose request schemas are its models' real input schemas; the `/api/v1/{endpoint}/…`
paths describe the same routes for any endpoint. Every error has one JSON shape, `Error`:
`{"error": "<sentence>", "details": [{"field": ..., "problem": ...}]}`, except on the
Open Inference Protocol's `/v2` routes, whose errors are `{"error": "<sentence>"}`
(`InferenceError`) as that protocol has them.
"""


# Described only when a route has no entry in OPERATIONS (tests/test_openapi.py fails then).
UNDECLARED = Operation("other", Reply(description="Not described yet."))


def build(
    registry: Registry,
    settings: Settings,
    url_map: Map,
    view_functions: Mapping[str, Callable[..., Any]],
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app serving `registry` with these routes."""
    endpoints = sorted(registry.models)
    versions = sorted({v for vs in registry.models.values() for v in vs}, key=version_order)
    rows = settings.http_batch_max_rows
    schemas = {
        **SCHEMAS,
        **inference_v2.SCHEMAS,
        **generic_components(rows),
        "AbTestStart": ab_test_start(versions),
    }
    for endpoint in endpoints:
        schemas.update(endpoint_components(endpoint, registry.models[endpoint], rows))
    default = settings.default_endpoint
    default_model = f"{default}." if default in registry.models else ""

    paths: dict[str, dict[str, Any]] = {}
    secured = settings.predict_auth
    for rule in url_map.iter_rules():
        operation = OPERATIONS.get(rule.endpoint, UNDECLARED)
        view = view_functions[rule.endpoint]
        path = _path(rule.rule)
        methods = sorted(m.lower() for m in (rule.methods or set()) - {"HEAD", "OPTIONS"})
        summary, description = _docs(view, operation)
        for method in methods:
            operation_id = operation.operation_id or view.__name__
            if len(methods) > 1:
                operation_id = f"{operation_id}_{method}"
            model = default_model if operation.default_endpoint else ""
            described = _operation(operation, summary, description, path, model, secured)
            _add(paths, path, method, {"operationId": operation_id, **described})
            if operation.per_endpoint:
                for endpoint in endpoints:
                    copy = _operation(
                        operation, summary, description, path, f"{endpoint}.", secured, endpoint
                    )
                    _add(
                        paths,
                        path.replace("{endpoint}", endpoint),
                        method,
                        {"operationId": f"{endpoint}.{operation_id}", **copy},
                    )

    return {
        "openapi": "3.1.0",
        "info": {"title": "sklearn-serving", "version": "1", "description": DESCRIPTION},
        "tags": _tags(endpoints),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": error_responses() | inference_v2.error_responses(_v2_errors(secured)),
            "parameters": parameters(endpoints, versions),
            "headers": HEADERS,
            "securitySchemes": (
                {**SECURITY_SCHEMES, CLIENT: CLIENT_SCHEME}
                if settings.predict_auth
                else SECURITY_SCHEMES
            ),
        },
    }


def _v2_errors(client_auth: bool) -> set[int]:
    """The error statuses the v2 operations list (401 and 403 with client authentication)."""
    listed = {s for o in OPERATIONS.values() if o.short_errors for s in o.errors}
    return listed | ({401, 403} if client_auth else set())


def _path(rule: str) -> str:
    """An OpenAPI path from a Werkzeug rule: `<int:test_id>` becomes `{test_id}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _docs(view: Callable[..., Any], operation: Operation) -> tuple[str, str]:
    """The summary (the docstring's first paragraph, without an `Admin:` prefix, which the
    security requirement says) and the description (the rest, then the table's words)."""
    paragraphs = [" ".join(p.split()) for p in (inspect.getdoc(view) or "").split("\n\n")]
    summary = operation.summary or paragraphs[0].removeprefix("Admin: ").rstrip(".")
    summary = summary[:1].upper() + summary[1:]
    parts = [] if operation.summary else [p for p in paragraphs[1:] if p]
    if operation.description:
        parts.append(operation.description)
    return summary, "\n\n".join(parts)


def _add(paths: dict[str, dict[str, Any]], path: str, method: str, described: dict) -> None:
    if method in paths.setdefault(path, {}):
        raise ValueError(f"two operations describe {method.upper()} {path}")
    paths[path][method] = described


def _operation(
    operation: Operation,
    summary: str,
    description: str,
    path: str,
    model: str,
    client_auth: bool,
    endpoint: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "tags": [endpoint if endpoint else operation.tag]}
    if description:
        out["description"] = description
    names = [n for n in _variables(path) if not (endpoint and n == "endpoint")]
    params = [operation.path_parameters.get(n) or PATH_PARAMETERS[n] for n in names]
    params += list(operation.query)
    if params:
        out["parameters"] = [{"$ref": f"#/components/parameters/{p}"} for p in params]
    if operation.body is not None:
        out["requestBody"] = _models(
            {
                "required": operation.body.required,
                "content": operation.body.content,
                **(
                    {"description": operation.body.description}
                    if operation.body.description
                    else {}
                ),
            },
            model,
        )
    responses: dict[str, Any] = {}
    for reply in (operation.reply, *operation.more):
        responses[str(reply.status)] = _response(reply)
    secured = operation.admin or (operation.client and client_auth)
    statuses = set(operation.errors) | ({401, 403} if secured else set())
    prefix = inference_v2.PREFIX if operation.short_errors else ""
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/{prefix}{ERRORS[status][0]}"}
    out["responses"] = responses
    if operation.admin:
        out["security"] = [{ADMIN: []}]
    elif operation.client and client_auth:
        out["security"] = [{CLIENT: []}, {ADMIN: []}]
    else:
        # Public: no credentials needed (the dashboard's optional token is a query parameter).
        out["security"] = []
    return out


def _response(reply: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description, "headers": REQUEST_ID | reply.headers}
    if reply.content:
        out["content"] = reply.content
    if reply.links:
        out["links"] = reply.links
    return out


def _models(value: Any, model: str) -> Any:
    """Point the MODEL references at the given model's schemas."""
    if isinstance(value, dict):
        return {
            k: v.replace(MODEL, model) if k == "$ref" else _models(v, model)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_models(v, model) for v in value]
    return value


def _variables(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _tags(endpoints: list[str]) -> list[dict[str, str]]:
    return [
        {"name": "default endpoint", "description": TAGS["default endpoint"]},
        *(
            {"name": e, "description": f"Endpoint {e!r}, with its models' schemas."}
            for e in endpoints
        ),
        *(
            {"name": name, "description": text}
            for name, text in TAGS.items()
            if name != "default endpoint"
        ),
    ]
