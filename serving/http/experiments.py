"""/api/v1/<endpoint>/ab-tests and /shadows: start, watch and stop A/B tests; shadow versions."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from serving.http.auth import require_admin
from serving.http.context import body, experiments, registry, shadows
from serving.protocol.payloads import MAX_BY_LENGTH, check_text, parse_object

blueprint = Blueprint("experiments", __name__, url_prefix="/api/v1/<endpoint>")


@blueprint.post("/ab-tests")
def start_test(endpoint: str) -> tuple[dict[str, Any], int]:
    """Admin: start an A/B test, `{"version_a", "version_b", "split": share to B, "name"}`."""
    require_admin()
    payload = parse_object(body())
    test = experiments().start(
        endpoint,
        payload.get("version_a"),
        payload.get("version_b"),
        payload.get("split", 0.5),
        _text(payload, "name"),
        _text(payload, "by") or "admin-api",
    )
    return test, 201


@blueprint.get("/ab-tests")
def list_tests(endpoint: str) -> dict[str, Any]:
    """The endpoint's A/B tests, newest first, each with its per-arm figures and verdict."""
    registry().endpoint(endpoint)
    return {"endpoint": endpoint, "ab_tests": experiments().list(endpoint)}


@blueprint.get("/ab-tests/<int:test_id>")
def show_test(endpoint: str, test_id: int) -> dict[str, Any]:
    """One A/B test: per arm requests, labelled rows, metrics with intervals; the verdict."""
    return experiments().describe(experiments().find(endpoint, test_id))


@blueprint.post("/ab-tests/<int:test_id>/stop")
def stop_test(endpoint: str, test_id: int) -> dict[str, Any]:
    """Admin: stop the test, store its summary, promote a significant (or forced) winner."""
    require_admin()
    payload = _optional_object()
    return experiments().stop(
        endpoint,
        test_id,
        winner=payload.get("winner"),
        promote=payload.get("promote", True),
        by=_text(payload, "by") or "admin-api",
        reason=_text(payload, "reason"),
    )


@blueprint.get("/shadows")
def list_shadows(endpoint: str) -> dict[str, Any]:
    """The endpoint's shadow versions with their comparison, and the history of changes."""
    registry().endpoint(endpoint)
    return {
        "endpoint": endpoint,
        "shadows": [shadows().compare(endpoint, v) for v in shadows().versions(endpoint)],
        "history": shadows().history(endpoint),
    }


@blueprint.get("/shadows/<version>")
def show_shadow(endpoint: str, version: str) -> dict[str, Any]:
    """A shadow version against the answering versions on the same labelled rows."""
    return shadows().compare(endpoint, version)


@blueprint.put("/shadows/<version>")
def enable_shadow(endpoint: str, version: str) -> dict[str, Any]:
    """Admin: make a version score every request of its endpoint without answering."""
    return _set_shadow(endpoint, version, True)


@blueprint.delete("/shadows/<version>")
def disable_shadow(endpoint: str, version: str) -> dict[str, Any]:
    """Admin: stop shadowing; scores already stored stay for comparison."""
    return _set_shadow(endpoint, version, False)


def _set_shadow(endpoint: str, version: str, enabled: bool) -> dict[str, Any]:
    require_admin()
    payload = _optional_object()
    by, reason = _text(payload, "by") or "admin-api", _text(payload, "reason")
    return shadows().set(endpoint, version, enabled, by, reason)


def _optional_object() -> dict[str, Any]:
    """The JSON object body, or {} when there is no body at all."""
    raw = body()
    return parse_object(raw) if raw.strip() else {}


def _text(payload: dict[str, Any], field: str) -> str | None:
    # Names and `by` fill 200-character columns; reasons are held to the same length.
    return check_text(payload.get(field), field, MAX_BY_LENGTH)
