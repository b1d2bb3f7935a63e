"""The size of a passenger's family on board."""

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data


class FamilySize(TransformerMixin, BaseEstimator):
    """Sum the input columns (siblings/spouses and parents/children) plus one for the passenger."""

    def __init__(self, feature_name: str = "family_size"):
        self.feature_name = feature_name

    def fit(self, X, y=None):
        """Record the number and names of the input columns."""
        validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        return self

    def transform(self, X) -> np.ndarray:
        """Return one float column: the row sums plus one, NaN where any input is missing."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        # Keep NaN rather than skipping it, so the imputer that follows decides what it means.
        return X.sum(axis=1, keepdims=True) + 1.0

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Return the single output name, after checking `input_features` against the fit."""
        check_is_fitted(self)
        if input_features is not None:
            names = np.asarray(input_features, dtype=object)
            if len(names) != self.n_features_in_:
                raise ValueError(
                    f"input_features has {len(names)} names, expected {self.n_features_in_}"
                )
            fitted = getattr(self, "feature_names_in_", None)
            if fitted is not None and not np.array_equal(names, fitted):
                raise ValueError("input_features is not equal to feature_names_in_")
        return np.asarray([self.feature_name], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
