"""A model's input schema, derived from columns.json and dtypes.pickle, and observation checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from serving.errors import InvalidInput, detail
from serving.payloads import NonFinite, json_type

NUMBER, INTEGER, BOOLEAN, STRING, CATEGORY = "number", "integer", "boolean", "string", "category"


@dataclass(frozen=True)
class Field:
    """One input column: its JSON kind, the pandas dtype the model was trained on, and more."""

    name: str
    kind: str
    dtype: Any
    # An int64 column cannot hold a missing value, so training never saw one there.
    nullable: bool = True
    categories: tuple[Any, ...] | None = None
    # From the training profile in model.json: the range and the categories seen in training.
    minimum: float | None = None
    maximum: float | None = None
    seen: frozenset[Any] | None = None

    def describe(self) -> dict[str, Any]:
        """The field as the API's schema documents show it."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.kind,
            "dtype": str(self.dtype),
            "nullable": self.nullable,
        }
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.minimum is not None:
            out["training_range"] = [self.minimum, self.maximum]
        if self.seen is not None:
            out["training_categories"] = sorted(self.seen, key=str)
        return out

    def surprise(self, value: Any) -> str | None:
        """Why a valid value lies outside what training saw, or None when it does not."""
        if value is None:
            return None
        if self.minimum is not None and not self.minimum <= value <= self.maximum:
            return f"{value!r} is outside the training range [{self.minimum}, {self.maximum}]"
        if self.seen is not None and value not in self.seen:
            return f"{value!r} was not seen in training"
        return None


def field_for(name: str, dtype: Any) -> Field:
    """Map a pandas dtype to the JSON values the service accepts for it."""
    if isinstance(dtype, pd.CategoricalDtype):
        return Field(name, CATEGORY, dtype, categories=tuple(dtype.categories.tolist()))
    if pd.api.types.is_bool_dtype(dtype):
        return Field(name, BOOLEAN, dtype, nullable=False)
    if pd.api.types.is_integer_dtype(dtype):
        # Nullable extension integers (Int64) can hold missing values; numpy's cannot.
        return Field(
            name, INTEGER, dtype, nullable=isinstance(dtype, pd.api.extensions.ExtensionDtype)
        )
    if pd.api.types.is_float_dtype(dtype):
        return Field(name, NUMBER, dtype)
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return Field(name, STRING, dtype)
    raise ValueError(f"column {name!r} has dtype {dtype}, which the service cannot accept")


def _problem(f: Field, value: Any) -> str | None:
    """Why a JSON value cannot feed this field, or None when it can."""
    if isinstance(value, NonFinite):
        shown = "Infinity" if value > 0 else "-Infinity"
        return f"expected {_expected(f)}, got {shown}"
    if value is None:
        return None if f.nullable else f"expected {_expected(f)}, got null"
    if f.kind == NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {_shown(value)}"
    elif f.kind == INTEGER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected an integer, got {_shown(value)}"
        if isinstance(value, float) and not value.is_integer():
            return f"expected an integer, got {value!r}"
    elif f.kind == BOOLEAN:
        if not isinstance(value, bool):
            return f"expected true or false, got {_shown(value)}"
    elif f.kind == STRING:
        if not isinstance(value, str):
            return f"expected a string, got {_shown(value)}"
    elif f.kind == CATEGORY and value not in (f.categories or ()):
        return f"expected one of {list(f.categories or ())}, got {_shown(value)}"
    return None


def _expected(f: Field) -> str:
    return {
        NUMBER: "a number",
        INTEGER: "an integer",
        BOOLEAN: "true or false",
        STRING: "a string",
        CATEGORY: "a category",
    }[f.kind]


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40] + "...")
    if isinstance(value, list | dict):
        return json_type(value)
    return repr(value)


def _normalised(f: Field, value: Any) -> Any:
    # The stored observation is what the model saw: numbers as the column's type.
    if value is None:
        return None
    if f.kind == NUMBER:
        return float(value)
    if f.kind == INTEGER:
        return int(value)
    return value


@dataclass(frozen=True)
class InputSchema:
    """The ordered fields a model takes."""

    fields: tuple[Field, ...]
    by_name: Mapping[str, Field] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.fields})

    @classmethod
    def from_columns(
        cls,
        columns: Sequence[str],
        dtypes: Mapping[str, Any],
        profile: Mapping[str, Any] | None = None,
    ) -> InputSchema:
        """Build the schema; every column needs a dtype. A training profile adds ranges."""
        missing = [c for c in columns if c not in dtypes]
        if missing:
            raise ValueError(f"dtypes has no entry for columns {missing}")
        fields = []
        for column in columns:
            f = field_for(column, dtypes[column])
            seen = (profile or {}).get(column) or {}
            if f.kind in (NUMBER, INTEGER) and "min" in seen and "max" in seen:
                f = replace(f, minimum=seen["min"], maximum=seen["max"])
            elif f.kind in (STRING, CATEGORY) and "frequencies" in seen:
                f = replace(f, seen=frozenset(seen["frequencies"]))
            fields.append(f)
        return cls(tuple(fields))

    @property
    def columns(self) -> list[str]:
        """Column names in model order."""
        return [f.name for f in self.fields]

    def validate(
        self, observation: Any, prefix: str = "observation", reject_surprises: bool = False
    ) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """Check one observation; return it normalised, plus warnings: ignored extra keys,
        values outside the training range, categories training never saw.

        Raises InvalidInput naming every bad field at once; with `reject_surprises`, values
        outside the training data are errors too.
        """
        if not isinstance(observation, dict):
            raise InvalidInput(
                f"'{prefix}' must be an object.",
                [detail(prefix, f"expected an object, got {json_type(observation)}")],
            )
        problems: list[dict[str, str]] = []
        clean: dict[str, Any] = {}
        for f in self.fields:
            if f.name not in observation:
                problems.append(detail(f"{prefix}.{f.name}", f"required: {_expected(f)}"))
                continue
            value = observation[f.name]
            problem = _problem(f, value)
            if problem:
                problems.append(detail(f"{prefix}.{f.name}", problem))
            else:
                clean[f.name] = _normalised(f, value)
        if problems:
            names = ", ".join(p["field"] for p in problems)
            raise InvalidInput(f"The observation has invalid fields: {names}.", problems)
        surprises = [
            detail(f"{prefix}.{f.name}", problem)
            for f in self.fields
            if (problem := f.surprise(clean[f.name])) is not None
        ]
        if surprises and reject_surprises:
            names = ", ".join(p["field"] for p in surprises)
            raise InvalidInput(
                f"This model does not extrapolate, and these fields lie outside its training "
                f"data: {names}.",
                surprises,
            )
        unknown = [
            detail(f"{prefix}.{key}", "unknown field, ignored")
            for key in observation
            if key not in self.by_name
        ]
        return clean, unknown + surprises

    def describe(self) -> list[dict[str, Any]]:
        """The fields as the API documents them."""
        return [f.describe() for f in self.fields]
