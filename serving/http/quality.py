"""/api/v1/<endpoint>/performance: per-version quality from ground truth."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from flask import Blueprint, request

from serving.errors import BadRequest, detail
from serving.http.context import registry
from serving.model.folders import version_order

blueprint = Blueprint("quality", __name__, url_prefix="/api/v1/<endpoint>")


@blueprint.get("/performance")
def performance(endpoint: str) -> dict[str, Any]:
    """Metrics of every version (or ?version=) on predictions made in [?since, ?until)."""
    from serving.reports.quality import performance_report  # imported at start-up: see serving.http

    versions = registry().endpoint(endpoint)
    # An empty ?version= is the same as an absent one.
    wanted = request.args.get("version")
    chosen = (
        [registry().version(endpoint, wanted)]
        if wanted
        else [versions[v] for v in sorted(versions, key=version_order)]
    )
    since, until = _instant("since"), _instant("until")
    if since and until and since >= until:
        raise BadRequest("'since' must be before 'until'.", [detail("since", "not before until")])
    return performance_report(endpoint, chosen, since, until)


def _instant(name: str) -> dt.datetime | None:
    """An ISO 8601 query parameter as naive UTC; a time without an offset is taken as UTC."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        # An unencoded "+01:00" arrives as " 01:00": a query string's + means a space.
        value = dt.datetime.fromisoformat(re.sub(r" (\d\d:?\d\d)$", r"+\1", raw))
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
    # OverflowError: in UTC, the time falls before year 1 or after 9999 (a 500 otherwise).
    except (ValueError, OverflowError):
        raise BadRequest(
            f"'{name}' must be an ISO 8601 date or time, e.g. 2026-11-24T10:00:00Z.",
            [detail(name, f"not an ISO 8601 time: {raw!r}")],
        ) from None
    return value
