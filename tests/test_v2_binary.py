"""Triton's binary tensor data extension on /v2 infer through the Flask client: binary inputs
answer as their JSON twins, outputs come back binary when asked, and every malformed body is
a 400 naming the input (or the header), with nothing stored.

Bodies are built here by hand from the extension's description (little-endian, BYTES as a
4-byte length and the bytes), not with the server's codec, so a misreading on either side
shows."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from serving.store.tables import Prediction
from tests.conftest import REPO_ROOT, make_app
from tests.samples import PASSENGER
from tests.test_v2 import DATATYPES, SECOND

INFER = "/v2/models/default/infer"
HEADER = "Inference-Header-Content-Length"
FIRST = {**PASSENGER, "Cabin": "E46"}
ROWS = [FIRST, SECOND]


@pytest.fixture
def app(database_url: str):
    application = make_app(database_url, REPO_ROOT / "models", max_batch_body_bytes=4000)
    yield application
    from serving.store.database import close_all

    close_all()


def pack(datatype: str, values: list[Any]) -> bytes:
    """Values in the extension's binary form."""
    if datatype == "BYTES":
        encoded = [b"" if v is None else v.encode() for v in values]
        return b"".join(struct.pack("<I", len(e)) + e for e in encoded)
    if datatype == "FP64":
        return struct.pack(f"<{len(values)}d", *[np.nan if v is None else v for v in values])
    return struct.pack(f"<{len(values)}q", *values)


def framed(header: dict[str, Any], tail: bytes) -> tuple[bytes, dict[str, str]]:
    """A JSON part then `tail`, with the header giving the JSON part's length."""
    head = json.dumps(header).encode()
    return head + tail, {HEADER: str(len(head))}


def binary_request(
    rows: list[dict[str, Any]], json_inputs: tuple[str, ...] = (), **more: Any
) -> tuple[dict[str, Any], bytes]:
    """One input per column, in binary unless named in `json_inputs`: the JSON part and the
    bytes after it."""
    inputs, tail = [], b""
    for name, datatype in DATATYPES.items():
        values = [row[name] for row in rows]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [len(rows)]}
        if name in json_inputs:
            tensor["data"] = values
        else:
            data = pack(datatype, values)
            tensor["parameters"] = {"binary_data_size": len(data)}
            tail += data
        inputs.append(tensor)
    return {"inputs": inputs, **more}, tail


def post(client, body: bytes, headers: dict[str, str], url: str = INFER):
    return client.post(
        url, data=body, headers={"Content-Type": "application/octet-stream", **headers}
    )


def json_request(rows: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": n, "datatype": d, "shape": [len(rows)], "data": [r[n] for r in rows]}
            for n, d in DATATYPES.items()
        ],
        **more,
    }


def unframe(response) -> tuple[dict[str, Any], dict[str, np.ndarray | list[str]]]:
    """A binary answer read as the extension says: the JSON part, then each output's bytes."""
    assert response.status_code == 200, response.get_data()
    assert response.content_type == "application/octet-stream"
    length = int(response.headers[HEADER])
    raw = response.get_data()
    header = json.loads(raw[:length])
    offset, found = length, {}
    for output in header["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            continue
        chunk, offset = raw[offset : offset + size], offset + size
        if output["datatype"] == "BYTES":
            texts, at = [], 0
            while at < len(chunk):
                (n,) = struct.unpack_from("<I", chunk, at)
                texts.append(chunk[at + 4 : at + 4 + n].decode())
                at += 4 + n
            found[output["name"]] = texts
        else:
            dtype = {"FP64": "<f8", "INT64": "<i8"}[output["datatype"]]
            found[output["name"]] = np.frombuffer(chunk, dtype=dtype).reshape(output["shape"])
    assert offset == len(raw)
    return header, found


def test_binary_inputs_answer_as_json_ones_and_are_stored(client):
    reference = client.post(INFER, json=json_request(ROWS, id="json")).get_json()
    header, tail = binary_request(ROWS, id="bin")
    answer = post(client, *framed(header, tail))
    assert answer.status_code == 200, answer.get_data()
    # No binary output asked: the answer is plain JSON.
    assert answer.content_type == "application/json" and HEADER not in answer.headers
    got = {o["name"]: o for o in answer.get_json()["outputs"]}
    want = {o["name"]: o for o in reference["outputs"]}
    np.testing.assert_allclose(got["proba"]["data"], want["proba"]["data"], rtol=0, atol=1e-12)
    assert got["prediction"]["data"] == want["prediction"]["data"]
    assert got["observation_id"]["data"] == ["bin-0", "bin-1"]
    assert Prediction.select().where(Prediction.observation_id.in_(["bin-0", "bin-1"])).count() == 2

    # Some inputs binary, some JSON; a NaN float is a missing value, as null is.
    mixed, tail = binary_request(
        [{**PASSENGER, "Age": None}], json_inputs=("Cabin", "Pclass"), id="mixed"
    )
    answer = post(client, *framed(mixed, tail))
    assert answer.status_code == 200, answer.get_data()
    same = client.post(INFER, json=json_request([{**PASSENGER, "Age": None}], id="null"))
    assert answer.get_json()["outputs"][1]["data"] == same.get_json()["outputs"][1]["data"]

    # A JSON-only body with the header (length = the body) is read as plain JSON.
    whole = json.dumps(json_request([SECOND], id="whole")).encode()
    assert post(client, whole, {HEADER: str(len(whole))}).status_code == 200


def test_outputs_come_back_binary_when_asked(client):
    reference = client.post(INFER, json=json_request(ROWS, id="ref")).get_json()
    want = {o["name"]: o["data"] for o in reference["outputs"]}

    # binary_data_output: every output binary, as tritonclient asks when it names none.
    header, tail = binary_request(ROWS, id="all", parameters={"binary_data_output": True})
    answer = post(client, *framed(header, tail))
    meta, found = unframe(answer)
    assert {o["name"] for o in meta["outputs"]} == set(found) == set(want)
    assert all("data" not in o for o in meta["outputs"])
    np.testing.assert_allclose(found["proba"], want["proba"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        found["probabilities"], np.reshape(want["probabilities"], (2, 2)), rtol=0, atol=1e-12
    )
    assert found["prediction"].tolist() == want["prediction"]
    assert found["observation_id"] == ["all-0", "all-1"]
    assert found["model_version"] == want["model_version"]
    probabilities = next(o for o in meta["outputs"] if o["name"] == "probabilities")
    assert probabilities["parameters"]["classes"] == ["0", "1"]

    # Per output: binary_data overrides binary_data_output; JSON inputs may ask too.
    body = json_request(
        ROWS,
        id="some",
        parameters={"binary_data_output": True},
        outputs=[
            {"name": "proba", "parameters": {"binary_data": True}},
            {"name": "observation_id", "parameters": {"binary_data": False}},
        ],
    )
    meta, found = unframe(client.post(INFER, json=body))
    assert list(found) == ["proba"]
    assert [o["name"] for o in meta["outputs"]] == ["proba", "observation_id"]
    assert meta["outputs"][1]["data"] == ["some-0", "some-1"]
    np.testing.assert_allclose(found["proba"], want["proba"], rtol=0, atol=1e-12)

    # binary_data false everywhere: plain JSON.
    body = json_request(ROWS, id="none", outputs=[{"name": "proba", "parameters": {}}])
    plain = client.post(INFER, json=body)
    assert plain.content_type == "application/json" and HEADER not in plain.headers


def _sizes(change: Callable[[dict[str, Any]], None]) -> Callable[[dict, bytes], tuple]:
    def apply(header: dict, tail: bytes) -> tuple[bytes, dict[str, str]]:
        change(header)
        return framed(header, tail)

    return apply


def _input(header: dict, name: str) -> dict[str, Any]:
    return next(t for t in header["inputs"] if t["name"] == name)


def _replace(name: str, datatype: str, data: bytes, shape: list[int] | None = None):
    """The body with input `name` replaced by these binary bytes (the others unchanged)."""

    def apply(header: dict, tail: bytes) -> tuple[bytes, dict[str, str]]:
        pieces, offset = [], 0
        for tensor in header["inputs"]:
            size = tensor["parameters"]["binary_data_size"]
            piece = tail[offset : offset + size]
            offset += size
            if tensor["name"] == name:
                tensor.update(datatype=datatype, shape=shape or tensor["shape"])
                tensor["parameters"]["binary_data_size"] = len(data)
                piece = data
            pieces.append(piece)
        return framed(header, b"".join(pieces))

    return apply


def _header(value: str | None) -> Callable[[dict, bytes], tuple]:
    def apply(header: dict, tail: bytes) -> tuple[bytes, dict[str, str]]:
        body, _ = framed(header, tail)
        return body, {} if value is None else {HEADER: value.format(n=len(body))}

    return apply


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def change(header: dict) -> None:
        name, key = path.split(".")
        _input(header, name)["parameters"][key] = value

    return change


MALFORMED = {
    "header not a number": (_header("twelve"), [HEADER, "'twelve'"]),
    "header negative": (_header("-5"), [HEADER, "'-5'"]),
    "header zero": (_header("0"), [HEADER, "cannot be empty"]),
    "header past the body": (_header("{n}1"), [HEADER, "the whole body"]),
    "binary data without the header": (_header(None), [HEADER, "binary_data_size"]),
    "header cuts the JSON": (_header("10"), ["not valid JSON"]),
    "sizes short of the body": (
        _sizes(_set("Fare.binary_data_size", 8)),
        ["bytes follow the JSON part", "'Fare' 8", "'Age' 16"],
    ),
    "sizes past the body": (
        _sizes(_set("Sex.binary_data_size", 400)),
        ["add up to", "'Sex' 400"],
    ),
    "size negative": (_sizes(_set("Parch.binary_data_size", -16)), ["'Parch'", "-16"]),
    "size not a number": (_sizes(_set("Parch.binary_data_size", "16")), ["'Parch'", "'16'"]),
    "size a boolean": (_sizes(_set("Parch.binary_data_size", True)), ["'Parch'", "True"]),
    "data and binary data": (
        _sizes(lambda h: _input(h, "SibSp").update(data=[1, 0])),
        ["'SibSp'", "both 'data'"],
    ),
    "size not a multiple of the width": (
        _replace("Age", "FP64", b"\0" * 15),
        ["'Age' (FP64)", "15 is not a multiple of 8"],
    ),
    "fewer elements than the shape": (
        _replace("Fare", "FP64", pack("FP64", [7.25])),
        ["'Fare'", "shape [2] (2 elements)", "holds 1 FP64"],
    ),
    "more elements than the shape": (
        _replace("Pclass", "INT64", pack("INT64", [3, 1, 2])),
        ["'Pclass'", "shape [2] (2 elements)", "holds 3 INT64"],
    ),
    "shape [n, 1] counts its elements": (
        _replace("SibSp", "INT64", pack("INT64", [1, 0, 0]), shape=[2, 1]),
        ["'SibSp'", "shape [2, 1] (2 elements)", "holds 3"],
    ),
    "BYTES length cut off": (
        _replace("Sex", "BYTES", pack("BYTES", ["male"]) + b"\x06\0"),
        ["'Sex' (BYTES), element 1", "4-byte length is cut off"],
    ),
    "BYTES element cut off": (
        _replace("Sex", "BYTES", pack("BYTES", ["male"]) + struct.pack("<I", 6) + b"fem"),
        ["'Sex' (BYTES), element 1", "says 6 bytes but only 3"],
    ),
    "BYTES more elements than the shape": (
        _replace("Embarked", "BYTES", pack("BYTES", ["S", "C", "Q"])),
        ["'Embarked'", "shape [2] (2 elements)", "or more BYTES"],
    ),
    "BYTES fewer elements than the shape": (
        _replace("Embarked", "BYTES", pack("BYTES", ["S"])),
        ["'Embarked'", "holds 1 BYTES"],
    ),
    "BYTES not UTF-8": (
        _replace("Sex", "BYTES", pack("BYTES", ["male"]) + struct.pack("<I", 2) + b"\xff\xfe"),
        ["'Sex' (BYTES), row 1", "not UTF-8"],
    ),
    "BOOL byte not 0 or 1": (
        _replace("Sex", "BOOL", bytes([1, 2])),
        ["'Sex' (BOOL), row 1", "byte 2"],
    ),
    "infinity": (
        _replace("Fare", "FP64", struct.pack("<2d", 7.25, float("inf"))),
        ["'Fare' (FP64), row 1", "infinity"],
    ),
    "a datatype without a binary form": (
        _replace("Fare", "BF16", b"\0" * 4),
        ["'Fare'", "'BF16'"],
    ),
    "binary_data_output not a boolean": (
        _sizes(lambda h: h.update(parameters={"binary_data_output": "yes"})),
        ["binary_data_output", "'yes'"],
    ),
    "binary_data not a boolean": (
        _sizes(lambda h: h.update(outputs=[{"name": "proba", "parameters": {"binary_data": 1}}])),
        ["'proba'", "binary_data"],
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_binary_body_is_a_400_naming_the_problem(client, case: str):
    build, named = MALFORMED[case]
    header, tail = binary_request(ROWS, id=case)
    body, headers = build(header, tail)
    answer = post(client, body, headers)
    assert answer.status_code == 400, answer.get_data()
    message = answer.get_json()["error"]
    assert list(answer.get_json()) == ["error"]
    for text in named:
        assert text in message, message
    assert Prediction.select().count() == 0


def test_binary_data_size_without_the_header_is_named_even_when_the_json_parses(client):
    # Size 0 and no bytes: valid JSON, but binary data without its header all the same.
    header, _ = binary_request([], id="empty")
    answer = client.post(INFER, json=header)
    assert answer.status_code == 400
    assert "'Age' has 'parameters.binary_data_size'" in answer.get_json()["error"]
    assert HEADER in answer.get_json()["error"]


def test_the_body_limit_is_the_whole_bodys_however_framed(client):
    # The limit (4,000 bytes here) counts the binary tail too: JSON part small, tail large.
    rows = [{**FIRST, "Cabin": "C" * 700}] * 5
    header, tail = binary_request(rows, id="big")
    body, headers = framed(header, tail)
    assert len(body) > 4000 > len(json.dumps(header))
    answer = post(client, body, headers)
    assert answer.status_code == 413 and "MAX_BATCH_BODY_BYTES" in answer.get_json()["error"]
    chunked = client.post(
        INFER,
        input_stream=io.BytesIO(body),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert chunked.status_code == 413 and "MAX_BATCH_BODY_BYTES" in chunked.get_json()["error"]
    # Under the limit, chunked, the body is read whole.
    small, small_headers = framed(*binary_request(ROWS, id="small"))
    ok = client.post(
        INFER,
        input_stream=io.BytesIO(small),
        headers={**small_headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert ok.status_code == 200, ok.get_data()
    assert Prediction.select().count() == 2
