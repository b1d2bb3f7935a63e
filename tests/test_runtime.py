"""Loading a model folder: a broken one fails at start-up with a sentence naming the problem."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression

from serving import create_app
from serving.compiled import as_matrix, register_transformer
from serving.model.runtime import LoadedModel, ModelLoadError


def test_tiny_model_loads_and_scores(tiny_model_dir: Path):
    model = LoadedModel.load(tiny_model_dir, "tiny")
    scores = model.predict([{"x": 2.0, "k": 1, "color": "red"}, {"x": -2.0, "k": 1, "color": None}])
    assert scores[0].proba > 0.5 > scores[1].proba
    assert [s.label for s in scores] == [1, 0]
    assert model.classes == [0, 1]


@pytest.mark.parametrize("name", ["pipeline.pickle", "dtypes.pickle", "columns.json"])
def test_missing_file(tiny_model_dir: Path, name: str):
    (tiny_model_dir / name).unlink()
    with pytest.raises(ModelLoadError, match=f"{tiny_model_dir}.*{name} is missing"):
        LoadedModel.load(tiny_model_dir, "tiny")


def test_unfitted_pipeline(tiny_model_dir: Path):
    joblib.dump(LogisticRegression(), tiny_model_dir / "pipeline.pickle")
    with pytest.raises(ModelLoadError, match="pipeline.pickle is not fitted"):
        LoadedModel.load(tiny_model_dir, "tiny")


def test_columns_disagree_with_pipeline(tiny_model_dir: Path):
    (tiny_model_dir / "columns.json").write_text(json.dumps(["x", "k", "colour"]))
    with pytest.raises(ModelLoadError, match="columns.json .* disagrees"):
        LoadedModel.load(tiny_model_dir, "tiny")


def test_dtypes_name_unknown_column(tiny_model_dir: Path):
    with (tiny_model_dir / "dtypes.pickle").open("rb") as handle:
        dtypes = pickle.load(handle)
    dtypes["extra"] = dtypes["x"]
    with (tiny_model_dir / "dtypes.pickle").open("wb") as handle:
        pickle.dump(dtypes, handle)
    with pytest.raises(ModelLoadError, match="dtypes.pickle names columns not in columns.json"):
        LoadedModel.load(tiny_model_dir, "tiny")


def test_sha256_mismatch(tiny_model_dir: Path):
    (tiny_model_dir / "model.json").write_text(json.dumps({"pipeline_sha256": "0" * 64}))
    with pytest.raises(ModelLoadError, match="does not match the pipeline_sha256"):
        LoadedModel.load(tiny_model_dir, "tiny")


def test_sha256_match_loads(tiny_model_dir: Path):
    digest = hashlib.sha256((tiny_model_dir / "pipeline.pickle").read_bytes()).hexdigest()
    (tiny_model_dir / "model.json").write_text(json.dumps({"pipeline_sha256": digest}))
    assert LoadedModel.load(tiny_model_dir, "tiny").version == "1"


def test_pickle_from_another_sklearn_version(tiny_model_dir: Path):
    path = tiny_model_dir / "pipeline.pickle"
    current = sklearn.__version__.encode()
    other = b"0" * len(current)
    path.write_bytes(path.read_bytes().replace(current, other))
    with pytest.raises(ModelLoadError, match=f"saved with scikit-learn {other.decode()}"):
        LoadedModel.load(tiny_model_dir, "tiny")


def test_pickle_needing_missing_module(tiny_model_dir: Path):
    path = tiny_model_dir / "pipeline.pickle"
    path.write_bytes(path.read_bytes().replace(b"sklearn.linear_model", b"sklearn.linear_mode_"))
    with pytest.raises(ModelLoadError, match="needs code that cannot be imported"):
        LoadedModel.load(tiny_model_dir, "tiny")


def test_garbage_pickle(tiny_model_dir: Path):
    (tiny_model_dir / "pipeline.pickle").write_bytes(b"not a pickle")
    with pytest.raises(ModelLoadError, match="pipeline.pickle cannot be unpickled"):
        LoadedModel.load(tiny_model_dir, "tiny")


def test_bad_columns_json(tiny_model_dir: Path):
    (tiny_model_dir / "columns.json").write_text('{"x": 1}')
    with pytest.raises(ModelLoadError, match="columns.json must be a non-empty list"):
        LoadedModel.load(tiny_model_dir, "tiny")


def test_broken_folder_stops_startup(tiny_model_dir: Path, database_url: str):
    (tiny_model_dir / "columns.json").unlink()
    with pytest.raises(ModelLoadError, match="columns.json is missing"):
        create_app({"database_url": database_url, "root_model_dir": tiny_model_dir})


def test_object_dtype_strings_get_nan_for_missing(tiny_model_dir: Path):
    model = LoadedModel.load(tiny_model_dir, "tiny")
    frame = model.frame([{"x": 1.0, "k": 2, "color": None}])
    assert frame["color"].isna().all()
    assert frame["k"].dtype == "int64"


def test_bundled_model_scores_on_the_verified_fast_path():
    model = LoadedModel.load(Path(__file__).resolve().parent.parent, "default")
    assert model.fast_path["enabled"] is True
    assert model.fast_path["max_abs_difference"] <= 1e-6
    assert model.info()["fast_path"] == model.fast_path


def refit_with_numeric_step(folder: Path, step) -> object:
    """Swap the tiny model's numeric branch for `step`, refit, and save it over the pickle."""
    pipeline = joblib.load(folder / "pipeline.pickle")
    numeric = pipeline.steps[0][1].transformers[0]
    pipeline.steps[0][1].transformers[0] = (numeric[0], step, numeric[2])
    frame = pd.DataFrame(
        {"x": [0.1, 1.0, -1.0, 2.0], "k": [1, 2, 3, 4], "color": ["red", "blue", "red", "green"]}
    )
    pipeline.fit(frame, [1, 0, 0, 1])
    joblib.dump(pipeline, folder / "pipeline.pickle")
    return pipeline


def test_unsupported_step_falls_back_to_the_pipeline_and_says_why(tiny_model_dir: Path):
    from sklearn.preprocessing import RobustScaler

    pipeline = refit_with_numeric_step(tiny_model_dir, RobustScaler())
    model = LoadedModel.load(tiny_model_dir, "tiny")
    assert model.fast_path["enabled"] is False
    assert "RobustScaler" in model.fast_path["reason"]
    rows = [{"x": 0.5, "k": 2, "color": None}]
    assert model.predict(rows)[0].proba == pipeline.predict_proba(model.frame(rows))[0][1]


class Doubler(TransformerMixin, BaseEstimator):
    """Doubles its input; its registered converter below triples it, a converter bug."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float) * 2


@register_transformer(Doubler)
def _wrong_doubler(step: Doubler):
    return lambda X: np.asarray(as_matrix(X), dtype=float) * 3


def test_a_fast_path_that_disagrees_is_not_used(tiny_model_dir: Path):
    pipeline = refit_with_numeric_step(tiny_model_dir, Doubler())
    model = LoadedModel.load(tiny_model_dir, "tiny")
    assert model.fast_path["enabled"] is False
    assert "differs from the pipeline" in model.fast_path["reason"]
    rows = [{"x": 0.5, "k": 2, "color": "red"}]
    assert model.predict(rows)[0].proba == pipeline.predict_proba(model.frame(rows))[0][1]


def test_compiling_can_be_switched_off(tiny_model_dir: Path):
    model = LoadedModel.load(tiny_model_dir, "tiny", compile=False)
    assert model.compiled is None and model.fast_path["enabled"] is False
