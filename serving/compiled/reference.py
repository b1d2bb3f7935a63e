"""Deterministic observations to verify a compiled pipeline on.

Candidate values per column come from the model.json profile (quantiles, range, categories)
and from what the fitted pipeline itself learned (imputer statistics, scaler ranges, encoder
categories). Rows then vary one column at a time around a typical row, so every candidate is
seen, and a fixed-seed sample mixes them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.base import OneToOneFeatureMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

from serving.compiled.core import NotCompilable, flatten_steps, is_passthrough
from serving.model.schema import BOOLEAN, CATEGORY, INTEGER, NUMBER, STRING, Field, field_for

RANDOM_ROWS = 300
SEED = 20_240_601
_GENERIC_NUMBERS = (0.0, 1.0, -1.0, 0.5, 10.0, 100.0)
_GENERIC_STRINGS = ("a", "B", "0")


def reference_rows(
    columns: Sequence[str],
    dtypes: dict[str, Any],
    profile: dict | None,
    pipeline: Any,
) -> list[dict]:
    """Deterministic rows to verify against.

    Covers every profiled quantile, min and max, every known category, an unseen category,
    blank strings and None in every nullable column (int64 and bool columns never get None),
    one column at a time, then RANDOM_ROWS mixed rows drawn with a fixed seed. Without a
    profile, values come from the pipeline's fitted statistics and categories alone; raises
    NotCompilable('no reference profile to verify against') when there are none.
    """
    try:
        fields = [field_for(name, dtypes[name]) for name in columns]
    except (KeyError, ValueError) as exc:
        raise NotCompilable(f"cannot type the reference rows: {exc}") from exc
    hints = pipeline_hints(pipeline, list(columns))
    if not profile and not any(hints.values()):
        raise NotCompilable("no reference profile to verify against")
    profile = profile or {}
    known = {f.name: _known_values(f, profile.get(f.name), hints.get(f.name, [])) for f in fields}
    candidates = {f.name: _candidates(f, known[f.name]) for f in fields}
    base = {f.name: _typical(f, known[f.name], candidates[f.name]) for f in fields}
    rows = _one_at_a_time(fields, base, candidates)
    rows.append({f.name: None if f.nullable else base[f.name] for f in fields})
    rows.extend(_random_rows(fields, known, candidates))
    return rows


def typical_row(
    columns: Sequence[str], dtypes: dict[str, Any], profile: dict | None, pipeline: Any
) -> dict | None:
    """The first of `reference_rows`: each column at a typical value the training data or
    the fitted pipeline vouches for (no null). None when there is nothing to build it from."""
    try:
        return reference_rows(columns, dtypes, profile, pipeline)[0]
    except NotCompilable:
        return None


def _known_values(field: Field, profiled: dict | None, hinted: list[Any]) -> list[Any]:
    """Values the training data or the fitted pipeline vouch for: numbers or strings."""
    values: list[Any] = []
    if profiled:
        values.extend(profiled.get("quantiles") or [])
        values.extend(profiled.get(key) for key in ("min", "max", "mean"))
        values.extend((profiled.get("frequencies") or {}).keys())
    values.extend(hinted)
    if field.kind == STRING:
        return _unique(v for v in values if isinstance(v, str))
    numbers = [float(v) for v in values if _is_number(v) and not math.isnan(v)]
    return sorted(set(numbers))


def _candidates(field: Field, known: list[Any]) -> list[Any]:
    """Every value one column is tried with."""
    if field.kind == BOOLEAN:
        values: list[Any] = [False, True]
    elif field.kind == CATEGORY:
        values = list(field.categories or ())
    elif field.kind == STRING:
        values = _string_candidates(known)
    else:
        values = _number_candidates(field, known or list(_GENERIC_NUMBERS))
    return [*values, None] if field.nullable else values


def _string_candidates(known: list[str]) -> list[str]:
    categories = known or list(_GENERIC_STRINGS)
    unseen = "unseen"
    while unseen in categories:
        unseen += "_"
    # Blank and padded text are where "missing" and "unknown" handling differ most.
    return [*categories, unseen, "", " ", f" {categories[0]} "]


def _number_candidates(field: Field, known: list[float]) -> list[Any]:
    low, high = known[0], known[-1]
    span = (high - low) or 1.0
    midpoints = [(a + b) / 2 for a, b in itertools.pairwise(known)]
    values = sorted({*known, *midpoints, low - span / 10, high + span / 10})
    if field.kind == INTEGER:
        return sorted({int(f(v)) for v in values for f in (math.floor, math.ceil)})
    return values


def _typical(field: Field, known: list[Any], candidates: list[Any]) -> Any:
    """A present, ordinary value: the middle known number or the first category."""
    present = [v for v in candidates if v is not None]
    if field.kind in (NUMBER, INTEGER) and known:
        middle = known[len(known) // 2]
        return round(middle) if field.kind == INTEGER else middle
    return present[0]


def _one_at_a_time(
    fields: list[Field], base: dict[str, Any], candidates: dict[str, list[Any]]
) -> list[dict]:
    rows = [dict(base)]
    for f in fields:
        for value in candidates[f.name]:
            rows.append({**base, f.name: value})
    return rows


def _random_rows(
    fields: list[Field], known: dict[str, list[Any]], candidates: dict[str, list[Any]]
) -> list[dict]:
    rng = np.random.default_rng(SEED)
    return [
        {f.name: _draw(rng, f, known[f.name], candidates[f.name]) for f in fields}
        for _ in range(RANDOM_ROWS)
    ]


def _draw(rng: np.random.Generator, field: Field, known: list[Any], candidates: list[Any]) -> Any:
    """A candidate, or for numbers half the time a uniform draw across the known range."""
    if field.kind in (NUMBER, INTEGER) and known and rng.random() < 0.5:
        low, high = known[0], known[-1]
        value = float(rng.uniform(low, high)) if high > low else low
        return round(value) if field.kind == INTEGER else value
    return candidates[int(rng.integers(len(candidates)))]


def pipeline_hints(pipeline: Any, columns: list[str]) -> dict[str, list[Any]]:
    """Per input column, the values the fitted pipeline learned about it.

    Follows each column from the input through steps that keep one output column per input
    column, collecting imputer statistics, scaler means and ranges and encoder categories.
    """
    hints: dict[str, list[Any]] = {name: [] for name in columns}
    steps = flatten_steps(pipeline)
    first = steps[0] if steps else None
    if not isinstance(first, ColumnTransformer):
        _follow(steps[:-1], columns, hints)
        return hints
    names_in = list(getattr(first, "feature_names_in_", columns))
    indices_of = getattr(first, "_transformer_to_input_indices", {})
    for name, trans, _ in first.transformers_:
        if isinstance(trans, str):
            continue
        names = [str(names_in[i]) for i in indices_of.get(name, [])]
        _follow(flatten_steps(trans), names, hints)
    return hints


def _follow(steps: list[Any], names: list[str], hints: dict[str, list[Any]]) -> None:
    for step in steps:
        if is_passthrough(step):
            continue
        learned = _learned(step)
        if learned is not None and len(learned) == len(names):
            for name, values in zip(names, learned, strict=True):
                hints.setdefault(name, []).extend(values)
        if not _keeps_columns(step):
            return


def _learned(step: Any) -> list[list[Any]] | None:
    """Per column values a fitted step holds, or None for a step that holds none."""
    if isinstance(step, SimpleImputer):
        return [[v] for v in np.asarray(step.statistics_).tolist()]
    if isinstance(step, StandardScaler) and step.mean_ is not None:
        scale = step.scale_ if step.scale_ is not None else np.ones_like(step.mean_)
        return [[m - 2 * s, m, m + 2 * s] for m, s in zip(step.mean_, scale, strict=True)]
    if isinstance(step, MinMaxScaler):
        return [[lo, hi] for lo, hi in zip(step.data_min_, step.data_max_, strict=True)]
    if isinstance(step, OneHotEncoder | OrdinalEncoder):
        return [cats.tolist() for cats in step.categories_]
    return None


def _keeps_columns(step: Any) -> bool:
    """Whether column j of the step's output still belongs to input column j."""
    if isinstance(step, SimpleImputer):
        return not step.add_indicator and not np.any(
            [_is_number(v) and math.isnan(v) for v in np.asarray(step.statistics_).tolist()]
        )
    if isinstance(step, OneHotEncoder):
        return False
    return isinstance(step, StandardScaler | MinMaxScaler | OneToOneFeatureMixin)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_)


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))
