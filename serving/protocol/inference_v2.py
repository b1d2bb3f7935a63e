"""The Open Inference Protocol (v2) codec: tensors in, rows out; answers in, tensors out.

Pure: no Flask, no database. Requests use the pandas codec MLServer calls "pd": one input per
model column, named after it, one element per row (shape `[n]` or `[n, 1]`), with the datatype
its kind maps to (`datatype_for`). What the service decides where the protocol is silent:

- The request's `id` is the observation id of a one-row request. With n rows, row i's id is
  `parameters.observation_ids[i]` when given, else `<id>-<i>`. An absent `id` is generated.
- Every model column must be an input and every input a model column (422 naming it).
- `null` (or NaN) in a tensor is a missing value, as in a /predict observation; the model's
  schema then decides whether the column may be missing.
- Tensor data is JSON here; `binary_tensors` turns Triton's binary tensor data extension
  into it first, and frames the outputs asked in binary (`binary_outputs`).
- Outputs: `prediction` (the label or the regression's value), and for classifiers `proba`
  (as /predict's) and `probabilities` ([n, k], class order in its `parameters.classes`), plus
  `observation_id` and `model_version` per row.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serving.errors import BadRequest, InvalidInput, PayloadTooLarge, detail
from serving.model.schema import BOOLEAN, CATEGORY, INTEGER, NUMBER, STRING, Field, InputSchema
from serving.protocol.payloads import NonFinite, json_type, parse_observation_id

CONTENT_TYPE = "pd"
PLATFORM = "sklearn"

INTEGERS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
FLOATS = ("FP16", "FP32", "FP64")
DATATYPES = frozenset({"BOOL", *INTEGERS, *FLOATS, "BYTES"})

# Which datatypes each kind of column accepts: what a client's array of that kind holds.
ACCEPTED = {
    NUMBER: frozenset({*FLOATS, *INTEGERS}),
    INTEGER: frozenset({*INTEGERS, *FLOATS}),
    BOOLEAN: frozenset({"BOOL"}),
    STRING: frozenset({"BYTES"}),
}

OUTPUTS = ("prediction", "proba", "probabilities", "observation_id", "model_version")


def datatype_for(f: Field) -> str:
    """The datatype the model metadata announces for a column."""
    if f.kind == CATEGORY:
        values = f.categories or ()
        if values and all(isinstance(v, bool) for v in values):
            return "BOOL"
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "INT64"
        if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return "FP64"
        return "BYTES"
    return {NUMBER: "FP64", INTEGER: "INT64", BOOLEAN: "BOOL", STRING: "BYTES"}[f.kind]


def accepted(f: Field) -> frozenset[str]:
    """The datatypes an input for this column may have."""
    if f.kind == CATEGORY:
        announced = datatype_for(f)
        return ACCEPTED[NUMBER] if announced in ("INT64", "FP64") else frozenset({announced})
    return ACCEPTED[f.kind]


def input_metadata(schema: InputSchema) -> list[dict[str, Any]]:
    """One metadata tensor per column: any number of rows (-1)."""
    return [{"name": f.name, "datatype": datatype_for(f), "shape": [-1]} for f in schema.fields]


def output_metadata(task: str, label_datatype: str) -> list[dict[str, Any]]:
    """The output tensors an infer answer can hold for a model of this task."""
    outputs = [{"name": "prediction", "datatype": label_datatype, "shape": [-1]}]
    if task != "regression":
        outputs.append({"name": "proba", "datatype": "FP64", "shape": [-1]})
        outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, -1]})
    outputs.append({"name": "observation_id", "datatype": "BYTES", "shape": [-1]})
    outputs.append({"name": "model_version", "datatype": "BYTES", "shape": [-1]})
    return outputs


def label_datatype(labels: Sequence[Any]) -> str:
    """The datatype of a column of labels (a regression's values are FP64)."""
    if labels and all(isinstance(v, bool) for v in labels):
        return "BOOL"
    if labels and all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        return "INT64"
    if labels and all(isinstance(v, int | float) and not isinstance(v, bool) for v in labels):
        return "FP64"
    return "BYTES"


@dataclass(frozen=True)
class InferRequest:
    """A decoded infer request: the id to answer with, each row's observation id and
    observation, the outputs asked for (None: all) and those to send as binary data."""

    id: str | int
    observation_ids: list[str | int]
    observations: list[dict[str, Any]]
    outputs: list[str] | None
    binary_outputs: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.observations)


def decode(body: Any, schema: InputSchema, max_rows: int) -> InferRequest:
    """Check an infer request against the model's columns and turn its tensors into rows.

    Structure (not an object, shapes, datatypes the protocol does not know, data that does
    not fill its shape, inputs of different lengths) is 400; columns missing, extra or of the
    wrong datatype are 422; more than `max_rows` rows is 413. Every message names the input."""
    if not isinstance(body, dict):
        raise BadRequest(f"An inference request is a JSON object, got {json_type(body)}.")
    _check_content_type(body.get("parameters"), "parameters")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest(
            "'inputs' must be a non-empty array of tensors, one per column: "
            '{"name": ..., "datatype": ..., "shape": [n], "data": [...]}.'
        )
    columns: dict[str, list[Any]] = {}
    datatypes: dict[str, str] = {}
    for position, tensor in enumerate(inputs):
        name, datatypes[name], values = _tensor(tensor, position)
        if name in columns:
            raise BadRequest(f"Input {name!r} is given twice; send each column once.")
        columns[name] = values
    _check_columns(columns, schema)
    lengths = {name: len(values) for name, values in columns.items()}
    n = next(iter(lengths.values()))
    if any(length != n for length in lengths.values()):
        shown = ", ".join(f"{name!r}: {length}" for name, length in lengths.items())
        raise BadRequest(f"Every input must have the same number of rows; got {shown}.")
    if n == 0:
        raise BadRequest("The inputs have no rows; send at least one.")
    if n > max_rows:
        raise PayloadTooLarge(
            f"The request has {n} rows, more than {max_rows} (MAX_BATCH_ROWS); split it.",
            [detail("inputs", f"at most {max_rows} rows")],
        )
    for f in schema.fields:
        _check_datatype(f, datatypes[f.name])
    request_id = _request_id(body)
    ids = _observation_ids(body, request_id, n)
    names = schema.columns
    observations = [{name: columns[name][i] for name in names} for i in range(n)]
    outputs, binary = _outputs(body.get("outputs"), _binary_default(body.get("parameters")))
    return InferRequest(request_id, ids, observations, outputs, binary)


def _check_content_type(parameters: Any, where: str) -> None:
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise BadRequest(f"'{where}' must be an object, got {json_type(parameters)}.")
    content_type = parameters.get("content_type")
    if content_type not in (None, CONTENT_TYPE):
        raise BadRequest(
            f"'{where}.content_type' is {content_type!r}; this server reads the pandas codec "
            f"only ({CONTENT_TYPE!r}: one input per column), which is also the default."
        )


def _tensor(tensor: Any, position: int) -> tuple[str, str, list[Any]]:
    """An input's name, datatype and values (one per row), its data checked against both."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise BadRequest(f"Input {position} must be an object with a string 'name'.")
    name = tensor["name"]
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequest(
            f"Input {name!r} has datatype {datatype!r}; expected one of {sorted(DATATYPES)}."
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or len(shape) not in (1, 2)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise BadRequest(
            f"Input {name!r} has shape {shape!r}; a column is [n] or [n, 1] (one value per row)."
        )
    if "data" not in tensor:
        raise BadRequest(f"Input {name!r} has no 'data'.")
    parameters = tensor.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise BadRequest(f"Input {name!r}: 'parameters' must be an object.")
    values = _flat(tensor["data"], name)
    if len(values) != shape[0]:
        raise BadRequest(
            f"Input {name!r} has shape {shape} but {len(values)} values; they must match."
        )
    for i, value in enumerate(values):
        problem = _element_problem(datatype, value)
        if problem is not None:
            raise BadRequest(f"Input {name!r} ({datatype}), row {i}: {problem}.")
    return name, datatype, [None if isinstance(v, float) and math.isnan(v) else v for v in values]


def _flat(data: Any, name: str) -> list[Any]:
    """Row-major data, nested ([[1], [2]]) or flat ([1, 2])."""
    if not isinstance(data, list):
        raise BadRequest(f"Input {name!r}: 'data' must be an array, got {json_type(data)}.")
    if all(not isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list) and len(item) == 1 and not isinstance(item[0], list):
            flat.append(item[0])
        else:
            raise BadRequest(f"Input {name!r}: 'data' must hold one value per row.")
    return flat


def _element_problem(datatype: str, value: Any) -> str | None:
    """Why a JSON value cannot be an element of this datatype; null is a missing value."""
    if value is None:
        return None
    if isinstance(value, NonFinite):
        return "Infinity is not a value"
    if datatype == "BOOL":
        return None if isinstance(value, bool) else f"expected true or false, got {_shown(value)}"
    if datatype == "BYTES":
        return None if isinstance(value, str) else f"expected a string, got {_shown(value)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {_shown(value)}"
    if datatype in INTEGERS and isinstance(value, float) and not value.is_integer():
        return f"expected an integer, got {value!r}"
    return None


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return json_type(value) if isinstance(value, list | dict) else repr(value)


def _check_columns(columns: Mapping[str, list[Any]], schema: InputSchema) -> None:
    missing = [name for name in schema.columns if name not in columns]
    extra = [name for name in columns if name not in schema.by_name]
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"missing input {', '.join(map(repr, missing))}")
    if extra:
        parts.append(f"unknown input {', '.join(map(repr, extra))}")
    raise InvalidInput(
        f"The inputs must be the model's columns, one each: {'; '.join(parts)}.",
        [detail(name, "missing input") for name in missing]
        + [detail(name, "unknown input") for name in extra],
    )


def _check_datatype(f: Field, datatype: str) -> None:
    if datatype not in accepted(f):
        raise InvalidInput(
            f"Input {f.name!r} has datatype {datatype}; the column takes {datatype_for(f)}"
            f" ({', '.join(sorted(accepted(f)))}).",
            [detail(f.name, f"expected {datatype_for(f)}, got {datatype}")],
        )


def _request_id(body: dict[str, Any]) -> str | int:
    if body.get("id") is None:
        return uuid.uuid4().hex
    return parse_observation_id(body, "id")


def _observation_ids(body: dict[str, Any], request_id: str | int, n: int) -> list[str | int]:
    given = (body.get("parameters") or {}).get("observation_ids")
    if given is None:
        if n == 1:
            return [request_id]
        ids: list[str | int] = [f"{request_id}-{i}" for i in range(n)]
        # The last id is the longest: if it fits, all do.
        parse_observation_id({"id": ids[-1]}, "id")
        return ids
    if not isinstance(given, list) or len(given) != n:
        raise InvalidInput(
            f"'parameters.observation_ids' must be an array of {n} ids, one per row.",
            [detail("parameters.observation_ids", f"expected {n} ids")],
        )
    ids = []
    for i, value in enumerate(given):
        field = f"parameters.observation_ids[{i}]"
        ids.append(parse_observation_id({field: value}, field))
    return ids


def _binary_default(parameters: Any) -> bool:
    """The request's `binary_data_output`: every output in binary unless it says otherwise."""
    value = (parameters or {}).get("binary_data_output", False)
    if not isinstance(value, bool):
        raise BadRequest(f"'parameters.binary_data_output' must be true or false, got {value!r}.")
    return value


def _outputs(requested: Any, binary_default: bool) -> tuple[list[str] | None, frozenset[str]]:
    """The outputs asked for (None: all), and those to send as binary data: an output's own
    `parameters.binary_data`, else the request's `binary_data_output`."""
    if requested is None:
        return None, frozenset(OUTPUTS) if binary_default else frozenset()
    if not isinstance(requested, list) or not all(
        isinstance(o, dict)
        and isinstance(o.get("name"), str)
        and isinstance(o.get("parameters", {}), dict)
        for o in requested
    ):
        raise BadRequest(
            "'outputs' must be an array of objects with a string 'name' (and optional "
            "'parameters', an object)."
        )
    names = [o["name"] for o in requested]
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown:
        raise BadRequest(
            f"Unknown output {', '.join(map(repr, unknown))}; this server answers "
            f"{', '.join(OUTPUTS)}."
        )
    binary = set()
    for output in requested:
        wanted = output.get("parameters", {}).get("binary_data", binary_default)
        if not isinstance(wanted, bool):
            raise BadRequest(
                f"Output {output['name']!r}: 'parameters.binary_data' must be true or false, "
                f"got {wanted!r}."
            )
        if wanted:
            binary.add(output["name"])
    return names, frozenset(binary)


def check_outputs(request: InferRequest, task: str) -> None:
    """Refuse, before anything is scored, outputs this model does not produce."""
    produced = [o["name"] for o in output_metadata(task, "BYTES")]
    missing = [name for name in request.outputs or () if name not in produced]
    if missing:
        raise BadRequest(
            f"Output {', '.join(map(repr, missing))} is not produced by this model (a "
            "regression has no probabilities)."
        )


def encode(
    endpoint: str,
    request: InferRequest,
    answers: Sequence[Mapping[str, Any]],
    classes: Sequence[Any] | None,
    positive_class: Any,
) -> dict[str, Any]:
    """The inference response for the rows' /predict answers, in row order. `classes` and
    `positive_class` are those of the model that answered (None for a regression)."""
    n = len(answers)
    versions = [str(a["model_version"]) for a in answers]
    labels = [a["prediction"] for a in answers]
    outputs: dict[str, dict[str, Any]] = {
        "prediction": _output("prediction", label_datatype(labels), [n], labels),
    }
    if classes:
        outputs["proba"] = _output("proba", "FP64", [n], [a["proba"] for a in answers])
        names = [str(c) for c in classes]
        rows = [_probabilities(a, names, classes, positive_class) for a in answers]
        outputs["probabilities"] = _output(
            "probabilities",
            "FP64",
            [n, len(names)],
            [p for row in rows for p in row],
            {"classes": names},
        )
    outputs["observation_id"] = _output(
        "observation_id", "BYTES", [n], [str(i) for i in request.observation_ids]
    )
    outputs["model_version"] = _output("model_version", "BYTES", [n], versions)
    wanted = [name for name in request.outputs or list(outputs) if name in outputs]
    response: dict[str, Any] = {
        "model_name": endpoint,
        "id": str(request.id),
        "parameters": {"content_type": CONTENT_TYPE},
        "outputs": [outputs[name] for name in wanted],
    }
    if len(set(versions)) == 1:
        response["model_version"] = versions[0]
    warnings = [
        f"row {i}: input {w['field'].removeprefix('observation.')!r}: {w['problem']}"
        for i, a in enumerate(answers)
        for w in a.get("warnings") or []
    ]
    if warnings:
        response["parameters"]["warnings"] = warnings
    return response


def _output(
    name: str,
    datatype: str,
    shape: list[int],
    data: list[Any],
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if datatype == "BYTES":
        data = [None if v is None else str(v) for v in data]
    out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape, "data": data}
    if parameters:
        out["parameters"] = parameters
    return out


def _probabilities(
    answer: Mapping[str, Any], names: list[str], classes: Sequence[Any], positive: Any
) -> list[float | None]:
    """One row's probability of every class, in `classes` order."""
    by_class = answer.get("probabilities")
    if by_class is not None:
        return [by_class.get(name) for name in names]
    p = answer["proba"]
    if p is None or len(classes) != 2:
        return [None] * len(names)
    return [p if c == positive else 1.0 - p for c in classes]
