"""/metrics: Prometheus metrics, added up over every gunicorn worker."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from serving import metrics

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
def scrape() -> Response:
    """Every worker's counts and this process's models, in the format Prometheus asks for."""
    body, content_type = metrics.exposition(current_app, request.headers.get("Accept"))
    return Response(body, content_type=content_type)
