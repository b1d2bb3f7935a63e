"""Reading cells of string columns that may hold None, NaN, pd.NA or blanks."""

from collections.abc import Callable

import numpy as np
import pandas as pd


def as_text(value: object) -> str | None:
    """Return the value as a stripped string, or None when it is missing or blank."""
    # A JSON null arrives as None, a CSV gap as NaN and pandas' str dtype may hold pd.NA:
    # all three must mean the same thing, or the same passenger gets two probabilities.
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    text = str(value).strip()
    return text or None


def map_cells(X: np.ndarray, func: Callable[[object], object]) -> np.ndarray:
    """Apply func to every cell of a 2-D array and return an object array of the results."""
    out = np.empty(X.shape, dtype=object)
    for index, value in np.ndenumerate(X):
        out[index] = func(value)
    return out
