"""Constant imputation for string columns that treats None and NaN alike."""

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from custom_transformers.text import as_text, map_cells


class CategoricalImputer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Replace missing or blank cells with `fill_value` and turn the rest into strings.

    SimpleImputer only recognises one missing marker (NaN by default), so a None coming from a
    JSON null would slip through it and reach the encoder as an unknown category.
    """

    def __init__(self, fill_value: str = "missing"):
        self.fill_value = fill_value

    def fit(self, X, y=None):
        """Record the number and names of the input columns."""
        validate_data(self, X, dtype=None, ensure_all_finite=False)
        return self

    def transform(self, X) -> np.ndarray:
        """Return an object array of strings with missing cells set to `fill_value`."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=None, ensure_all_finite=False, reset=False)
        return map_cells(X, self._category)

    def _category(self, value: object) -> str:
        text = as_text(value)
        return self.fill_value if text is None else text

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        return tags
