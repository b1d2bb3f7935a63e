"""The reference profile of training inputs that powers range warnings and drift."""

from typing import Any

import numpy as np
import pandas as pd

QUANTILES = [i / 10 for i in range(11)]


def is_numeric(dtype: Any) -> bool:
    """Return True for int, float and bool dtypes, which are profiled by range and quantiles."""
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def profile_frame(X: pd.DataFrame) -> dict[str, dict]:
    """Return a JSON-safe profile of every column of X, keyed by column name in order."""
    return {str(name): profile_column(X[name]) for name in X.columns}


def profile_column(column: pd.Series) -> dict:
    """Return the numeric or categorical profile of one column."""
    if is_numeric(column.dtype):
        return _numeric_profile(column)
    return _categorical_profile(column)


def _numeric_profile(column: pd.Series) -> dict:
    values = column.dropna().astype(np.float64)
    empty = values.empty
    quantiles = [] if empty else [float(q) for q in values.quantile(QUANTILES)]
    return {
        "kind": "numeric",
        "dtype": str(column.dtype),
        "min": None if empty else float(values.min()),
        "max": None if empty else float(values.max()),
        "mean": None if empty else float(values.mean()),
        # A single value has no sample spread; 0.0 keeps the profile free of NaN.
        "std": None if empty else float(values.std()) if len(values) > 1 else 0.0,
        "quantiles": quantiles,
        "bins": None if empty else _bins(values, quantiles[1:-1]),
        "missing": _missing_share(column),
    }


def _bins(values: pd.Series, inner_deciles: list[float]) -> dict:
    """Exact shares of the present values in the bins drift uses: edges at the distinct inner
    deciles, (-inf, e1], (e1, e2], ..., (ek, +inf). Deciles alone cannot give these shares for
    a feature with few distinct values (most rows share one decile)."""
    edges = sorted(set(inner_deciles))
    counts = np.bincount(
        np.searchsorted(np.array(edges), values.to_numpy(), side="left"), minlength=len(edges) + 1
    )
    return {"edges": edges, "shares": [float(c / len(values)) for c in counts]}


def _categorical_profile(column: pd.Series) -> dict:
    present = column.dropna().astype(str)
    # Shares are of all rows, so frequencies and missing add up to one.
    counts = present.value_counts(sort=False)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    total = len(column)
    return {
        "kind": "categorical",
        "dtype": str(column.dtype),
        "frequencies": {key: float(count / total) for key, count in ordered} if total else {},
        "missing": _missing_share(column),
    }


def _missing_share(column: pd.Series) -> float:
    return float(column.isna().mean()) if len(column) else 0.0
