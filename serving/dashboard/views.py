"""The dashboard's pages: `/` (every endpoint) and `/dashboard/<endpoint>` (one endpoint).

Read-only HTML rendered on the server, with the stylesheet served by the app and charts as
inline SVG, so a page needs nothing from the internet. When DASHBOARD_TOKEN is set, a page
needs `?token=` or `Authorization: Bearer`; links carry a token given in the query along.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, url_for

from serving.dashboard import charts
from serving.errors import ServiceError, Unauthorized
from serving.http.auth import bearer_token
from serving.http.context import annotate, experiments, lifecycle, registry

blueprint = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard/static",
)


@blueprint.before_request
def require_token() -> None:
    """Refuse pages without the dashboard token, when one is configured."""
    token = current_app.config["SETTINGS"].dashboard_token
    if not token or request.endpoint == "dashboard.static":
        return
    given = bearer_token() or request.args.get("token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized(
            "This dashboard needs its token: open the page with ?token=<DASHBOARD_TOKEN> or "
            "send 'Authorization: Bearer <DASHBOARD_TOKEN>'."
        )


@blueprint.get("/")
def index() -> str:
    """Every endpoint, its versions and statuses, its traffic, and running A/B tests."""
    # The pages need NumPy and SciPy: imported at start-up, not with the routes (serving.http).
    from serving.dashboard.pages import overview

    page = overview(registry(), lifecycle(), experiments())
    return render_template("dashboard/overview.html", **page)


@blueprint.get("/dashboard/<name>")
def endpoint(name: str) -> str:
    """One endpoint: versions, traffic, quality and calibration, drift, A/B tests."""
    from serving.dashboard.pages import endpoint_page

    annotate(endpoint=name)
    page = endpoint_page(
        registry(),
        lifecycle(),
        experiments(),
        name,
        drift_version=request.args.get("version") or None,
        window=request.args.get("window") or None,
    )
    return render_template("dashboard/endpoint.html", **page)


@blueprint.errorhandler(ServiceError)
def error_page(error: ServiceError) -> tuple[str, int, dict[str, str]]:
    """Errors on a page are pages too, with the status and sentence the API would give."""
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
    headers.update(error.headers)  # a 503 page says when to retry, as the API does
    return render_template("dashboard/error.html", error=error), error.status, headers


@blueprint.after_request
def no_framing(response: Response) -> Response:
    """Pages are read-only, but still keep them out of other sites' frames."""
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


@blueprint.app_template_global("dashboard_url")
def dashboard_url(target: str, /, **values: Any) -> str:
    """url_for, keeping a `?token=` the page was opened with, so it follows the reader."""
    token = request.args.get("token")
    if token and current_app.config["SETTINGS"].dashboard_token:
        values.setdefault("token", token)
    return url_for(target, **values)


@blueprint.context_processor
def helpers() -> dict[str, Any]:
    """Chart builders and number formats, for the templates."""
    from serving.dashboard.pages import METRIC_NAMES

    return {
        "charts": charts,
        "number": charts.number,
        "p_value": charts.p_value,
        "exact": charts.exact,
        "series_class": charts.series_class,
        "metric_label": lambda name: METRIC_NAMES.get(name, name),
    }
