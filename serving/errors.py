"""Errors as values: each carries its HTTP status, a sentence for people and per-field details."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class of every error a client can see; rendered by one handler."""

    status = 500
    default_message = "The server could not handle this request."
    # Response headers the error needs (such as WWW-Authenticate), set by subclasses.
    headers: dict[str, str] = {}

    def __init__(self, message: str | None = None, details: list[dict[str, str]] | None = None):
        self.message = message or self.default_message
        self.details = details or []
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body every error response shares."""
        return {"error": self.message, "details": self.details}


class BadRequest(ServiceError):
    status = 400
    default_message = "The request body is not valid JSON."


class Unauthorized(ServiceError):
    status = 401
    default_message = "This action needs an admin token: send 'Authorization: Bearer <token>'."
    # RFC 6750: a 401 names the scheme the client should use.
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    status = 403
    default_message = "The admin token is wrong, or admin actions are disabled on this server."


class ClientForbidden(Forbidden):
    """A wrong or revoked client credential on a prediction route."""

    default_message = "The token is wrong or revoked."
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class NotFound(ServiceError):
    status = 404
    default_message = "Nothing is found at this address."


class ObservationNotFound(NotFound):
    default_message = "No prediction has been stored with this observation id."


class Conflict(ServiceError):
    status = 409
    default_message = "This id is already stored with a different observation."


class PayloadTooLarge(ServiceError):
    status = 413
    default_message = "The request body is too large."


class InvalidInput(ServiceError):
    status = 422
    default_message = "The request is valid JSON but its content is not."


class Unavailable(ServiceError):
    status = 503
    default_message = (
        "The database is unreachable; nothing was stored. Retry the request with the same id."
    )
    # Every 503 says when to come back (RFC 9110 Retry-After): the client may resend the
    # request with the same id, and a client that waits spares a recovering database a storm.
    headers = {"Retry-After": "2"}

    def __init__(
        self,
        message: str | None = None,
        details: list[dict[str, str]] | None = None,
        retry_after: int = 2,
    ):
        super().__init__(message, details)
        self.headers = {"Retry-After": str(retry_after)}


def underlying(error: BaseException) -> str:
    """What a ServiceError was raised from (the driver's own words, say), on one line: a
    command prints it where a client would get only the error's own sentence."""
    cause = error.__cause__ if isinstance(error, ServiceError) and error.__cause__ else error
    return " ".join(str(cause).split()) or type(cause).__name__


def detail(field: str, problem: str) -> dict[str, str]:
    """One entry of an error's details list."""
    return {"field": field, "problem": problem}


def _render(error: ServiceError, body: dict[str, Any] | None = None) -> Response:
    response = jsonify(error.to_dict() if body is None else body)
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def render_http_exception(error: HTTPException, max_bytes: int, short: bool = False) -> Response:
    """Flask's own HTTP error (404 of no route, 405, 413 over MAX_CONTENT_LENGTH) as ours;
    `short`: the body is `{"error": ...}` alone, as the Open Inference Protocol has it."""
    status = error.code or 500
    mapped = ServiceError(error.description or error.name)
    mapped.status = status
    if status == 503:
        mapped = Unavailable(error.description or error.name)
    if status == 413:
        mapped = PayloadTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")
    response = _render(mapped, {"error": mapped.message} if short else None)
    if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response


def render_short(error: ServiceError) -> Response:
    """An error as the Open Inference Protocol renders it: `{"error": "<sentence>"}`, with
    the status and headers it has everywhere else."""
    return _render(error, {"error": error.message})


def register_error_handlers(app: Flask) -> None:
    """Render our errors, Flask's own HTTP errors and anything unexpected as the same JSON."""

    @app.errorhandler(ServiceError)
    def handle_service_error(error: ServiceError) -> Response:
        return _render(error)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException) -> Response:
        return render_http_exception(error, app.config["MAX_CONTENT_LENGTH"])

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        # The trace goes to the log, never to the client.
        logger.exception("unhandled error")
        return _render(ServiceError())
