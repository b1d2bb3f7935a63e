"""The deck letter of a Titanic cabin."""

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from custom_transformers.text import as_text, map_cells


class CabinDeck(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Map each cabin such as "C85" to its deck letter "C", and missing cabins to `fill_value`.

    Multi-cabin bookings ("C23 C25 C27") share one deck, so the first character is enough.
    """

    def __init__(self, fill_value: str = "missing"):
        self.fill_value = fill_value

    def fit(self, X, y=None):
        """Record the number and names of the input columns."""
        validate_data(self, X, dtype=None, ensure_all_finite=False)
        return self

    def transform(self, X) -> np.ndarray:
        """Return an object array holding one deck letter (or `fill_value`) per cell."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=None, ensure_all_finite=False, reset=False)
        return map_cells(X, self._deck)

    def _deck(self, value: object) -> str:
        text = as_text(value)
        return self.fill_value if text is None else text[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        return tags
