"""The Open Inference Protocol (v2) routes in the document: their schemas and error answers.

Their errors are `{"error": "<sentence>"}` (`InferenceError`), as the protocol has it, under
the statuses the rest of the API uses."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from serving.openapi import components
from serving.openapi.components import (
    BOOLEAN,
    STRING,
    array,
    obj,
    ref,
)
from serving.protocol.inference_v2 import DATATYPES, OUTPUTS

# Error response components: the usual name with this prefix.
PREFIX = "V2"

DATATYPE = {"enum": sorted(DATATYPES)}
SHAPE = array({"type": "integer", "minimum": -1})
# JSON parameters: any values (the protocol's are text, numbers and booleans; this server's
# answers also carry lists, such as `classes`).
PARAMETERS = {"type": "object"}

METADATA_TENSOR = obj(["name", "datatype", "shape"], name=STRING, datatype=DATATYPE, shape=SHAPE)

TENSOR_DATA = {
    "type": "array",
    "description": "One value per row (or [[value], ...] for shape [n, 1]); null is missing.",
    "items": {},
}

REQUEST_INPUT = obj(
    ["name", "shape", "datatype", "data"],
    name={"type": "string", "description": "A column of the model."},
    shape=array({"type": "integer", "minimum": 0}, minItems=1, maxItems=2),
    datatype=DATATYPE,
    parameters=PARAMETERS,
    data=TENSOR_DATA,
)

INFERENCE_REQUEST = obj(
    ["inputs"],
    id={
        "type": ["string", "integer", "null"],
        "description": "The observation id of a one-row request (an idempotency key, as "
        "/predict's); n rows get `<id>-<row>` unless `parameters.observation_ids` names them. "
        "Generated when absent.",
    },
    parameters=obj(
        content_type={"enum": ["pd"], "description": "The pandas codec, the only one."},
        observation_ids=array(ref("ObservationId"), description="One id per row."),
        binary_data_output={
            "type": "boolean",
            "description": "Every output as binary tensor data, unless its own "
            "`parameters.binary_data` says otherwise.",
        },
    ),
    inputs=array(ref("InferenceRequestInput"), minItems=1),
    outputs=array(
        obj(
            ["name"],
            name={"enum": list(OUTPUTS)},
            parameters=obj(
                binary_data={
                    "type": "boolean",
                    "description": "This output as binary tensor data (the answer is then "
                    "application/octet-stream).",
                }
            ),
        )
    ),
)

RESPONSE_OUTPUT = obj(
    ["name", "shape", "datatype", "data"],
    name={"enum": list(OUTPUTS)},
    shape=SHAPE,
    datatype=DATATYPE,
    parameters=PARAMETERS,
    data=array({}),
)

INFERENCE_RESPONSE = obj(
    ["model_name", "id", "outputs"],
    model_name=STRING,
    model_version={
        "type": "string",
        "description": "When every row was answered by one version (see output model_version).",
    },
    id={"type": "string", "description": "The request's id, or the one generated."},
    parameters=PARAMETERS,
    outputs=array(ref("InferenceResponseOutput")),
)

MODEL_METADATA = obj(
    ["name", "versions", "platform", "inputs", "outputs"],
    name=STRING,
    versions=array(STRING, description="The versions that may be named: all but archived."),
    platform={"const": "sklearn"},
    inputs=array(ref("MetadataTensor")),
    outputs=array(ref("MetadataTensor")),
    parameters=PARAMETERS,
)

MODEL_READY = obj(["name", "ready"], name=STRING, ready=BOOLEAN, version=STRING)

SCHEMAS: dict[str, dict[str, Any]] = {
    "InferenceError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "One sentence."}},
        "additionalProperties": False,
    },
    "ServerMetadata": obj(
        ["name", "version", "extensions"], name=STRING, version=STRING, extensions=array(STRING)
    ),
    "ServerLive": obj(["live"], live=BOOLEAN),
    "ServerReady": obj(["ready"], ready=BOOLEAN),
    "MetadataTensor": METADATA_TENSOR,
    "ModelMetadata": MODEL_METADATA,
    "ModelReady": MODEL_READY,
    "InferenceRequestInput": REQUEST_INPUT,
    "InferenceRequest": INFERENCE_REQUEST,
    "InferenceResponseOutput": RESPONSE_OUTPUT,
    "InferenceResponse": INFERENCE_RESPONSE,
}


def error_responses(statuses: Collection[int]) -> dict[str, dict[str, Any]]:
    """One response component per error status the v2 operations list, with the
    InferenceError body."""
    return components.error_responses("InferenceError", PREFIX, statuses)
