"""Who may call what: admin routes need ADMIN_TOKEN (no token configured, no admin); with
PREDICT_AUTH on, prediction routes need ADMIN_TOKEN, PREDICT_TOKEN or an active API key. All
are bearer tokens; configured tokens are compared in constant time, keys found by hash."""

from __future__ import annotations

import hmac

from flask import current_app, g, request

from serving.decisions.clients import ClientKeys
from serving.errors import ClientForbidden, Forbidden, Unauthorized
from serving.http.context import annotate


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


def require_client() -> None:
    """Before a prediction route: nothing while PREDICT_AUTH is off; otherwise 401 without a
    bearer token, 403 for one that is not ADMIN_TOKEN, PREDICT_TOKEN or an active API key.
    The caller's name (admin, predict-token or key:<name>) goes to `g.client` and the log."""
    settings = current_app.config["SETTINGS"]
    if not settings.predict_auth:
        return
    given = bearer_token()
    if not given:
        raise Unauthorized(
            "This route needs a client token: send 'Authorization: Bearer <API key>' "
            "(or PREDICT_TOKEN)."
        )
    client = _client(given, settings.admin_token, settings.predict_token)
    g.client = client
    annotate(client=client)


def authenticated() -> bool:
    """Whether this request's caller proved who it is (client authentication is on)."""
    return g.get("client") is not None


def client_keys() -> ClientKeys:
    """This worker's cache of API key hashes, made on first use."""
    extensions = current_app.extensions
    if "client_keys" not in extensions:
        refresh = current_app.config["SETTINGS"].status_refresh_seconds
        extensions.setdefault("client_keys", ClientKeys(refresh))
    return extensions["client_keys"]


def _client(given: str, admin_token: str | None, predict_token: str | None) -> str:
    for name, token in (("admin", admin_token), ("predict-token", predict_token)):
        if token and hmac.compare_digest(given.encode(), token.encode()):
            return name
    found = client_keys().lookup(given)
    if found is None:
        raise ClientForbidden(
            "The token is not an API key, PREDICT_TOKEN or ADMIN_TOKEN of this server."
        )
    name, active = found
    if not active:
        raise ClientForbidden(f"The API key {name!r} has been revoked.")
    return f"key:{name}"
