"""A model's input schema, derived from columns.json and dtypes.pickle, and observation checks."""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from serving.errors import InvalidInput, detail
from serving.protocol.payloads import LONE_SURROGATE, NonFinite, json_type, unencodable

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
        if isinstance(value, int) and not -_FLOAT_MAX <= value <= _FLOAT_MAX:
            return "expected a number, got an integer too large for a float"
    elif f.kind == INTEGER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected an integer, got {_shown(value)}"
        if isinstance(value, float) and not value.is_integer():
            return f"expected an integer, got {value!r}"
        low, high = integer_range(f.dtype)
        if not low <= value <= high:
            return f"expected an integer between {low} and {high}, got {_shown(value)}"
    elif f.kind == BOOLEAN:
        if not isinstance(value, bool):
            return f"expected true or false, got {_shown(value)}"
    elif f.kind == STRING:
        if not isinstance(value, str):
            return f"expected a string, got {_shown(value)}"
        # Stored, then read back by drift and the dashboard: it must be text UTF-8 can carry.
        if unencodable(value):
            return LONE_SURROGATE
    elif f.kind == CATEGORY and value not in (f.categories or ()):
        return f"expected one of {list(f.categories or ())}, got {_shown(value)}"
    return None


_FLOAT_MAX = int(sys.float_info.max)


@functools.lru_cache(maxsize=64)
def integer_range(dtype: Any) -> tuple[int, int]:
    """The bounds of an integer column's dtype: a larger value would overflow when the frame
    is typed."""
    info = np.iinfo(getattr(dtype, "numpy_dtype", dtype))
    return int(info.min), int(info.max)


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


class _Missing:
    """The value of a field an observation does not have (None means JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _not_plain(f: Field, values: Sequence[Any]) -> list[int]:
    """Positions of the values `_problem` and `_normalised` must look at.

    The rest are the common values of the field's exact JSON type, which `_problem` accepts
    and `_normalised` returns unchanged; checking them by type alone keeps a large batch fast
    while the rules themselves stay in `_problem`.
    """
    none = type(None)
    if f.kind == STRING:
        # Only ASCII text is plain: any other may hold a lone surrogate, which `_problem` names.
        nullable = f.nullable
        return [
            i
            for i, v in enumerate(values)
            if not ((type(v) is str and v.isascii()) or (v is None and nullable))
        ]
    if f.kind == NUMBER:
        plain = {float, none} if f.nullable else {float}
        return [i for i, v in enumerate(values) if type(v) not in plain]
    if f.kind == INTEGER:
        low, high = integer_range(f.dtype)
        nullable = f.nullable
        return [
            i
            for i, v in enumerate(values)
            if not ((type(v) is int and low <= v <= high) or (v is None and nullable))
        ]
    if f.kind == BOOLEAN:
        return [i for i, v in enumerate(values) if type(v) is not bool]
    return list(range(len(values)))


def _maybe_surprising(f: Field, values: Sequence[Any]) -> list[int]:
    """Positions of the values `Field.surprise` may object to: outside the training range,
    or not among the categories training saw."""
    found: set[int] = set()
    if f.minimum is not None:
        low, high = f.minimum, f.maximum
        found.update(i for i, v in enumerate(values) if v is not None and not low <= v <= high)
    if f.seen is not None:
        seen = f.seen
        found.update(i for i, v in enumerate(values) if v is not None and v not in seen)
    return sorted(found)


def _not_an_object(prefix: str, value: Any) -> InvalidInput:
    return InvalidInput(
        f"'{prefix}' must be an object.",
        [detail(prefix, f"expected an object, got {json_type(value)}")],
    )


def _invalid(problems: list[dict[str, str]]) -> InvalidInput:
    names = ", ".join(p["field"] for p in problems)
    return InvalidInput(f"The observation has invalid fields: {names}.", problems)


def _outside_training(surprises: list[dict[str, str]]) -> InvalidInput:
    names = ", ".join(p["field"] for p in surprises)
    return InvalidInput(
        f"This model does not extrapolate, and these fields lie outside its training "
        f"data: {names}.",
        surprises,
    )


@dataclass(frozen=True)
class Checked:
    """Many observations checked at once: the bulk form of what `validate` answers."""

    # Every row's normalised values, field by field; a row with errors holds None there.
    columns: dict[str, list[Any]]
    # Why a row cannot be scored, by row position; the error `validate` would raise.
    errors: dict[int, InvalidInput]
    # Each row's warnings, as `validate` returns them (empty for rows with errors).
    warnings: list[list[dict[str, str]]]

    def valid(self) -> list[int]:
        """Positions of the rows that can be scored, in order."""
        return [i for i in range(len(self.warnings)) if i not in self.errors]


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
            raise _not_an_object(prefix, observation)
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
            raise _invalid(problems)
        surprises = [
            detail(f"{prefix}.{f.name}", problem)
            for f in self.fields
            if (problem := f.surprise(clean[f.name])) is not None
        ]
        if surprises and reject_surprises:
            raise _outside_training(surprises)
        return clean, self._unknown(observation, prefix) + surprises

    def validate_many(
        self,
        observations: Sequence[Any],
        prefix: str = "observation",
        reject_surprises: bool = False,
    ) -> Checked:
        """`validate` for many observations at once: the same rules, warnings and messages,
        applied column by column; one bad row never stops the others."""
        objects = [o if isinstance(o, dict) else {} for o in observations]
        columns = {f.name: [o.get(f.name, MISSING) for o in objects] for f in self.fields}
        names = self.by_name.keys()
        unknown = [[] if o.keys() == names else self._unknown(o, prefix) for o in objects]
        checked = self.validate_columns(columns, len(objects), prefix, reject_surprises, unknown)
        for i, observation in enumerate(observations):
            if not isinstance(observation, dict):
                checked.errors[i] = _not_an_object(prefix, observation)
                checked.warnings[i] = []
        return checked

    def validate_columns(
        self,
        columns: Mapping[str, Sequence[Any]],
        rows: int,
        prefix: str = "observation",
        reject_surprises: bool = False,
        unknown: Sequence[list[dict[str, str]]] | None = None,
    ) -> Checked:
        """Check `rows` observations given as one sequence of values per field (MISSING where
        a row lacks the field), by the rules of `validate`. `unknown` holds each row's
        warnings about ignored fields, which come first, as in `validate`."""
        problems: dict[int, list[dict[str, str]]] = {}
        clean: dict[str, list[Any]] = {}
        for f in self.fields:
            values = columns[f.name]
            out = list(values)
            name = f"{prefix}.{f.name}"
            for i in _not_plain(f, values):
                value = values[i]
                problem = f"required: {_expected(f)}" if value is MISSING else _problem(f, value)
                if problem:
                    problems.setdefault(i, []).append(detail(name, problem))
                    out[i] = None
                else:
                    out[i] = _normalised(f, value)
            clean[f.name] = out
        surprises: dict[int, list[dict[str, str]]] = {}
        for f in self.fields:
            values = clean[f.name]
            for i in _maybe_surprising(f, values):
                problem = f.surprise(values[i])
                if problem is not None and i not in problems:
                    surprises.setdefault(i, []).append(detail(f"{prefix}.{f.name}", problem))
        errors: dict[int, InvalidInput] = {i: _invalid(found) for i, found in problems.items()}
        warnings = [list(unknown[i]) if unknown else [] for i in range(rows)]
        for i, found in surprises.items():
            if reject_surprises:
                errors[i] = _outside_training(found)
            else:
                warnings[i].extend(found)
        for i in errors:
            warnings[i] = []
        return Checked(clean, errors, warnings)

    def _unknown(self, observation: dict[str, Any], prefix: str) -> list[dict[str, str]]:
        return [
            detail(f"{prefix}.{key}", "unknown field, ignored")
            for key in observation
            if key not in self.by_name
        ]

    def describe(self) -> list[dict[str, Any]]:
        """The fields as the API documents them."""
        return [f.describe() for f in self.fields]
