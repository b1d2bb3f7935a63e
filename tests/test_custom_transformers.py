"""Tests for the custom transformers: scikit-learn's conventions and their own behaviour."""

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from custom_transformers import CabinDeck, CategoricalImputer, FamilySize

# The common checks feed random floats and compare outputs numerically; transformers that turn
# cells into strings cannot meet those, whatever they do with the floats.
STRING_OUTPUT_REASON = "outputs strings, which the check compares with numeric tolerances"
STRING_OUTPUT_FAILURES = {
    "check_pipeline_consistency": STRING_OUTPUT_REASON,
    "check_estimators_pickle": STRING_OUTPUT_REASON,
    "check_transformer_data_not_an_array": STRING_OUTPUT_REASON,
    "check_transformer_general": STRING_OUTPUT_REASON,
    "check_methods_sample_order_invariance": STRING_OUTPUT_REASON,
    "check_methods_subset_invariance": STRING_OUTPUT_REASON,
    "check_fit_idempotent": STRING_OUTPUT_REASON,
    "check_transformer_preserve_dtypes": "turns float input into string categories by design",
}


def expected_failed_checks(estimator) -> dict[str, str]:
    """Return the common checks that cannot apply to this transformer, with the reason."""
    if isinstance(estimator, CabinDeck | CategoricalImputer):
        return STRING_OUTPUT_FAILURES
    return {}


@parametrize_with_checks(
    [FamilySize(), CabinDeck(), CategoricalImputer()],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_conventions(estimator, check):
    check(estimator)


def test_family_size_adds_one_to_the_sum():
    X = pd.DataFrame({"SibSp": [0, 1, 3], "Parch": [0, 2, 1]})
    out = FamilySize().fit(X).transform(X)
    np.testing.assert_array_equal(out, [[1.0], [4.0], [5.0]])
    assert out.dtype == np.float64


def test_family_size_keeps_missing_as_nan():
    X = pd.DataFrame({"SibSp": [1.0, np.nan], "Parch": [0.0, 1.0]})
    out = FamilySize().fit(X).transform(X)
    assert out[0, 0] == 2.0
    assert np.isnan(out[1, 0])


def test_family_size_feature_names():
    X = pd.DataFrame({"SibSp": [0], "Parch": [0]})
    family = FamilySize().fit(X)
    assert list(family.feature_names_in_) == ["SibSp", "Parch"]
    assert list(family.get_feature_names_out()) == ["family_size"]
    assert list(FamilySize(feature_name="size").fit(X).get_feature_names_out()) == ["size"]
    with pytest.raises(ValueError, match="feature_names_in_"):
        family.get_feature_names_out(["Parch", "SibSp"])
    with pytest.raises(ValueError, match="expected 2"):
        family.get_feature_names_out(["SibSp"])


@pytest.mark.parametrize("dtype", [object, "str"])
def test_cabin_deck_takes_the_first_letter(dtype):
    X = pd.DataFrame({"Cabin": pd.Series(["C85", "C23 C25 C27", "T", " E12"], dtype=dtype)})
    out = CabinDeck().fit(X).transform(X)
    assert out.ravel().tolist() == ["C", "C", "T", "E"]


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA, "", "  "])
def test_cabin_deck_treats_every_missing_marker_alike(missing):
    X = pd.DataFrame({"Cabin": pd.Series(["B5", missing], dtype=object)})
    out = CabinDeck().fit(X).transform(X)
    assert out.ravel().tolist() == ["B", "missing"]
    assert CabinDeck(fill_value="none").fit(X).transform(X)[1, 0] == "none"


def test_cabin_deck_feature_names_and_fitting():
    X = pd.DataFrame({"Cabin": ["A1"]})
    with pytest.raises(NotFittedError):
        CabinDeck().transform(X)
    deck = CabinDeck().fit(X)
    assert deck.n_features_in_ == 1
    assert list(deck.get_feature_names_out()) == ["Cabin"]


@pytest.mark.parametrize("dtype", [object, "str"])
def test_categorical_imputer_fills_none_and_nan(dtype):
    X = pd.DataFrame(
        {
            "Sex": pd.Series(["male", None, "female"], dtype=dtype),
            "Embarked": pd.Series([np.nan, "S", "C"], dtype=dtype),
        }
    )
    imputer = CategoricalImputer().fit(X)
    out = imputer.transform(X)
    assert out.tolist() == [["male", "missing"], ["missing", "S"], ["female", "C"]]
    assert list(imputer.get_feature_names_out()) == ["Sex", "Embarked"]
