"""Liveness and readiness probes."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, current_app
from playhouse.pool import MaxConnectionsExceeded

from serving.errors import Unavailable
from serving.http.auth import bearer_token
from serving.http.context import registry
from serving.store.database import run_with_retry
from serving.store.migrations import MIGRATIONS, current_version

logger = logging.getLogger(__name__)

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
def health() -> dict[str, Any]:
    """The process is up and answering."""
    return {"status": "ok"}


@blueprint.get("/ready")
def ready() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Ready to serve: the database answers and at least one model is loaded.

    Anyone may probe it, so the answer says only how each part is; why (a driver error naming
    the database's host and port, model folders) goes to the log, and to the admin token.
    """
    ok, checks, why = readiness()
    answer: dict[str, Any] = {"status": "ready" if ok else "not ready", "checks": checks}
    if not ok and _admin():
        answer["detail"] = why
    return answer, 200 if ok else 503, {} if ok else dict(Unavailable.headers)


def readiness() -> tuple[bool, dict[str, Any], dict[str, Any]]:
    """Whether the database answers at the latest schema and a model is loaded; each part's
    state; and why a part is not ready (logged here, shown only to the admin)."""
    checks: dict[str, Any] = {"models_loaded": len(registry())}
    why: dict[str, Any] = {}
    if registry().broken:
        checks["broken_models"] = [
            {"endpoint": b["endpoint"], "version": b["version"]} for b in registry().broken
        ]
        why["broken_models"] = registry().broken
    try:
        version, latest = run_with_retry(current_version), MIGRATIONS[-1][0]
        checks["database"] = (
            "ok"
            if version == latest
            else (f"schema at version {version}, needs {latest}: run `flask --app app migrate`")
        )
    except Unavailable as exc:
        busy = isinstance(exc.__cause__, MaxConnectionsExceeded)
        checks["database"] = "busy" if busy else "unreachable"
        why["database"] = str(exc.__cause__ or exc).strip().splitlines()[:1]
    ok = checks["database"] == "ok" and checks["models_loaded"] > 0
    if not ok:
        logger.warning("not ready", extra={"checks": checks, **why})
    return ok, checks, why


def _admin() -> bool:
    """Whether the caller sent the admin token (no token configured: nobody is)."""
    token = current_app.config["SETTINGS"].admin_token
    given = bearer_token()
    return bool(token and given) and hmac.compare_digest(given.encode(), token.encode())
