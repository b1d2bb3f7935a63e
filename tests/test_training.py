"""Tests for the training package: artifacts, reproducibility and the model.json contract."""

import json
import math
import pickle
import re
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from serving.model import artifacts
from serving.model.profile import QUANTILES
from tests.environment import clean_environ
from tests.samples import PASSENGER, RETRAIN_TOLERANCE
from training import titanic
from training.__main__ import parse_args
from training.data import REPO_ROOT

MODEL_FILES = ["pipeline.pickle", "dtypes.pickle", "columns.json", "model.json"]
STRING_COLUMNS = ["Cabin", "Embarked", "Sex"]


def load_folder(folder: Path):
    """Return the pipeline, dtypes and columns of a model folder."""
    pipeline = joblib.load(folder / "pipeline.pickle")
    with open(folder / "dtypes.pickle", "rb") as handle:
        dtypes = pickle.load(handle)
    columns = json.loads((folder / "columns.json").read_text())
    return pipeline, dtypes, columns


def survival_proba(pipeline, X: pd.DataFrame) -> np.ndarray:
    """Return the probability of the positive class for every row."""
    return pipeline.predict_proba(X)[:, list(pipeline.classes_).index(1)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """Train once into a temporary folder and share the result across this module."""
    out = tmp_path_factory.mktemp("titanic")
    return out, titanic.train(out)


@pytest.fixture(scope="module")
def csv_inputs() -> pd.DataFrame:
    """The eight input columns of all 891 rows, as pandas reads them."""
    return titanic.load()[0]


def test_writes_the_four_files(trained):
    out, _ = trained
    assert sorted(path.name for path in out.iterdir()) == sorted(MODEL_FILES)


def test_reproduces_the_committed_probabilities(trained, csv_inputs):
    fresh, _, _ = load_folder(trained[0])
    committed, _, _ = load_folder(REPO_ROOT)
    diff = np.abs(survival_proba(fresh, csv_inputs) - survival_proba(committed, csv_inputs))
    assert len(csv_inputs) == 891
    assert diff.max() <= RETRAIN_TOLERANCE


def test_columns_and_dtypes_describe_the_csv_inputs(trained, csv_inputs):
    _, dtypes, columns = load_folder(trained[0])
    assert columns == ["Age", "Cabin", "Embarked", "Fare", "Parch", "Pclass", "Sex", "SibSp"]
    assert list(dtypes.index) == columns
    # As read, with text in pandas' own storage whether or not pyarrow is installed.
    pd.testing.assert_series_equal(dtypes, artifacts.portable_dtypes(csv_inputs.dtypes))


def test_model_json_contract(trained):
    out, model = trained
    assert json.loads((out / "model.json").read_text()) == model
    assert (out / "model.json").read_text().endswith("}\n")
    assert model["name"] == "titanic"
    assert model["version"] == "1"
    assert model["task"] == "binary_classification"
    assert model["target"] == "Survived"
    assert model["class_labels"] == [0, 1]
    assert model["positive_class"] == 1
    assert model["pipeline_sha256"] == artifacts.sha256_file(out / "pipeline.pickle")
    assert set(model["library_versions"]) == {"python", "scikit-learn", "pandas", "numpy", "joblib"}
    training = model["training"]
    assert training["data"] == "data/titanic.csv"
    assert training["data_sha256"] == artifacts.sha256_file(titanic.DATA_PATH)
    assert training["rows"] == 891
    assert training["random_state"] == 42
    assert training["trained_by"] == "python -m training titanic"


def test_holdout_metrics_are_sane(trained):
    holdout = trained[1]["metrics"]["holdout"]
    assert holdout["n"] == 179
    assert holdout["accuracy"] > 0.75
    assert holdout["roc_auc"] > 0.8
    assert 0 < holdout["log_loss"] < 0.6
    assert 0 < holdout["brier_score"] < 0.2


def test_profile_covers_every_input_and_is_json_safe(trained):
    out, model = trained
    profile = model["profile"]
    assert list(profile) == titanic.COLUMNS
    for name in ["Age", "Fare", "Parch", "Pclass", "SibSp"]:
        column = profile[name]
        assert column["kind"] == "numeric"
        assert len(column["quantiles"]) == len(QUANTILES)
        assert column["min"] == column["quantiles"][0] <= column["max"] == column["quantiles"][-1]
    for name in STRING_COLUMNS:
        column = profile[name]
        assert column["kind"] == "categorical"
        assert math.isclose(sum(column["frequencies"].values()) + column["missing"], 1.0)
    assert profile["Sex"]["missing"] == 0.0
    assert 0.1 < profile["Age"]["missing"] < 0.3

    def refuse(constant):
        raise AssertionError(f"model.json holds {constant}")

    json.loads((out / "model.json").read_text(), parse_constant=refuse)


def as_object_with_none(X: pd.DataFrame) -> pd.DataFrame:
    """Return X with its string columns as object dtype holding None where data is missing."""
    X = X.copy()
    for name in STRING_COLUMNS:
        X[name] = X[name].astype(object).where(X[name].notna(), None)
    return X


def from_json_records(X: pd.DataFrame, dtypes: pd.Series) -> pd.DataFrame:
    """Rebuild X the way a server does: JSON records (null for missing) cast with the dtypes."""
    records = json.loads(X.to_json(orient="records"))
    return pd.DataFrame.from_records(records, columns=list(X.columns)).astype(dtypes)


@pytest.mark.parametrize(
    "rebuild",
    [
        pytest.param(lambda X, dtypes: as_object_with_none(X), id="object-none"),
        pytest.param(
            lambda X, dtypes: X.astype(dict.fromkeys(STRING_COLUMNS, object)), id="object-nan"
        ),
        pytest.param(from_json_records, id="json-records-cast"),
    ],
)
def test_string_columns_in_any_form_give_the_same_probabilities(trained, csv_inputs, rebuild):
    pipeline, dtypes, _ = load_folder(trained[0])
    expected = survival_proba(pipeline, csv_inputs)
    np.testing.assert_array_equal(survival_proba(pipeline, rebuild(csv_inputs, dtypes)), expected)


def test_one_row_with_nulls_matches_the_batch(trained, csv_inputs):
    pipeline, dtypes, columns = load_folder(trained[0])
    observation = {**PASSENGER, "Age": None}
    row = pd.DataFrame([observation], columns=columns).astype(dtypes)
    nan_row = row.astype(dict.fromkeys(STRING_COLUMNS, object)).replace({None: np.nan})
    proba = survival_proba(pipeline, row)[0]
    assert 0 < proba < 1
    assert survival_proba(pipeline, nan_row)[0] == proba
    # The first CSV passenger differs only by a missing Age, so the proba must move.
    assert not math.isclose(proba, survival_proba(pipeline, csv_inputs.iloc[[0]])[0])


HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def assert_same_metadata(fresh, committed, where: str = "model.json") -> None:
    """Equal JSON, except that digests need only be digests (a rounding in the 13th digit
    changes a pickle's bytes) and numbers need only agree to RETRAIN_TOLERANCE."""
    if isinstance(committed, dict):
        assert isinstance(fresh, dict) and list(fresh) == list(committed), where
        for key in committed:
            assert_same_metadata(fresh[key], committed[key], f"{where}.{key}")
    elif isinstance(committed, list):
        assert isinstance(fresh, list) and len(fresh) == len(committed), where
        for i, (a, b) in enumerate(zip(fresh, committed, strict=True)):
            assert_same_metadata(a, b, f"{where}[{i}]")
    elif isinstance(committed, str) and HEX_DIGEST.fullmatch(committed):
        assert isinstance(fresh, str) and HEX_DIGEST.fullmatch(fresh), where
    elif isinstance(committed, float) and not isinstance(committed, bool):
        assert math.isclose(
            fresh, committed, rel_tol=RETRAIN_TOLERANCE, abs_tol=RETRAIN_TOLERANCE
        ), where
    else:
        assert fresh == committed, where


# OpenBLAS picks its kernel for the CPU unless told: the rerun is tried with the machine's own
# and with the oldest x86-64 kernel, so a test that only passes on one CPU fails here too.
BLAS_KERNELS = {"this-cpu": {}, "prescott": {"OPENBLAS_CORETYPE": "Prescott"}}


@pytest.mark.slow
@pytest.mark.parametrize("kernel", list(BLAS_KERNELS))
def test_cli_rerun_reproduces_the_committed_model(tmp_path, csv_inputs, kernel):
    # Compared with the committed files, written by the same command in a fresh process. What
    # must hold on any CPU: the same inputs and schema, the same probabilities on all 891
    # rows, the same model.json; not the same bytes (see RETRAIN_TOLERANCE).
    env = {**clean_environ(), "PYTHONPATH": str(REPO_ROOT), **BLAS_KERNELS[kernel]}
    subprocess.run(
        [sys.executable, "-m", "training", "titanic", "--out", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    fresh, fresh_dtypes, fresh_columns = load_folder(tmp_path)
    committed, committed_dtypes, committed_columns = load_folder(REPO_ROOT)
    assert fresh_columns == committed_columns
    pd.testing.assert_series_equal(fresh_dtypes, committed_dtypes)
    np.testing.assert_allclose(
        survival_proba(fresh, csv_inputs),
        survival_proba(committed, csv_inputs),
        rtol=0,
        atol=RETRAIN_TOLERANCE,
    )
    assert_same_metadata(
        json.loads((tmp_path / "model.json").read_text()),
        json.loads((REPO_ROOT / "model.json").read_text()),
    )


def test_cli_defaults_to_the_repository_root():
    assert parse_args(["titanic"]).out == REPO_ROOT
