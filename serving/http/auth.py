"""Admin authorisation: a bearer token compared in constant time; no token configured, no admin."""

from __future__ import annotations

import hmac

from flask import current_app, request

from serving.errors import Forbidden, Unauthorized


def require_admin() -> None:
    """Raise unless the request carries `Authorization: Bearer $ADMIN_TOKEN`."""
    token = current_app.config["SETTINGS"].admin_token
    if not token:
        raise Forbidden("Admin actions are disabled on this server: ADMIN_TOKEN is not set.")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized()
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Forbidden("The admin token is wrong.")
