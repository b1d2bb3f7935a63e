"""Request bodies: bytes to JSON values, and the shapes of the predict and update bodies."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from serving.errors import BadRequest, InvalidInput, detail


class NonFinite(float):
    """A JSON `Infinity` (or a number too large for a double), kept so validation can name it."""

    __slots__ = ()


def _parse_constant(token: str) -> Any:
    # Python-style NaN in a body means missing, as in the tutorial's examples.
    if token == "NaN":
        return None
    return NonFinite(math.inf if token == "Infinity" else -math.inf)


def _parse_float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else NonFinite(value)


def parse_json(raw: bytes) -> Any:
    """Decode a request body; malformed or absurdly nested JSON is a 400, never a 500."""
    if not raw.strip():
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("The request body is not UTF-8 text.") from exc
    try:
        return json.loads(text, parse_constant=_parse_constant, parse_float=_parse_float)
    except RecursionError as exc:
        raise BadRequest("The request body is nested too deeply.") from exc
    except ValueError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from exc


def parse_object(raw: bytes) -> dict[str, Any]:
    """Decode a body that must be a JSON object."""
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest(f"The request body must be a JSON object, got {json_type(body)}.")
    return body


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


MAX_ID_LENGTH = 255


def parse_observation_id(body: dict[str, Any], field: str = "id") -> str | int:
    """The caller's observation id: a non-empty string or an integer, never a bool or float."""
    if field not in body or body[field] is None:
        raise InvalidInput(
            f"'{field}' is required.", [detail(field, "required: an integer or a string")]
        )
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(
            f"'{field}' must be an integer or a string.",
            [detail(field, f"expected an integer or a string, got {json_type(value)}")],
        )
    if isinstance(value, str) and not value.strip():
        raise InvalidInput(f"'{field}' must not be empty.", [detail(field, "empty string")])
    if len(str(value)) > MAX_ID_LENGTH:
        raise InvalidInput(
            f"'{field}' is too long.", [detail(field, f"longer than {MAX_ID_LENGTH} characters")]
        )
    if isinstance(value, str) and "\x00" in value:
        # PostgreSQL cannot store a NUL character in a text column (a 500 otherwise).
        raise InvalidInput(
            f"'{field}' must not contain NUL characters.", [detail(field, "contains NUL")]
        )
    return value


def id_key(observation_id: str | int) -> str:
    """How an id is stored: integers and their decimal strings name the same observation."""
    return str(observation_id)


@dataclass(frozen=True)
class PredictBody:
    observation_id: str | int
    observation: Any


@dataclass(frozen=True)
class UpdateBody:
    observation_id: str | int
    true_class: Any


def parse_predict_body(raw: bytes) -> PredictBody:
    """`{"id": ..., "observation": {...}}`; the observation itself is checked by the schema."""
    body = parse_object(raw)
    observation_id = parse_observation_id(body)
    if "observation" not in body:
        raise InvalidInput(
            "'observation' is required.", [detail("observation", "required: an object")]
        )
    return PredictBody(observation_id, body["observation"])


def parse_update_body(raw: bytes) -> UpdateBody:
    """`{"id": ..., "true_class": ...}`; the label is checked against the model's classes."""
    body = parse_object(raw)
    observation_id = parse_observation_id(body)
    if "true_class" not in body or body["true_class"] is None:
        raise InvalidInput(
            "'true_class' is required.", [detail("true_class", "required: a class label")]
        )
    return UpdateBody(observation_id, body["true_class"])
