"""/api/v1: endpoints, their versions and statuses, model metadata, status changes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from serving.decisions.lifecycle import check_status
from serving.errors import NotFound, detail
from serving.http.auth import require_admin
from serving.http.context import body, lifecycle, registry
from serving.model.folders import version_order
from serving.protocol.payloads import MAX_BY_LENGTH, check_text, parse_object

blueprint = Blueprint("endpoints", __name__, url_prefix="/api/v1")


@blueprint.get("/endpoints")
def list_endpoints() -> dict[str, Any]:
    """Every endpoint with its versions and their statuses."""
    return {"endpoints": registry().describe(lifecycle().statuses())}


@blueprint.get("/<endpoint>")
def endpoint_info(endpoint: str) -> dict[str, Any]:
    """One endpoint: versions, statuses, input schema, metadata keys."""
    versions = registry().endpoint(endpoint)
    statuses = lifecycle().statuses()
    described = []
    for name in sorted(versions, key=version_order):
        model = versions[name]
        described.append(
            {
                **model.info(),
                "status": statuses.get((endpoint, name)),
                "metrics": model.metadata.get("metrics"),
                "out_of_range": "reject" if model.rejects_surprises else "warn",
                "metadata_keys": sorted(model.metadata),
            }
        )
    broken = [b for b in registry().broken if b["endpoint"] == endpoint]
    return {"endpoint": endpoint, "versions": described, "broken_versions": broken}


@blueprint.get("/<endpoint>/key/<name>")
def metadata_key(endpoint: str, name: str) -> dict[str, Any]:
    """One model.json key of a version (?version=, default: the production version)."""
    model = registry().resolve(
        endpoint, lifecycle().statuses(), version=request.args.get("version")
    )
    if name not in model.metadata:
        raise NotFound(
            f"model.json of {endpoint!r} version {model.version!r} has no key {name!r}.",
            [detail("name", f"unknown; known: {sorted(model.metadata)}")],
        )
    return {
        "endpoint": endpoint,
        "version": model.version,
        "key": name,
        "value": model.metadata[name],
    }


@blueprint.get("/<endpoint>/history")
def status_history(endpoint: str) -> dict[str, Any]:
    """Every status change of the endpoint's versions, oldest first."""
    registry().endpoint(endpoint)
    return {"endpoint": endpoint, "history": lifecycle().history(endpoint)}


@blueprint.route("/<endpoint>/versions/<version>/status", methods=["PUT", "POST"])
def change_status(endpoint: str, version: str) -> dict[str, Any]:
    """Admin: move a version to testing, staging, production or archived."""
    require_admin()
    registry().version(endpoint, version)
    payload = parse_object(body())
    status = check_status(payload.get("status"))
    # The history's column holds 200 characters: PostgreSQL refuses more (a 500 otherwise).
    by = check_text(payload.get("by", "admin-api"), "by", MAX_BY_LENGTH)
    reason = check_text(payload.get("reason"), "reason")
    changes = lifecycle().change(endpoint, version, status, by or "admin-api", reason)
    return {
        "endpoint": endpoint,
        "version": version,
        "status": status,
        "changed": [{"version": c.version, "from": c.previous, "to": c.status} for c in changes],
    }
