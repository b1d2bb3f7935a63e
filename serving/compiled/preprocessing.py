"""Converters for sklearn's imputer, scalers and encoders."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

from serving.compiled.core import (
    NotCompilable,
    Transform,
    as_float,
    as_matrix,
    register_transformer,
)


def is_nan(value: Any) -> bool:
    """Whether a cell is a float NaN, the one missing marker left after the frame is built."""
    return isinstance(value, float | np.floating) and math.isnan(value)


def _missing_mask(values: np.ndarray, marker: Any) -> np.ndarray:
    """sklearn's _get_mask: where `values` holds the imputer's missing marker."""
    if not is_nan(marker):
        return values == marker
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype == object:
        # NaN is the one object that differs from itself; None is a value, as in sklearn.
        return values != values
    return np.zeros(values.shape, dtype=bool)


@register_transformer(SimpleImputer)
def _simple_imputer(imp: SimpleImputer) -> Transform:
    marker = imp.missing_values
    if marker is not None and not isinstance(marker, int | float | str | np.generic):
        raise NotCompilable(f"no converter for SimpleImputer(missing_values={marker!r})")
    statistics = np.asarray(imp.statistics_)
    if imp.keep_empty_features:
        keep = np.ones(len(statistics), dtype=bool)
    else:
        # A column never observed in fit has a NaN statistic; sklearn drops it from the output.
        keep = ~_missing_mask(statistics.reshape(1, -1), np.nan).ravel()
    fill = statistics[keep].astype(imp._fill_dtype).reshape(1, -1)
    keep_all = bool(keep.all())
    indicated = _indicator_columns(imp)
    fit_dtype = imp._fit_dtype
    numeric_only = imp.strategy in ("mean", "median")

    def transform(X: Any) -> np.ndarray:
        X = as_matrix(X)
        if fit_dtype.kind == "O":
            X = X.astype(object)
        elif numeric_only:
            X = as_float(X)
        mask = _missing_mask(X, marker)
        if not is_nan(marker) and X.dtype.kind == "f" and np.isnan(X).any():
            raise ValueError("Input X contains NaN.")
        out = X.copy() if keep_all else X[:, keep]
        np.copyto(out, fill, where=mask if keep_all else mask[:, keep], casting="unsafe")
        if indicated is None:
            return out
        return np.hstack((out, mask[:, indicated]))

    return transform


def _indicator_columns(imp: SimpleImputer) -> np.ndarray | slice | None:
    """Which mask columns add_indicator appends (features missing in fit, or all)."""
    if not imp.add_indicator:
        return None
    indicator = imp.indicator_
    if indicator.features == "all":
        return slice(None)
    return np.asarray(indicator.features_, dtype=np.intp)


@register_transformer(StandardScaler)
def _standard_scaler(scaler: StandardScaler) -> Transform:
    mean = np.asarray(scaler.mean_) if scaler.with_mean else None
    scale = np.asarray(scaler.scale_) if scaler.with_std else None

    def transform(X: Any) -> np.ndarray:
        # Copy, then subtract and divide in place, in sklearn's order and dtype.
        out = as_float(X).copy()
        if mean is not None:
            out -= mean.astype(out.dtype, copy=False)
        if scale is not None:
            out /= scale.astype(out.dtype, copy=False)
        return out

    return transform


@register_transformer(MinMaxScaler)
def _min_max_scaler(scaler: MinMaxScaler) -> Transform:
    scale, offset = np.asarray(scaler.scale_), np.asarray(scaler.min_)
    low, high = scaler.feature_range
    clip = bool(scaler.clip)

    def transform(X: Any) -> np.ndarray:
        out = as_float(X).copy()
        out *= scale
        out += offset
        if clip:
            np.clip(out, low, high, out=out)
        return out

    return transform


_ZERO = -1  # encode as an all-zero block
_ERROR = -2  # handle_unknown='error'


# Below this many rows an encoder works cell by cell in Python (NumPy's per-call cost wins).
_FEW_ROWS = 16


@dataclass(frozen=True)
class _Lookup:
    """One encoded input column: each known category's output position, NaN's, an unknown's."""

    table: dict[Any, int]
    nan: int
    unknown: int
    feature: int

    def position(self, value: Any) -> int:
        code = self.nan if is_nan(value) else self.table.get(value, self.unknown)
        if code == _ERROR:
            raise ValueError(
                f"Found unknown categories [{value!r}] in column {self.feature} during transform"
            )
        return code

    def positions(self, values: list[Any]) -> np.ndarray:
        """`position` of every value, with the table lookups done by dict.get in C.

        A value the table does not hold (NaN, or unknown) gets `unknown` there; only those,
        usually few, are looked at again one by one. A few rows (single requests) go one by
        one at once: the second pass would cost them ~2 us per column.
        """
        if len(values) < _FEW_ROWS:
            return np.fromiter(map(self.position, values), np.intp, len(values))
        codes = np.fromiter(map(self.table.get, values, repeat(self.unknown)), np.intp, len(values))
        if self.nan != self.unknown or self.unknown == _ERROR:
            for i in np.flatnonzero(codes == self.unknown).tolist():
                codes[i] = self.position(values[i])
        return codes


def _lookups(
    categories: Sequence[np.ndarray],
    positions: Sequence[Sequence[int]],
    unknown: Sequence[int],
) -> list[_Lookup]:
    """Tables from category j of feature i to positions[i][j]; NaN categories kept apart."""
    out = []
    for i, (cats, where) in enumerate(zip(categories, positions, strict=True)):
        table: dict[Any, int] = {}
        nan = unknown[i]
        for category, position in zip(cats.tolist(), where, strict=True):
            if is_nan(category):
                nan = position
            else:
                table[category] = position
        out.append(_Lookup(table, nan, unknown[i], i))
    return out


def _one_hot_positions(enc: OneHotEncoder, i: int) -> tuple[list[int], int]:
    """Column (within feature i's block) of each category and of an unknown value.

    Follows OneHotEncoder.transform: infrequent categories share one column, the dropped
    category encodes as zeros and later columns shift left by one.
    """
    n_cats = len(enc.categories_[i])
    mappings = getattr(enc, "_default_to_infrequent_mappings", None)
    grouped = (
        mappings[i]
        if enc._infrequent_enabled and mappings is not None and mappings[i] is not None
        else None
    )
    group = list(range(n_cats)) if grouped is None else [int(g) for g in grouped]
    drops = enc._drop_idx_after_grouping
    drop = None if drops is None or drops[i] is None else int(drops[i])

    def column(g: int) -> int:
        if drop is None or g < drop:
            return g
        return _ZERO if g == drop else g - 1

    positions = [column(g) for g in group]
    infrequent = enc._infrequent_indices[i] if enc._infrequent_enabled else None
    if enc.handle_unknown == "error":
        unknown = _ERROR
    elif enc.handle_unknown in ("infrequent_if_exist", "warn") and infrequent is not None:
        unknown = column(group[int(infrequent[0])])
    else:
        unknown = _ZERO
    return positions, unknown


@register_transformer(OneHotEncoder)
def _one_hot_encoder(enc: OneHotEncoder) -> Transform:
    for attribute in ("_drop_idx_after_grouping", "_n_features_outs", "_infrequent_enabled"):
        if not hasattr(enc, attribute):
            raise NotCompilable(f"OneHotEncoder without {attribute}")
    widths = list(enc._n_features_outs)
    offsets = np.cumsum([0, *widths])
    positions, unknown = [], []
    for i in range(len(enc.categories_)):
        where, unseen = _one_hot_positions(enc, i)
        positions.append([p if p < 0 else p + int(offsets[i]) for p in where])
        unknown.append(unseen if unseen < 0 else unseen + int(offsets[i]))
    lookups = _lookups(enc.categories_, positions, unknown)
    width, dtype = int(offsets[-1]), enc.dtype

    def transform(X: Any) -> np.ndarray:
        X = as_matrix(X)
        out = np.zeros((X.shape[0], width), dtype=dtype)
        if X.shape[0] < _FEW_ROWS:
            # Single requests: one Python assignment per cell beats the three NumPy calls
            # (codes, non-negative rows, fancy index) a batch takes per column.
            for i, row in enumerate(X.tolist()):
                for lookup, value in zip(lookups, row, strict=True):
                    position = lookup.position(value)
                    if position >= 0:
                        out[i, position] = 1
            return out
        for lookup, column in zip(lookups, X.T, strict=True):
            hot = lookup.positions(column.tolist())
            rows = np.flatnonzero(hot >= 0)
            out[rows, hot[rows]] = 1
        return out

    return transform


@register_transformer(OrdinalEncoder)
def _ordinal_encoder(enc: OrdinalEncoder) -> Transform:
    if enc._infrequent_enabled:
        raise NotCompilable("no converter for OrdinalEncoder with infrequent categories")
    unknown_code = _ERROR if enc.handle_unknown == "error" else _ZERO
    positions = [list(range(len(cats))) for cats in enc.categories_]
    lookups = _lookups(enc.categories_, positions, [unknown_code] * len(positions))
    dtype, missing_code = enc.dtype, enc.encoded_missing_value
    unknown_value = enc.unknown_value

    def code(lookup: _Lookup, value: Any) -> float:
        position = lookup.position(value)
        if position == _ZERO:
            return unknown_value
        # A NaN category that was seen in fit encodes as encoded_missing_value.
        return missing_code if is_nan(value) else position

    def transform(X: Any) -> np.ndarray:
        X = as_matrix(X)
        out = np.empty((X.shape[0], len(lookups)), dtype=dtype)
        for j, (lookup, column) in enumerate(zip(lookups, X.T, strict=True)):
            out[:, j] = [code(lookup, v) for v in column.tolist()]
        return out

    return transform
