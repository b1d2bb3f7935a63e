"""Decoding request bodies."""

import math

import pytest

from serving.errors import BadRequest, InvalidInput
from serving.protocol.payloads import NonFinite, parse_json, parse_observation_id


def test_nan_decodes_as_missing():
    assert parse_json(b'{"a": NaN}') == {"a": None}


@pytest.mark.parametrize("text", [b"Infinity", b"-Infinity", b"1e400"])
def test_infinities_are_marked(text):
    value = parse_json(b'{"a": ' + text + b"}")["a"]
    assert isinstance(value, NonFinite) and math.isinf(value)


def test_recursion_is_bad_request():
    with pytest.raises(BadRequest, match="nested too deeply"):
        parse_json(b"[" * 200_000)


@pytest.mark.parametrize("value", [0, -3, "abc", "0"])
def test_good_ids(value):
    assert parse_observation_id({"id": value}) == value


@pytest.mark.parametrize("value", [None, True, 1.0, [], {}, " ", "x" * 300])
def test_bad_ids(value):
    with pytest.raises(InvalidInput):
        parse_observation_id({"id": value})
