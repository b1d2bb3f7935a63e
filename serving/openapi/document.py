"""Put the document together: the operations table, with each served endpoint's schemas."""

from __future__ import annotations

from typing import Any

from serving.config import Settings
from serving.openapi.components import (
    ADMIN,
    CLIENT,
    CLIENT_SCHEME,
    ERRORS,
    PATH_PARAMETERS,
    SCHEMAS,
    SECURITY_SCHEMES,
    ab_test_start,
    error_responses,
    parameters,
)
from serving.openapi.inputs import endpoint_components, generic_components
from serving.openapi.operations import MODEL, OPERATIONS, Operation, Reply
from serving.registry import Registry, version_order

DESCRIPTION = """\
Predictions from scikit-learn pipelines, one endpoint per model, with versions, A/B tests,
shadow versions, quality from ground truth and drift.

Each served endpoint has its own `/api/v1/<name>/predict`, `/update` and `/predict/batch`
paths whose request schemas are its models' real input schemas; the `/api/v1/{endpoint}/…`
paths describe the same routes for any endpoint. Every error has one JSON shape, `Error`:
`{"error": "<sentence>", "details": [{"field": ..., "problem": ...}]}`.
"""


def build(registry: Registry, settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app serving `registry`."""
    endpoints = sorted(registry.models)
    versions = sorted({v for vs in registry.models.values() for v in vs}, key=version_order)
    rows = settings.max_batch_rows
    schemas = {**SCHEMAS, **generic_components(rows), "AbTestStart": ab_test_start(versions)}
    for endpoint in endpoints:
        schemas.update(endpoint_components(endpoint, registry.models[endpoint], rows))
    default = settings.default_endpoint
    default_model = f"{default}." if default in registry.models else ""

    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        model = default_model if operation.default_endpoint else ""
        secured = settings.predict_auth
        _add(paths, operation.path, _operation(operation, model, operation.operation_id, secured))
        if operation.per_endpoint:
            for endpoint in endpoints:
                path = operation.path.replace("{endpoint}", endpoint)
                operation_id = f"{endpoint}.{operation.operation_id}"
                copy = _operation(operation, f"{endpoint}.", operation_id, secured, endpoint)
                _add(paths, path, copy)

    return {
        "openapi": "3.1.0",
        "info": {"title": "sklearn-serving", "version": "1", "description": DESCRIPTION},
        "tags": _tags(endpoints),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": error_responses(),
            "parameters": parameters(endpoints, versions),
            "securitySchemes": (
                {**SECURITY_SCHEMES, CLIENT: CLIENT_SCHEME}
                if settings.predict_auth
                else SECURITY_SCHEMES
            ),
        },
    }


def _add(paths: dict[str, dict[str, Any]], path: str, operation: tuple[str, dict]) -> None:
    method, described = operation
    if method in paths.setdefault(path, {}):
        raise ValueError(f"two operations describe {method.upper()} {path}")
    paths[path][method] = described


def _operation(
    operation: Operation,
    model: str,
    operation_id: str,
    client_auth: bool,
    endpoint: str | None = None,
) -> tuple[str, dict[str, Any]]:
    out: dict[str, Any] = {
        "operationId": operation_id,
        "summary": operation.summary,
        "tags": [endpoint if endpoint else operation.tag],
    }
    if operation.description:
        out["description"] = operation.description
    names = [n for n in _variables(operation.path) if not (endpoint and n == "endpoint")]
    params = [PATH_PARAMETERS[n] for n in names] + list(operation.query)
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
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    out["responses"] = responses
    if operation.admin:
        out["security"] = [{ADMIN: []}]
    elif operation.client and client_auth:
        out["security"] = [{CLIENT: []}, {ADMIN: []}]
    return operation.method, out


def _response(reply: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.content:
        out["content"] = reply.content
    if reply.headers:
        out["headers"] = reply.headers
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
    tags = [
        {"name": "default endpoint", "description": "The tutorial routes: DEFAULT_ENDPOINT."},
        *(
            {"name": e, "description": f"Endpoint {e!r}, with its models' schemas."}
            for e in endpoints
        ),
        {"name": "any endpoint", "description": "The same routes for any endpoint."},
    ]
    seen = {t["name"] for t in tags}
    for operation in OPERATIONS:
        if operation.tag not in seen:
            seen.add(operation.tag)
            tags.append({"name": operation.tag})
    return tags
