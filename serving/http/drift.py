"""/api/v1/<endpoint>/drift: recent inputs of a version against its training profile."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from serving.http.context import annotate, lifecycle, registry

blueprint = Blueprint("drift", __name__, url_prefix="/api/v1/<endpoint>")


@blueprint.get("/drift")
def drift(endpoint: str) -> dict[str, Any]:
    """PSI per input of ?version= (default: the production version) over ?window= (the last
    1000 predictions by default, or a duration such as 24h)."""
    from serving.reports.drift import (  # imported at start-up: see serving.http
        model_drift,
        parse_window,
    )

    annotate(endpoint=endpoint)
    wanted = request.args.get("version") or None
    model = (
        registry().version(endpoint, wanted)
        if wanted
        else registry().resolve(endpoint, lifecycle().statuses())
    )
    annotate(model_version=model.version)
    window = parse_window(request.args.get("window"))
    return model_drift(model, window)
