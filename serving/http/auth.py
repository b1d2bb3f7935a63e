"""Admin authorisation: a bearer token compared in constant time; no token configured, no admin."""

from __future__ import annotations

import hmac

from flask import current_app, request

from serving.errors import Forbidden, Unauthorized


def bearer_token() -> str:
    """The token of the request's `Authorization: Bearer ...` header; "" without one."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


def require_admin() -> None:
    """Raise unless the request carries `Authorization: Bearer $ADMIN_TOKEN`."""
    token = current_app.config["SETTINGS"].admin_token
    if not token:
        raise Forbidden("Admin actions are disabled on this server: ADMIN_TOKEN is not set.")
    given = bearer_token()
    if not given:
        raise Unauthorized()
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Forbidden("The admin token is wrong.")
