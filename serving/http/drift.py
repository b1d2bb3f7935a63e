"""/api/v1/<endpoint>/drift: recent inputs of a version against its training profile."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from serving.drift import drift_report, parse_window, recent_observations
from serving.errors import NotFound, detail
from serving.http.context import annotate, lifecycle, registry
from serving.registry import version_order

blueprint = Blueprint("drift", __name__, url_prefix="/api/v1/<endpoint>")


@blueprint.get("/drift")
def drift(endpoint: str) -> dict[str, Any]:
    """PSI per input of ?version= (default: the production version) over ?window= (the last
    1000 predictions by default, or a duration such as 24h)."""
    annotate(endpoint=endpoint)
    versions = registry().endpoint(endpoint)
    wanted = request.args.get("version") or None
    if wanted is None:
        model = registry().resolve(endpoint, lifecycle().statuses())
    elif wanted in versions:
        model = versions[wanted]
    else:
        raise NotFound(
            f"Endpoint {endpoint!r} has no version {wanted!r}.",
            [detail("version", f"unknown; known: {sorted(versions, key=version_order)}")],
        )
    annotate(model_version=model.version)
    window = parse_window(request.args.get("window"))
    recent = recent_observations(endpoint, model.version, window)
    return drift_report(
        endpoint, model.version, model.metadata.get("profile"), model.columns, window, recent
    )
