"""serving.model.packaging.package: a fitted pipeline and its frame become a folder the service
serves with range warnings, drift and metrics, in either format, never over an existing version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from serving import package
from serving.model.digests import sha256_hex
from serving.model.packaging import PackagingError
from serving.model.runtime import LoadedModel
from tests.conftest import REPO_ROOT, make_app

TARGET = "income"
# Fitting on the first rows keeps each test quick; the holdout is adult_test.csv's head.
TRAIN_ROWS, HOLDOUT_ROWS = 3000, 1000
# Ages 17 to 90 in adult.csv: 250 lies far outside.
OLD = {
    "age": 250,
    "workclass": "Private",
    "fnlwgt": 200000,
    "education": "Bachelors",
    "education-num": 13,
    "marital-status": "Never-married",
    "occupation": "Sales",
    "relationship": "Not-in-family",
    "race": "White",
    "sex": "Male",
    "capital-gain": 0,
    "capital-loss": 0,
    "hours-per-week": 40,
    "native-country": "United-States",
}


def adult(name: str, rows: int) -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.read_csv(REPO_ROOT / "data" / name, nrows=rows)
    return frame.drop(columns=[TARGET]), frame[TARGET]


def unfitted():
    return make_pipeline(
        make_column_transformer(
            (StandardScaler(), make_column_selector(dtype_include="number")),
            (OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_exclude="number")),
        ),
        LogisticRegression(max_iter=500),
    )


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame | pd.Series]:
    X, y = adult("adult.csv", TRAIN_ROWS)
    X_holdout, y_holdout = adult("adult_test.csv", HOLDOUT_ROWS)
    return {"X": X, "y": y, "X_holdout": X_holdout, "y_holdout": y_holdout}


@pytest.fixture(scope="module")
def fitted(data):
    return unfitted().fit(data["X"], data["y"])


def packaged(fitted, data, models_dir: Path, **options) -> Path:
    return package(
        fitted,
        data["X"],
        data["y"],
        data["X_holdout"],
        data["y_holdout"],
        endpoint="adult",
        models_dir=models_dir,
        positive_class=">50K",
        **options,
    )


def test_a_packaged_folder_serves_with_warnings_drift_and_metrics(
    database_url, tmp_path, fitted, data
):
    models_dir = tmp_path / "models"
    folder = packaged(fitted, data, models_dir, description="logistic regression")
    assert folder == models_dir / "adult" / "1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "columns.json",
        "dtypes.pickle",
        "model.json",
        "pipeline.pickle",
    ]
    model = json.loads((folder / "model.json").read_text())
    # Every file pinned, as start-up checks them.
    for name in ("pipeline.pickle", "dtypes.pickle", "columns.json"):
        assert model["sha256"][name] == sha256_hex((folder / name).read_bytes())
    assert model["version"] == "1" and model["initial_status"] == "production"
    assert model["task"] == "binary_classification" and model["positive_class"] == ">50K"
    assert model["class_labels"] == ["<=50K", ">50K"] and model["target"] == TARGET
    assert model["description"] == "logistic regression"
    holdout = model["metrics"]["holdout"]
    assert holdout["n"] == HOLDOUT_ROWS and 0.7 < holdout["accuracy"] <= 1
    assert 0.5 < holdout["roc_auc"] <= 1
    assert set(model["profile"]) == set(data["X"].columns)
    assert model["library_versions"]["scikit-learn"]

    client = make_app(database_url, models_dir).test_client()
    answer = client.post("/api/v1/adult/predict", data=json.dumps({"id": 1, "observation": OLD}))
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    # The first version of a new endpoint is production, so the endpoint answers at once.
    assert body["model_version"] == "1"
    assert any("age" in str(w) and "training range" in str(w) for w in body["warnings"])
    expected = fitted.predict_proba(pd.DataFrame([OLD]))[0, 1]
    assert body["proba"] == pytest.approx(expected, abs=1e-9)
    for i in range(2, 12):
        observation = {**OLD, "age": 20 + i}
        client.post("/api/v1/adult/predict", data=json.dumps({"id": i, "observation": observation}))
    drift = client.get("/api/v1/adult/drift").get_json()
    assert drift["skipped"] == []
    assert {f["feature"] for f in drift["features"]} == set(data["X"].columns)
    assert drift["summary"]["class"] != "no_data"


def test_skops_format_lists_exactly_what_skops_reports(tmp_path, fitted, data):
    folder = packaged(fitted, data, tmp_path, format="skops")
    assert not (folder / "pipeline.pickle").exists()
    model = json.loads((folder / "model.json").read_text())
    reported = skops.io.get_untrusted_types(file=folder / "pipeline.skops")
    assert model["skops_trusted"] == sorted(set(reported))
    assert model["sha256"]["pipeline.skops"] == sha256_hex((folder / "pipeline.skops").read_bytes())
    assert model["library_versions"]["skops"]
    loaded = LoadedModel.load(folder, "adult", "1", compile=False)
    rows = data["X"].head(50)
    np.testing.assert_allclose(
        loaded.pipeline.predict_proba(rows), fitted.predict_proba(rows), rtol=0, atol=1e-12
    )


def double(X):
    return X * 2


def test_skops_refuses_a_type_no_folder_could_trust_and_leaves_nothing(tmp_path):
    frame = pd.DataFrame({"x": np.arange(20, dtype=float)})
    pipeline = make_pipeline(FunctionTransformer(double), LinearRegression())
    pipeline.fit(frame, frame["x"] * 3)
    with pytest.raises(PackagingError, match=r"skops.*test_packaging\.double.*can never trust"):
        package(pipeline, frame, endpoint="line", models_dir=tmp_path, format="skops")
    assert not (tmp_path / "line").exists()
    # As a pickle it packages: the operator chose to trust its code.
    folder = package(pipeline, frame, endpoint="line", models_dir=tmp_path)
    assert json.loads((folder / "model.json").read_text())["task"] == "regression"


def test_versions_count_up_and_an_existing_one_is_never_overwritten(tmp_path, fitted, data):
    first = packaged(fitted, data, tmp_path)
    second = packaged(fitted, data, tmp_path)
    assert (first.name, second.name) == ("1", "2")
    # Later versions start in testing: publishing them changes no answer until a promotion.
    assert json.loads((second / "model.json").read_text())["initial_status"] == "testing"
    packaged(fitted, data, tmp_path, version="beta", initial_status="staging")
    assert packaged(fitted, data, tmp_path, version=7).name == "7"
    assert packaged(fitted, data, tmp_path).name == "8"
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    with pytest.raises(PackagingError, match=r"adult/1 already exists.*next free one \(9\)"):
        packaged(fitted, data, tmp_path, version="1")
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "adult").iterdir()) == ["1", "2", "7", "8", "beta"]


def test_an_unfitted_pipeline_is_refused_before_anything_is_written(tmp_path, data):
    with pytest.raises(PackagingError, match="not fitted: call pipeline.fit"):
        package(unfitted(), data["X"], data["y"], endpoint="adult", models_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_frames_that_disagree_with_the_pipeline_are_refused(tmp_path, fitted, data):
    with_label = data["X"].assign(income=data["y"])
    with pytest.raises(PackagingError, match=r"columns it was not fitted on: \['income'\]"):
        package(fitted, with_label, endpoint="adult", models_dir=tmp_path)
    with pytest.raises(PackagingError, match=r"X_holdout lacks the columns \['age'\]"):
        package(
            fitted,
            data["X"],
            data["y"],
            data["X_holdout"].drop(columns=["age"]),
            data["y_holdout"],
            endpoint="adult",
            models_dir=tmp_path,
        )
    with pytest.raises(PackagingError, match="X_holdout and y_holdout go together"):
        package(
            fitted, data["X"], X_holdout=data["X_holdout"], endpoint="adult", models_dir=tmp_path
        )
    with pytest.raises(PackagingError, match=r"positive_class 'rich' is not one of the classes"):
        package(fitted, data["X"], endpoint="adult", models_dir=tmp_path, positive_class="rich")
    broken = data["X"].assign(age="old")
    with pytest.raises(PackagingError, match="cannot predict on X_train's rows"):
        package(fitted, broken, endpoint="adult", models_dir=tmp_path)
    with pytest.raises(PackagingError, match="endpoint '../x' is not a valid name"):
        package(fitted, data["X"], endpoint="../x", models_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_without_a_holdout_training_metrics_are_labelled_so(tmp_path):
    frame = pd.DataFrame({"height": np.arange(58, 73)})
    weight = 3.4 * frame["height"] - 90
    folder = package(
        LinearRegression().fit(frame, weight), frame, weight, endpoint="h", models_dir=tmp_path
    )
    metrics = json.loads((folder / "model.json").read_text())["metrics"]
    assert list(metrics) == ["training"]
    assert metrics["training"]["n"] == 15 and metrics["training"]["r2"] == pytest.approx(1.0)


def test_start_up_skips_dot_folders(database_url, tmp_path, fitted, data):
    models_dir = tmp_path / "models"
    packaged(fitted, data, models_dir)
    # What an interrupted package() or a notebook leaves behind must not stop start-up.
    (models_dir / "adult" / ".2.partial-x").mkdir()
    (models_dir / "adult" / ".ipynb_checkpoints").mkdir()
    (models_dir / ".ipynb_checkpoints" / "1").mkdir(parents=True)
    client = make_app(database_url, models_dir).test_client()
    listed = {e["endpoint"]: e for e in client.get("/api/v1/endpoints").get_json()["endpoints"]}
    assert set(listed) == {"default", "adult"}
    assert [v["version"] for v in listed["adult"]["versions"]] == ["1"]
