"""The seed models under models/: reproducible byte for byte, self-consistent, and sound."""

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from serving.model import artifacts
from tests.environment import clean_environ
from training.__main__ import destinations, parse_args
from training.data import DATA_DIR, REPO_ROOT

MODELS = REPO_ROOT / "models"
MODEL_FILES = ["pipeline.pickle", "dtypes.pickle", "columns.json", "model.json"]
SEEDS = {"income": ["1", "2"], "heights": ["1"]}
FOLDERS = [(name, version) for name, versions in SEEDS.items() for version in versions]
COMMON_KEYS = {
    "name",
    "endpoint",
    "version",
    "initial_status",
    "task",
    "target",
    "metrics",
    "library_versions",
    "pipeline_sha256",
    "training",
    "profile",
}
# The CSV each endpoint's committed pipeline is tried on, and that CSV's target column.
SAMPLES = {"income": ("adult_test.csv", "income"), "heights": ("heights_weights.csv", "weight")}


def model_json(name: str, version: str) -> dict:
    return json.loads((MODELS / name / version / "model.json").read_text(encoding="utf-8"))


def sample_inputs(name: str, rows: int = 5) -> pd.DataFrame:
    """The first rows of the endpoint's CSV without its target, dtypes as pandas reads them."""
    file, target = SAMPLES[name]
    return pd.read_csv(DATA_DIR / file).head(rows).drop(columns=[target])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SEEDS))
def test_a_fresh_cli_run_writes_the_committed_bytes(name: str, tmp_path: Path):
    # A fresh process, as for titanic in test_training.py: pickles written inside a long
    # test session can memoise strings differently and so differ in bytes, not in model.
    subprocess.run(
        [sys.executable, "-m", "training", name, "--out", str(tmp_path)],
        cwd=tmp_path,
        env={**clean_environ(), "PYTHONPATH": str(REPO_ROOT)},
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == [name]
    for version in SEEDS[name]:
        for file in MODEL_FILES:
            fresh = (tmp_path / name / version / file).read_bytes()
            assert fresh == (MODELS / name / version / file).read_bytes(), (version, file)


@pytest.mark.parametrize(("name", "version"), FOLDERS)
def test_model_json_names_its_folder_and_its_pipeline(name: str, version: str):
    model = model_json(name, version)
    assert not COMMON_KEYS - set(model), "model.json lacks these keys"
    assert (model["name"], model["endpoint"], model["version"]) == (name, name, version)
    digest = hashlib.sha256((MODELS / name / version / "pipeline.pickle").read_bytes())
    assert model["pipeline_sha256"] == digest.hexdigest()
    assert set(model["library_versions"]) == {"python", "scikit-learn", "pandas", "numpy", "joblib"}
    assert model["training"]["trained_by"] == f"python -m training {name}"


@pytest.mark.parametrize(("name", "version"), FOLDERS)
def test_columns_and_dtypes_are_the_csv_inputs_as_read(name: str, version: str):
    folder = MODELS / name / version
    with open(folder / "dtypes.pickle", "rb") as handle:
        dtypes = pickle.load(handle)
    columns = json.loads((folder / "columns.json").read_text(encoding="utf-8"))
    inputs = sample_inputs(name)
    assert columns == list(inputs.columns) == list(model_json(name, version)["profile"])
    # As read, with text in pandas' own storage whether or not pyarrow is installed.
    pd.testing.assert_series_equal(dtypes, artifacts.portable_dtypes(inputs.dtypes))


@pytest.mark.parametrize(("version", "status"), [("1", "production"), ("2", "testing")])
def test_income_versions_classify_the_census_test_split(version: str, status: str):
    model = model_json("income", version)
    assert model["initial_status"] == status
    assert model["task"] == "binary_classification"
    assert model["target"] == "income"
    assert model["class_labels"] == ["<=50K", ">50K"]
    assert model["positive_class"] == ">50K"
    holdout = model["metrics"]["holdout"]
    assert holdout["n"] == 16_281
    assert holdout["accuracy"] > 0.8
    assert holdout["roc_auc"] > 0.85
    assert len(model["profile"]) == 14


def test_heights_fits_well_and_rejects_heights_it_never_saw():
    model = model_json("heights", "1")
    assert (model["initial_status"], model["task"], model["target"]) == (
        "production",
        "regression",
        "weight",
    )
    assert "class_labels" not in model
    assert "positive_class" not in model
    assert model["out_of_range"] == "reject"
    training = model["metrics"]["training"]
    assert training["n"] == 15
    assert training["r2"] > 0.9
    height = model["profile"]["height"]
    assert (height["kind"], height["min"], height["max"]) == ("numeric", 58.0, 72.0)
    assert height["quantiles"][0] == 58.0
    assert height["quantiles"][-1] == 72.0


@pytest.mark.parametrize("version", SEEDS["income"])
def test_committed_income_pipelines_load_and_predict(version: str):
    pipeline = joblib.load(MODELS / "income" / version / "pipeline.pickle")
    rows = sample_inputs("income")
    proba = pipeline.predict_proba(rows)
    assert proba.shape == (5, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(pipeline.predict(rows)) <= {"<=50K", ">50K"}


def test_committed_heights_pipeline_loads_and_predicts():
    pipeline = joblib.load(MODELS / "heights" / "1" / "pipeline.pickle")
    weights = pipeline.predict(sample_inputs("heights"))
    # Published averages for 58-62 inches are 115-126 lb; the line is within a few pounds.
    np.testing.assert_allclose(weights, [115, 117, 120, 123, 126], atol=4)


def test_cli_default_folders():
    assert parse_args(["titanic"]).out == REPO_ROOT
    assert parse_args(["income"]).out == MODELS
    assert parse_args(["heights", "--out", "x"]).out == Path("x")
    assert destinations(parse_args(["all", "--out", "root"])) == [
        ("titanic", Path("root")),
        ("income", Path("root/models")),
        ("heights", Path("root/models")),
    ]
