"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from serving.database import CONNECTION_ERRORS, discard_connections
from serving.http.context import registry
from serving.migrations import MIGRATIONS, current_version

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
def health() -> dict[str, Any]:
    """The process is up and answering."""
    return {"status": "ok"}


@blueprint.get("/ready")
def ready() -> tuple[dict[str, Any], int]:
    """Ready to serve: the database answers and at least one model is loaded."""
    checks: dict[str, Any] = {"models_loaded": len(registry())}
    if registry().broken:
        checks["broken_models"] = registry().broken
    try:
        version, latest = current_version(), MIGRATIONS[-1][0]
        checks["database"] = (
            "ok"
            if version == latest
            else (f"schema at version {version}, needs {latest}: run `flask --app app migrate`")
        )
    except CONNECTION_ERRORS as exc:
        discard_connections()
        checks["database"] = f"unreachable: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    ok = checks["database"] == "ok" and checks["models_loaded"] > 0
    return {"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503
