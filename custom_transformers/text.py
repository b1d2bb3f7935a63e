"""Reading cells of string columns that may hold None, NaN, pd.NA or blanks."""

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data


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


class CellTransformer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """A stateless transformer of text cells, one output cell per input cell.

    Subclasses define `_cell(value) -> str`; missing cells (None, NaN, pd.NA, blank) map to
    `fill_value` there.
    """

    def __init__(self, fill_value: str = "missing"):
        self.fill_value = fill_value

    def fit(self, X, y=None):
        """Record the number and names of the input columns."""
        validate_data(self, X, dtype=None, ensure_all_finite=False)
        return self

    def transform(self, X) -> np.ndarray:
        """Return an object array holding `_cell` of every cell."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=None, ensure_all_finite=False, reset=False)
        return map_cells(X, self._cell)

    def _cell(self, value: object) -> str:
        raise NotImplementedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        return tags
