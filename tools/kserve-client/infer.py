"""Score rows with KServe's own client, InferenceRESTClient, and print the answers as JSON.

Runs in tools/kserve-client/.venv (build-venv makes it), not in the project's virtualenv:

    tools/kserve-client/.venv/bin/python tools/kserve-client/infer.py \\
        http://127.0.0.1:5000 income rows.json --id kserve-1 [--binary-outputs]

`rows.json` is a JSON array of objects, one per row, keyed by the model's columns ("-" reads
standard input). Each column becomes one tensor, as a KServe user builds them from numpy:
integers INT64, other numbers FP64, text BYTES, sent with InferInput.set_data_from_numpy's
default (binary tensor data). The answer printed is {"id", "content_type", "outputs": {name:
values}}, with BYTES outputs as text (the client does not keep the answer's model_version;
the output model_version has each row's). Exits 1 with the server's error when
the server refuses the request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


def tensor(name: str, values: list[Any]) -> InferInput:
    """One column as an input tensor, in binary (set_data_from_numpy's default)."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        array, datatype = np.asarray(values, dtype=np.int64), "INT64"
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        array, datatype = np.asarray(values, dtype=np.float64), "FP64"
    else:
        array, datatype = np.asarray(values, dtype=object), "BYTES"
    infer_input = InferInput(name=name, shape=list(array.shape), datatype=datatype)
    infer_input.set_data_from_numpy(array)
    return infer_input


def plain(array: np.ndarray) -> list[Any]:
    """An output as JSON values: BYTES elements as text."""
    return (
        [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]
        if array.ndim == 1
        else [plain(row) for row in array]
    )


async def infer(
    url: str, model: str, rows: list[dict[str, Any]], request_id: str, binary: bool
) -> dict[str, Any]:
    columns = list(rows[0])
    request = InferRequest(
        model_name=model,
        infer_inputs=[tensor(name, [row[name] for row in rows]) for name in columns],
        request_id=request_id,
        parameters={"binary_data_output": True} if binary else None,
    )
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=60))
    try:
        if not await client.is_server_ready(url):
            raise SystemExit(f"{url} is not ready")
        if not await client.is_model_ready(url, model):
            raise SystemExit(f"model {model!r} is not ready at {url}")
        headers: dict[str, str] = {}
        response = await client.infer(url, request, model_name=model, response_headers=headers)
    finally:
        await client.close()
    return {
        "id": response.id,
        "content_type": headers.get("content-type"),
        "outputs": {output.name: plain(output.as_numpy()) for output in response.outputs},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:5000")
    parser.add_argument("model", help="the model (endpoint) name")
    parser.add_argument("rows", help="a JSON array of row objects, or - for standard input")
    parser.add_argument("--id", default="kserve", help="the request id")
    parser.add_argument("--binary-outputs", action="store_true", help="ask for binary outputs")
    args = parser.parse_args()
    with sys.stdin if args.rows == "-" else open(args.rows) as file:
        rows = json.load(file)
    try:
        answer = asyncio.run(infer(args.url, args.model, rows, args.id, args.binary_outputs))
    except httpx.HTTPStatusError as error:
        print(error.response.text, file=sys.stderr)
        raise SystemExit(1) from error
    json.dump(answer, sys.stdout)
    print()


if __name__ == "__main__":
    main()
