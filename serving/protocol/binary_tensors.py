"""Triton's binary tensor data extension: the framing of a v2 infer request and answer.

A request in this form is a JSON header of `Inference-Header-Content-Length` bytes followed
by the raw bytes of each input whose `parameters.binary_data_size` says how many it takes,
in input order. Elements are little-endian, row-major, in the datatype's width (BOOL one
byte, 0 or 1); a BYTES element is a 4-byte little-endian length and that many bytes. An
answer takes the same form when an output asks for it (`binary_data`, or the request's
`binary_data_output`).

Pure: no Flask. Reading turns binary inputs into the JSON form (`data` lists), so one codec
(`inference_v2.decode`) checks every request whatever its framing. What the service decides
where the extension is silent, all refused with a 400 naming the input:

- The bytes must add up: the header's length at most the body's, the inputs' sizes exactly
  what follows the header, each size a whole number of elements that fills the shape.
- A BYTES element is UTF-8 text (the model's columns are text); a float that is NaN is a
  missing value, as JSON null is; infinity, and a BOOL byte other than 0 or 1, are refused.
- An output whose values include a missing integer, boolean or text (which its binary form
  cannot hold) stays JSON; clients read each output by its own `binary_data_size`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Collection
from typing import Any

import numpy as np

from serving.errors import BadRequest
from serving.protocol.payloads import parse_json

HEADER = "Inference-Header-Content-Length"
MEDIA_TYPE = "application/octet-stream"
EXTENSION = "binary_tensor_data"
SIZE = "binary_data_size"

# Little-endian numpy types of the fixed-width datatypes.
_DTYPES = {
    "BOOL": "u1",
    "INT8": "i1",
    "UINT8": "u1",
    "INT16": "<i2",
    "UINT16": "<u2",
    "FP16": "<f2",
    "INT32": "<i4",
    "UINT32": "<u4",
    "FP32": "<f4",
    "INT64": "<i8",
    "UINT64": "<u8",
    "FP64": "<f8",
}
_LENGTH = struct.Struct("<I")


def read_request(raw: bytes, header_length: str | None) -> Any:
    """The infer request of a body read whole: its JSON, with every binary input's bytes
    decoded into its `data`. `header_length` is the Inference-Header-Content-Length header
    (None: the body is JSON only)."""
    head, tail = _split(raw, header_length)
    try:
        body = parse_json(head)
    except BadRequest as error:
        if header_length is None and SIZE.encode() in raw:
            raise BadRequest(
                f"{error.message} Binary tensor data ({SIZE}) needs the {HEADER} header: the "
                "length of the JSON part in bytes."
            ) from error
        raise
    return _attach(body, tail, framed=header_length is not None)


def _split(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return raw, b""
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise BadRequest(
            f"The {HEADER} header is {_short(header_length)}; it must be the length of the JSON "
            f"part in bytes, a whole number from 1 to the body's length ({len(raw)})."
        )
    length = int(text)
    if length == 0:
        raise BadRequest(f"The {HEADER} header is 0; the JSON part cannot be empty.")
    if length > len(raw):
        raise BadRequest(
            f"The {HEADER} header says the JSON part has {length} bytes, but the whole body "
            f"has {len(raw)}."
        )
    return raw[:length], raw[length:]


def _attach(body: Any, tail: bytes, framed: bool) -> Any:
    """The request with its binary inputs' `data` filled from `tail`, in input order."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    binary: list[tuple[int, str, int]] = []
    for position, tensor in enumerate(inputs if isinstance(inputs, list) else ()):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(parameters, dict) or parameters.get(SIZE) is None:
            continue
        name = tensor["name"] if isinstance(tensor.get("name"), str) else f"input {position}"
        size = parameters[SIZE]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(
                f"Input {name!r}: 'parameters.{SIZE}' is {_short(size)}; it must be a whole number "
                "of bytes (0 or more)."
            )
        if "data" in tensor:
            raise BadRequest(
                f"Input {name!r} has both 'data' and 'parameters.{SIZE}'; send its values one way."
            )
        binary.append((position, name, size))
    if not binary and not tail:
        return body
    if binary and not framed:
        raise BadRequest(
            f"Input {binary[0][1]!r} has 'parameters.{SIZE}' but the request has no {HEADER} "
            "header; binary tensor data follows a JSON part of that many bytes."
        )
    total = sum(size for _, _, size in binary)
    if total != len(tail):
        sizes = " + ".join(f"{name!r} {size}" for _, name, size in binary) or "no binary input"
        raise BadRequest(
            f"{len(tail)} bytes follow the JSON part, but the inputs' {SIZE} add up to "
            f"{total} ({sizes}); they must be equal."
        )
    assert isinstance(inputs, list)
    decoded = list(inputs)
    offset = 0
    for position, name, size in binary:
        tensor = inputs[position]
        chunk = tail[offset : offset + size]
        offset += size
        values = _values(tensor.get("datatype"), tensor.get("shape"), chunk, name)
        parameters = {k: v for k, v in tensor["parameters"].items() if k != SIZE}
        decoded[position] = {**tensor, "parameters": parameters, "data": values}
    return {**body, "inputs": decoded}


def _short(value: Any) -> str:
    """A value as an error message shows it: its repr, cut to a readable length."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _elements(shape: Any) -> int | None:
    """How many elements a shape holds; None when it is not a shape (decode says why)."""
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        return None
    return math.prod(shape)


def _values(datatype: Any, shape: Any, chunk: bytes, name: str) -> list[Any]:
    """One input's binary data as a list of values, checked against its datatype and shape."""
    expected = _elements(shape)
    if datatype == "BYTES":
        values = _texts(chunk, name, shape, expected)
    elif isinstance(datatype, str) and datatype in _DTYPES:
        width = np.dtype(_DTYPES[datatype]).itemsize
        if len(chunk) % width:
            raise BadRequest(
                f"Input {name!r} ({datatype}): {SIZE} {len(chunk)} is not a multiple of "
                f"{width} bytes, the size of one element."
            )
        array = np.frombuffer(chunk, dtype=_DTYPES[datatype])
        _check_count(name, shape, expected, len(array), f"{datatype} elements")
        values = _numbers(datatype, array, name)
    else:
        # Not a datatype with a binary form: decode names the datatypes it takes.
        raise BadRequest(
            f"Input {name!r} has datatype {datatype!r}, which has no binary form here; "
            "expected BOOL, BYTES, FP16, FP32, FP64 or an INT or UINT type."
        )
    return values


def _check_count(name: str, shape: Any, expected: int | None, found: int, what: str) -> None:
    if expected is not None and found != expected:
        raise BadRequest(
            f"Input {name!r} has shape {shape} ({expected} elements) but its binary data "
            f"holds {found} {what}; they must match."
        )


def _numbers(datatype: str, array: np.ndarray, name: str) -> list[Any]:
    if datatype == "BOOL":
        wrong = np.flatnonzero(array > 1)
        if wrong.size:
            row = int(wrong[0])
            raise BadRequest(
                f"Input {name!r} (BOOL), row {row}: byte {int(array[row])} is neither 0 "
                "(false) nor 1 (true)."
            )
        return [bool(v) for v in array.tolist()]
    if datatype.startswith("FP"):
        infinite = np.flatnonzero(np.isinf(array))
        if infinite.size:
            raise BadRequest(
                f"Input {name!r} ({datatype}), row {int(infinite[0])}: infinity is not a value."
            )
        # float() widens FP16 and FP32 to Python floats; NaN stays NaN, a missing value.
        return [float(v) for v in array.tolist()]
    return [int(v) for v in array.tolist()]


def _texts(chunk: bytes, name: str, shape: Any, expected: int | None) -> list[str]:
    """BYTES elements: each a 4-byte little-endian length and that many bytes of UTF-8."""
    values: list[str] = []
    offset = 0
    while offset < len(chunk):
        row = len(values)
        if expected is not None and row >= expected:
            # More elements than the shape holds: stop before reading them all.
            _check_count(name, shape, expected, row + 1, "or more BYTES elements")
        if len(chunk) - offset < _LENGTH.size:
            raise BadRequest(
                f"Input {name!r} (BYTES), element {row}: its 4-byte length is cut off "
                f"({len(chunk) - offset} bytes left of its {SIZE})."
            )
        (length,) = _LENGTH.unpack_from(chunk, offset)
        offset += _LENGTH.size
        if length > len(chunk) - offset:
            raise BadRequest(
                f"Input {name!r} (BYTES), element {row}: its length says {length} bytes but "
                f"only {len(chunk) - offset} are left of its {SIZE}."
            )
        try:
            values.append(chunk[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BadRequest(f"Input {name!r} (BYTES), row {row}: not UTF-8 text.") from exc
        offset += length
    _check_count(name, shape, expected, len(values), "BYTES elements")
    return values


def frame_response(response: dict[str, Any], binary: Collection[str]) -> tuple[bytes, int] | None:
    """The answer in the binary form: its JSON part, then the bytes of each output named in
    `binary`, in output order; with the JSON part's length (the Inference-Header-Content-Length
    header). None when no output is sent in binary."""
    outputs: list[dict[str, Any]] = []
    parts: list[bytes] = []
    for output in response["outputs"]:
        data = _encode(output["datatype"], output["data"]) if output["name"] in binary else None
        if data is None:
            outputs.append(output)
            continue
        parameters = {**output.get("parameters", {}), SIZE: len(data)}
        outputs.append(
            {k: v for k, v in output.items() if k != "data"} | {"parameters": parameters}
        )
        parts.append(data)
    if not parts:
        return None
    head = json.dumps({**response, "outputs": outputs}, separators=(",", ":")).encode()
    return head + b"".join(parts), len(head)


def _encode(datatype: str, data: list[Any]) -> bytes | None:
    """An output's values in the binary form; None when one cannot be held in it."""
    if datatype.startswith("FP"):
        return np.asarray(
            [math.nan if v is None else v for v in data], dtype=_DTYPES[datatype]
        ).tobytes()
    if any(v is None for v in data):
        return None
    if datatype == "BYTES":
        encoded = [str(v).encode() for v in data]
        return b"".join(_LENGTH.pack(len(e)) + e for e in encoded)
    if datatype == "BOOL":
        return bytes(1 if v else 0 for v in data)
    return np.asarray(data, dtype=_DTYPES[datatype]).tobytes()
