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


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Called by the C decoder for every object, so it stays this small: a repeated key shows
    # as a dict shorter than its pairs, and only then are the pairs searched for it.
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise BadRequest(
                    f"The request body repeats the key {key!r} in one object; send each key once.",
                    [detail(key, "duplicate key")],
                )
            seen.add(key)
    return found


# json.loads with these hooks, built once: json.loads builds a new decoder for every call
# that passes any.
_decode = json.JSONDecoder(
    parse_constant=_parse_constant, parse_float=_parse_float, object_pairs_hook=_unique_keys
).decode


def parse_json(raw: bytes) -> Any:
    """Decode a request body; malformed or absurdly nested JSON is a 400, never a 500, and so
    is an object that repeats a key (which of its values would count is anyone's guess)."""
    if not raw.strip():
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("The request body is not UTF-8 text.") from exc
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _decode(text)
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
# Who made a change, and an A/B test's name: the histories keep them in 200-character columns.
MAX_BY_LENGTH = 200


def unencodable(text: str) -> bool:
    """Whether a text holds a lone surrogate: JSON's "\\ud800" decodes to one, and no UTF-8
    text, so neither database driver, can carry it (UnicodeEncodeError when it is bound)."""
    if text.isascii():  # the common case, and the cheap one
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


LONE_SURROGATE = "contains a lone surrogate"


def text_problem(text: str, max_length: int | None = None) -> tuple[str, str] | None:
    """Why a client's text cannot be stored in a text column, as (sentence, detail), or None.

    The one rule for every text bound to SQL: not longer than its column, no NUL character
    (PostgreSQL refuses it in a text column), and encodable as UTF-8.
    """
    if max_length is not None and len(text) > max_length:
        return f"is too long: at most {max_length} characters", (
            f"longer than {max_length} characters"
        )
    if "\x00" in text:
        return "must not contain NUL characters", "contains NUL"
    if unencodable(text):
        return "is not valid Unicode text", LONE_SURROGATE
    return None


def check_text(value: Any, field: str, max_length: int | None = None) -> Any:
    """`value` when it is None or a text that can be stored; InvalidInput naming `field` when
    it is not a string or `text_problem` objects to it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(
            f"'{field}' must be a string.",
            [detail(field, f"expected a string, got {json_type(value)}")],
        )
    problem = text_problem(value, max_length)
    if problem is not None:
        sentence, found = problem
        raise InvalidInput(f"'{field}' {sentence}.", [detail(field, found)])
    return value


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
    if isinstance(value, str):
        if not value.strip():
            raise InvalidInput(f"'{field}' must not be empty.", [detail(field, "empty string")])
        return check_text(value, field, MAX_ID_LENGTH)
    if len(str(value)) > MAX_ID_LENGTH:
        raise InvalidInput(
            f"'{field}' is too long.", [detail(field, f"longer than {MAX_ID_LENGTH} characters")]
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
    true_class = body["true_class"]
    if isinstance(true_class, str) and unencodable(true_class):
        raise InvalidInput(
            "'true_class' is not valid Unicode text.", [detail("true_class", LONE_SURROGATE)]
        )
    return UpdateBody(observation_id, true_class)
