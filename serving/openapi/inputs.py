"""Each endpoint's request schemas, from its models' input schemas: what the service accepts,
no more and no less, so a generated client and a fuzzer see the rules validation applies."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from serving.model.folders import version_order
from serving.model.runtime import LoadedModel
from serving.model.schema import BOOLEAN, CATEGORY, INTEGER, NUMBER, STRING, Field, integer_range
from serving.openapi.components import array, ref
from serving.reports import quality

# Examples in the document stay short; the full list is in x-training-categories.
MAX_EXAMPLES = 10


def field_schema(
    f: Field, rejects_surprises: bool, frequencies: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """One input field as JSON Schema. Training ranges and seen categories bound the value
    only when the model rejects surprises; otherwise values outside them are answered with a
    warning, and the schema says so in words and in `x-training-*` instead (its examples are
    the categories training saw most often)."""
    schema: dict[str, Any]
    notes = [f"dtype {f.dtype}"]
    if f.kind == CATEGORY:
        schema = {"enum": list(f.categories or ())}
    elif f.kind == BOOLEAN:
        schema = {"type": "boolean"}
    elif f.kind == INTEGER:
        low, high = integer_range(f.dtype)
        schema = {"type": "integer", "minimum": low, "maximum": high}
        notes.append("integral numbers such as 3.0 are accepted")
    elif f.kind == NUMBER:
        schema = {"type": "number"}
    else:
        schema = {"type": "string"}

    if f.minimum is not None:
        schema["x-training-range"] = [_plain_number(f.minimum), _plain_number(f.maximum)]
        if rejects_surprises:
            schema["minimum"], schema["maximum"] = schema["x-training-range"]
            notes.append("values outside the training range are rejected (422)")
        else:
            notes.append(
                f"training range [{f.minimum}, {f.maximum}]: values outside it are "
                "accepted with a warning"
            )
    if f.seen is not None and f.kind == STRING:
        seen = sorted(f.seen, key=str)
        schema["x-training-categories"] = seen
        if rejects_surprises:
            schema = {"enum": seen, **{k: v for k, v in schema.items() if k != "type"}}
            notes.append("only categories seen in training are accepted")
        else:
            common = sorted(seen, key=lambda c: -(frequencies or {}).get(c, 0))
            schema["examples"] = common[:MAX_EXAMPLES]
            notes.append("categories training never saw are accepted with a warning")

    if f.nullable:
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        else:
            schema["type"] = [schema["type"], "null"]
        notes.append("null (or NaN) means missing")
    else:
        notes.append("not null: training never saw a missing value here")
    schema["description"] = "; ".join(notes) + "."
    return schema


def observation_schema(model: LoadedModel) -> dict[str, Any]:
    """A model's observation: every field required, unknown fields ignored with a warning."""
    fields = model.schema.fields
    profile = model.metadata.get("profile") or {}
    schema = {
        "type": "object",
        "required": [f.name for f in fields],
        "properties": {
            f.name: field_schema(
                f, model.rejects_surprises, (profile.get(f.name) or {}).get("frequencies")
            )
            for f in fields
        },
        # Extra keys are ignored and listed in the answer's warnings, not refused.
        "additionalProperties": True,
    }
    example = example_observation(model)
    if example is not None:
        schema["examples"] = [example]
    return schema


def example_observation(model: LoadedModel) -> dict[str, Any] | None:
    """A typical observation from the training profile: medians and the most frequent
    categories; None when the profile does not cover every field."""
    profile = model.metadata.get("profile") or {}
    example: dict[str, Any] = {}
    for f in model.schema.fields:
        entry = profile.get(f.name) or {}
        quantiles = entry.get("quantiles") or []
        frequencies: dict[str, float] = entry.get("frequencies") or {}
        if f.kind in (NUMBER, INTEGER) and quantiles:
            middle = quantiles[len(quantiles) // 2]
            example[f.name] = round(middle) if f.kind == INTEGER else middle
        elif f.kind == STRING and frequencies:
            example[f.name] = max(frequencies, key=frequencies.__getitem__)
        elif f.kind == CATEGORY and f.categories:
            example[f.name] = f.categories[0]
        elif f.kind == BOOLEAN:
            example[f.name] = False
        else:
            return None
    return example


def truth_schema(models: Iterable[LoadedModel]) -> dict[str, Any]:
    """What `true_class` accepts: a class label, or its text; a finite number for a
    regression."""
    labels: list[Any] = []
    regression = False
    # A regression's truth must lie within every version's bounds: the stored row's version
    # checks it, and any version may have answered.
    low, high = -quality.MEASURABLE, quality.MEASURABLE
    for model in models:
        if not model.classes:
            regression = True
            lowest, highest, _ = quality.truth_bounds(model)
            low, high = max(low, lowest), min(high, highest)
        for label in model.classes:
            for value in (label, str(label)):
                # JSON Schema tells 1 from "1" (and from true), so compare types too.
                if not any(type(value) is type(known) and value == known for known in labels):
                    labels.append(value)
    # One enum per JSON type: a generated client types an enum by its values, and one that
    # mixes 0 and "0" is dropped (with the operations that use it).
    choices: list[dict[str, Any]] = []
    for kind in ("boolean", "integer", "number", "string"):
        values = [v for v in labels if _json_type(v) == kind]
        if values:
            choices.append({"type": kind, "enum": values})
    if regression:
        choices.append({"type": "number", "minimum": low, "maximum": high})
    schema = choices[0] if len(choices) == 1 else {"anyOf": choices}
    return {**schema, "description": "The true class of the stored prediction (or value)."}


def _json_type(value: Any) -> str:
    """A label's JSON type (labels are plain Python values: LoadedModel.classes). bool is
    tested first: an int in Python, not in JSON."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def endpoint_components(
    endpoint: str, versions: Mapping[str, LoadedModel], max_batch_rows: int
) -> dict[str, dict[str, Any]]:
    """The schemas `<endpoint>.Observation`, `.PredictRequest`, `.UpdateRequest` and
    `.BatchRequest`. Any version may answer (by ?version=, ?status= or an A/B test), so the
    observation is each distinct version schema, in `anyOf` when versions differ."""
    ordered = [versions[v] for v in sorted(versions, key=version_order)]
    distinct: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for model in ordered:
        schema = observation_schema(model)
        key = json.dumps({k: v for k, v in schema.items() if k != "examples"}, sort_keys=True)
        distinct.setdefault(key, ([], schema))[0].append(model.version)
    if len(distinct) == 1:
        [(_, observation)] = distinct.values()
    else:
        observation = {
            "anyOf": [
                {**schema, "title": f"version {', '.join(names)}"}
                for names, schema in distinct.values()
            ]
        }
    observation["description"] = (
        f"An observation for {endpoint!r}: its fields as the model was trained on them."
    )
    prefix = f"{endpoint}."
    return {
        f"{prefix}Observation": observation,
        f"{prefix}PredictRequest": predict_request(ref(f"{prefix}Observation")),
        f"{prefix}UpdateRequest": update_request(truth_schema(ordered)),
        f"{prefix}BatchRequest": batch_request(ref(f"{prefix}PredictRequest"), max_batch_rows),
    }


def predict_request(observation: dict[str, Any]) -> dict[str, Any]:
    """`{"id": ..., "observation": {...}}`; other keys are ignored."""
    return {
        "type": "object",
        "required": ["id", "observation"],
        "properties": {"id": ref("ObservationId"), "observation": observation},
    }


def update_request(truth: dict[str, Any]) -> dict[str, Any]:
    """`{"id": ..., "true_class": ...}`; other keys are ignored."""
    return {
        "type": "object",
        "required": ["id", "true_class"],
        "properties": {"id": ref("ObservationId"), "true_class": truth},
    }


def batch_request(row: dict[str, Any], max_batch_rows: int) -> dict[str, Any]:
    """A JSON array of predict bodies. A row the model refuses gets its own error in a 200
    answer, so the rows' schema describes the rows that are scored."""
    return array(row, minItems=1, maxItems=max_batch_rows)


GENERIC_OBSERVATION = {
    "type": "object",
    "description": "The endpoint's fields: see its own paths (`/api/v1/<name>/predict`) or "
    "`GET /api/v1/{endpoint}` for the exact schema.",
}
GENERIC_TRUTH = {
    "type": ["string", "number"],
    # Numbers beyond these are refused by every model (serving/reports/quality.py, MEASURABLE).
    "minimum": -quality.MEASURABLE,
    "maximum": quality.MEASURABLE,
    "description": "One of the model's classes (or its text); a number for a regression.",
}


def generic_components(max_batch_rows: int) -> dict[str, dict[str, Any]]:
    """The same four schemas for `/api/v1/{endpoint}/…`, where the endpoint is a parameter."""
    return {
        "Observation": GENERIC_OBSERVATION,
        "PredictRequest": predict_request(ref("Observation")),
        "UpdateRequest": update_request(GENERIC_TRUTH),
        "BatchRequest": batch_request(ref("PredictRequest"), max_batch_rows),
    }


def _plain_number(value: float | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value
