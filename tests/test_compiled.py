"""The compiled scoring path gives the pipeline's numbers, straight from validated row dicts."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    StandardScaler,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from serving.compiled import (
    COMPILED,
    ESTIMATOR,
    NotCompilable,
    as_float,
    compile_pipeline,
    reference_rows,
    register_transformer,
    trees,
    verify,
)
from serving.compiled.custom import map_distinct
from serving.model import artifacts
from serving.model.profile import profile_frame
from serving.model.runtime import LoadedModel
from training import titanic

REPO_ROOT = Path(__file__).resolve().parent.parent
EXACT = 1e-9


def as_rows(frame: pd.DataFrame) -> list[dict]:
    """Rows as the service holds them after validation: Python values, None for missing."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in record.items()}
        for record in frame.to_dict("records")
    ]


def max_gap(a: np.ndarray, b: np.ndarray) -> float:
    a, b = (m.toarray() if hasattr(m, "toarray") else m for m in (a, b))
    assert a.shape == b.shape
    return float(np.max(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))))


@pytest.fixture(scope="module")
def root():
    """The bundled model straight from its files, plus the service's own frame builder."""
    pipeline = joblib.load(REPO_ROOT / "pipeline.pickle")
    columns = json.loads((REPO_ROOT / "columns.json").read_text())
    dtypes = dict(pd.read_pickle(REPO_ROOT / "dtypes.pickle").items())
    profile = json.loads((REPO_ROOT / "model.json").read_text())["profile"]
    model = LoadedModel.load(REPO_ROOT, "default")
    return pipeline, columns, dtypes, profile, model.frame


@pytest.fixture(scope="module")
def titanic_data() -> tuple[pd.DataFrame, pd.Series]:
    return titanic.load()


def test_root_model_matches_the_pipeline_on_all_891_csv_rows(root, titanic_data):
    pipeline, columns, dtypes, _, frame_builder = root
    X, _ = titanic_data
    compiled = compile_pipeline(pipeline, columns, dtypes)
    rows = as_rows(X[columns])
    expected = pipeline.predict_proba(X[columns])
    assert len(rows) == 891
    assert max_gap(compiled.predict_proba(rows), expected) <= EXACT
    # The service's own frame of the same dicts gives the same numbers too.
    served_frame = frame_builder(rows)
    assert max_gap(compiled.predict_proba(rows), pipeline.predict_proba(served_frame)) <= EXACT
    one_at_a_time = np.vstack([compiled.predict_proba([row]) for row in rows])
    assert max_gap(one_at_a_time, expected) <= EXACT
    assert list(compiled.classes_) == list(pipeline.classes_)


def test_root_model_matches_the_pipeline_on_reference_rows(root):
    pipeline, columns, dtypes, profile, frame_builder = root
    compiled = compile_pipeline(pipeline, columns, dtypes)
    rows = reference_rows(columns, dtypes, profile, pipeline)
    expected = pipeline.predict_proba(frame_builder(rows))
    assert max_gap(compiled.predict_proba(rows), expected) <= EXACT
    assert verify(compiled, pipeline, frame_builder, rows) <= EXACT


def test_reference_rows_cover_the_profile(root):
    pipeline, columns, dtypes, profile, _ = root
    rows = reference_rows(columns, dtypes, profile, pipeline)
    assert rows == reference_rows(columns, dtypes, profile, pipeline)
    assert all(list(row) == columns for row in rows)
    seen = {c: {row[c] for row in rows} for c in columns}
    assert set(profile["Age"]["quantiles"]) <= seen["Age"]
    assert {profile["Fare"]["min"], profile["Fare"]["max"]} <= seen["Fare"]
    for column in ("Cabin", "Embarked", "Sex"):
        known = set(profile[column]["frequencies"])
        assert known <= seen[column]
        unseen = {
            v for v in seen[column] if isinstance(v, str) and v.strip() and v.strip() not in known
        }
        assert unseen, f"no unseen category for {column}"
    for column in ("Age", "Cabin", "Embarked", "Sex", "Fare"):
        assert None in seen[column]
    for column in ("Parch", "Pclass", "SibSp"):
        assert all(type(v) is int for v in seen[column])
        assert {int(q) for q in profile[column]["quantiles"]} <= seen[column]
    assert len(rows) > 300


def test_reference_rows_without_a_profile_come_from_the_fitted_pipeline(root):
    pipeline, columns, dtypes, _, frame_builder = root
    rows = reference_rows(columns, dtypes, None, pipeline)
    assert {"male", "female"} <= {row["Sex"] for row in rows}
    assert {"S", "C", "Q"} <= {row["Embarked"] for row in rows}
    compiled = compile_pipeline(pipeline, columns, dtypes)
    assert verify(compiled, pipeline, frame_builder, rows) <= EXACT


def test_reference_rows_without_a_profile_or_learned_values_refuse(titanic_data):
    X, y = titanic_data
    numeric = ["Fare", "Pclass"]
    bare = LogisticRegression().fit(X[numeric], y)
    with pytest.raises(NotCompilable, match="no reference profile to verify against"):
        reference_rows(numeric, dict(X[numeric].dtypes.items()), None, bare)


@pytest.mark.parametrize(
    "classifier",
    [
        RandomForestClassifier(n_estimators=100, random_state=0),
        ExtraTreesClassifier(n_estimators=100, random_state=0),
    ],
    ids=["random_forest", "extra_trees"],
)
def test_forests_on_the_titanic_preprocessing_match_on_all_891_rows(root, titanic_data, classifier):
    _, columns, dtypes, profile, frame_builder = root
    X, y = titanic_data
    pipeline = titanic.build_pipeline().set_params(classifier=classifier).fit(X, y)
    compiled = compile_pipeline(pipeline, columns, dtypes)
    rows = as_rows(X[columns])
    assert max_gap(compiled.predict_proba(rows), pipeline.predict_proba(X[columns])) <= EXACT
    reference = reference_rows(columns, dtypes, profile, pipeline)
    assert verify(compiled, pipeline, frame_builder, reference) <= EXACT


def synthetic(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Floats with gaps, an int column, strings with gaps, a multi-class and a numeric target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[rng.random(n) < 0.15] = np.nan
    y = rng.uniform(-3, 3, size=n)
    count = rng.integers(0, 6, size=n)
    color = rng.choice(["red", "green", "blue", "teal"], size=n, p=[0.45, 0.3, 0.2, 0.05])
    color = np.where(rng.random(n) < 0.1, None, color)
    size = rng.choice(["S", "M", "L"], size=n)
    flag = rng.choice(["yes", "no"], size=n)
    frame = pd.DataFrame(
        {"x": x, "y": y, "count": count, "color": color, "size": size, "flag": flag}
    )
    frame = frame.astype({"color": "str", "size": "str", "flag": "str"})
    signal = np.nan_to_num(x) + 0.5 * y + (size == "L") - (color == "red")
    labels = np.where(signal > 0.8, "high", np.where(signal < -0.8, "low", "mid"))
    target = pd.Series(signal * 2.0 + count, name="target")
    return frame, pd.Series(labels, name="label"), target


PREPROCESSING = {
    "impute_scale_onehot": lambda: ColumnTransformer(
        [
            (
                "num",
                make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()),
                ["x", "y", "count"],
            ),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                ["color", "size"],
            ),
        ]
    ),
    "indicator_minmax_ordinal_drop_first_passthrough": lambda: ColumnTransformer(
        [
            (
                "num",
                make_pipeline(
                    SimpleImputer(strategy="median", add_indicator=True), MinMaxScaler(clip=True)
                ),
                ["x", "y"],
            ),
            (
                "ord",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2
                ),
                ["color"],
            ),
            ("hot", OneHotEncoder(drop="first", handle_unknown="ignore"), ["size", "flag"]),
        ],
        remainder="passthrough",
    ),
    "constant_infrequent_nan_category_weights": lambda: ColumnTransformer(
        [
            (
                "num",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value=0.0),
                    StandardScaler(with_mean=False),
                ),
                ["x"],
            ),
            (
                "hot",
                OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=0.1),
                ["color", "size"],
            ),
            ("gone", "drop", ["y"]),
            ("same", FunctionTransformer(), ["count"]),
        ],
        transformer_weights={"num": 2.0, "hot": 0.5},
    ),
    "string_constant_if_binary_sparse": lambda: ColumnTransformer(
        [
            ("num", SimpleImputer(), ["x", "y", "count"]),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="none"),
                    OneHotEncoder(drop="if_binary", handle_unknown="ignore"),
                ),
                ["color", "flag"],
            ),
        ],
        sparse_threshold=1.0,
    ),
}

MODELS = {
    "logistic_multiclass": lambda: LogisticRegression(max_iter=2000),
    "linear_regression": LinearRegression,
    "ridge": lambda: Ridge(alpha=0.5),
    "tree_classifier": lambda: DecisionTreeClassifier(max_depth=6, random_state=0),
    "tree_regressor": lambda: DecisionTreeRegressor(max_depth=8, random_state=0),
    "forest_regressor": lambda: RandomForestRegressor(n_estimators=20, random_state=0),
    "extra_trees_regressor": lambda: ExtraTreesRegressor(n_estimators=20, random_state=0),
}


def served(tmp_path: Path, pipeline: Pipeline, X: pd.DataFrame) -> LoadedModel:
    """The pipeline written as a model folder and loaded by the service, profile included."""
    artifacts.write_model(tmp_path, pipeline, X, {"profile": profile_frame(X)})
    return LoadedModel.load(tmp_path, "test")


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("preprocessing", list(PREPROCESSING))
def test_synthetic_pipelines_match(tmp_path, preprocessing, model_name):
    X, labels, target = synthetic()
    estimator = MODELS[model_name]()
    y = labels if model_name in ("logistic_multiclass", "tree_classifier") else target
    pipeline = Pipeline([("pre", PREPROCESSING[preprocessing]()), ("model", estimator)]).fit(X, y)
    model = served(tmp_path, pipeline, X)
    compiled = compile_pipeline(pipeline, model.columns, model.dtypes)
    fresh, _, _ = synthetic(n=120, seed=1)
    rows = as_rows(fresh)
    if compiled.is_classifier:
        assert list(compiled.classes_) == ["high", "low", "mid"]
        got, want = compiled.predict_proba(rows), pipeline.predict_proba(model.frame(rows))
    else:
        got, want = compiled.predict(rows), pipeline.predict(model.frame(rows))
    assert max_gap(got, want) <= EXACT
    reference = reference_rows(model.columns, model.dtypes, model.metadata["profile"], pipeline)
    assert verify(compiled, pipeline, model.frame, reference) <= EXACT


def test_trees_fitted_with_missing_values_send_nan_where_sklearn_does(tmp_path):
    X, labels, target = synthetic()
    numeric = X[["x", "y"]]
    for estimator, y in (
        (DecisionTreeClassifier(max_depth=5, random_state=0), labels),
        (RandomForestRegressor(n_estimators=10, random_state=0), target),
    ):
        pipeline = make_pipeline(ColumnTransformer([("raw", "passthrough", ["x", "y"])]), estimator)
        pipeline.fit(numeric, y)
        model = served(tmp_path / type(estimator).__name__, pipeline, numeric)
        compiled = compile_pipeline(pipeline, model.columns, model.dtypes)
        rows = [*as_rows(numeric), {"x": None, "y": 0.3}, {"x": None, "y": -2.0}]
        score = "predict_proba" if compiled.is_classifier else "predict"
        got = getattr(compiled, score)(rows)
        want = getattr(pipeline, score)(model.frame(rows))
        assert max_gap(got, want) <= EXACT


@pytest.mark.parametrize("nan_in_fit", [True, False])
def test_a_missing_string_is_its_own_category_only_if_fit_saw_one(tmp_path, nan_in_fit):
    X, labels, _ = synthetic()
    if not nan_in_fit:
        X = X.assign(color=X["color"].fillna("red"))
    pipeline = make_pipeline(
        ColumnTransformer([("hot", OneHotEncoder(handle_unknown="ignore"), ["color"])]),
        LogisticRegression(max_iter=1000),
    ).fit(X, labels)
    model = served(tmp_path, pipeline, X)
    compiled = compile_pipeline(pipeline, model.columns, model.dtypes)
    rows = [{**as_rows(X.head(1))[0], "color": None}]
    encoded = compiled.features(rows)
    assert encoded.sum() == (1.0 if nan_in_fit else 0.0)
    assert max_gap(encoded, pipeline[:-1].transform(model.frame(rows))) == 0.0


def test_unknown_category_with_handle_unknown_error_is_rejected_by_both(tmp_path):
    X, labels, _ = synthetic()
    pipeline = make_pipeline(
        ColumnTransformer([("hot", OneHotEncoder(), ["size"])]), LogisticRegression()
    ).fit(X, labels)
    model = served(tmp_path, pipeline, X)
    compiled = compile_pipeline(pipeline, model.columns, model.dtypes)
    unseen = {**as_rows(X.head(1))[0], "size": "XXL"}
    with pytest.raises(ValueError, match="unknown categories"):
        compiled.predict_proba([unseen])
    reference = reference_rows(model.columns, model.dtypes, model.metadata["profile"], pipeline)
    assert verify(compiled, pipeline, model.frame, reference) <= EXACT


@pytest.mark.parametrize(
    "estimator",
    [LogisticRegression(), RandomForestClassifier(n_estimators=10, random_state=0)],
    ids=["logistic", "forest"],
)
def test_bool_float32_categorical_and_object_columns_are_read_as_sklearn_sees_them(
    tmp_path, estimator
):
    rng = np.random.default_rng(3)
    n = 300
    X = pd.DataFrame(
        {
            "b": rng.random(n) < 0.3,
            "f32": rng.normal(size=n).astype(np.float32),
            "i": rng.integers(0, 4, n),
            "cat": pd.Categorical(rng.choice(["u", "v", "w"], n)),
            "s": rng.choice(["p", "q"], n).astype(object),
        }
    )
    X.loc[X.index[:20], "f32"] = np.nan
    y = (X["b"] ^ (X["f32"].fillna(0) > 0)).astype(int)
    pipeline = make_pipeline(
        ColumnTransformer(
            [
                # bool next to float32 is validated as float32: the scaler works in float32.
                ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["b", "f32"]),
                ("hot", OneHotEncoder(handle_unknown="ignore"), ["b", "cat", "s"]),
                ("raw", "passthrough", ["b", "i"]),
            ]
        ),
        estimator,
    ).fit(X, y)
    model = served(tmp_path, pipeline, X)
    compiled = compile_pipeline(pipeline, model.columns, model.dtypes)
    reference = reference_rows(model.columns, model.dtypes, model.metadata["profile"], pipeline)
    assert verify(compiled, pipeline, model.frame, reference) <= EXACT
    assert verify(compiled, pipeline, model.frame, as_rows(X)) <= EXACT


class Doubler(TransformerMixin, BaseEstimator):
    """A transformer no converter knows about."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float) * 2.0


@pytest.mark.parametrize(
    ("step", "name"),
    [
        (PolynomialFeatures(), "PolynomialFeatures"),
        (Doubler(), "Doubler"),
        (FunctionTransformer(np.abs), "FunctionTransformer"),
    ],
)
def test_an_unsupported_step_is_named(step, name):
    X, labels, _ = synthetic()
    numeric = ["y", "count"]
    pipeline = make_pipeline(
        ColumnTransformer([("num", make_pipeline(StandardScaler(), step), numeric)]),
        LogisticRegression(),
    ).fit(X[numeric], labels)
    with pytest.raises(NotCompilable, match=f"no converter for {name}"):
        compile_pipeline(pipeline, numeric, dict(X[numeric].dtypes.items()))


def test_an_unsupported_final_estimator_is_named():
    from sklearn.neighbors import KNeighborsClassifier

    X, labels, _ = synthetic()
    pipeline = make_pipeline(SimpleImputer(), KNeighborsClassifier()).fit(X[["x", "y"]], labels)
    with pytest.raises(NotCompilable, match="no converter for KNeighborsClassifier"):
        compile_pipeline(pipeline, ["x", "y"], dict(X[["x", "y"]].dtypes.items()))


def test_a_custom_transformer_compiles_once_registered(tmp_path):
    class Tripler(Doubler):
        def transform(self, X):
            return np.asarray(X, dtype=float) * 3.0

    X, labels, _ = synthetic()
    numeric = X[["y", "count"]]
    pipeline = make_pipeline(Tripler(), LogisticRegression()).fit(numeric, labels)
    columns, dtypes = list(numeric.columns), dict(numeric.dtypes.items())
    with pytest.raises(NotCompilable, match="no converter for Tripler"):
        compile_pipeline(pipeline, columns, dtypes)
    register_transformer(Tripler)(lambda step: lambda X: as_float(X) * 3.0)
    compiled = compile_pipeline(pipeline, columns, dtypes)
    rows = as_rows(numeric.head(50))
    assert max_gap(compiled.predict_proba(rows), pipeline.predict_proba(numeric.head(50))) <= EXACT


def test_verify_catches_a_wrong_compiled_model(root):
    pipeline, columns, dtypes, profile, frame_builder = root
    tampered = copy.deepcopy(pipeline)
    tampered[-1].coef_[0, 0] += 1.0
    wrong = compile_pipeline(tampered, columns, dtypes)
    rows = reference_rows(columns, dtypes, profile, pipeline)
    assert verify(wrong, pipeline, frame_builder, rows) > 1e-3
    # Refusing rows the pipeline scores is a difference too, however close the rest is.
    strict = copy.deepcopy(pipeline)
    strict[0].named_transformers_["categorical"][-1].handle_unknown = "error"
    refusing = compile_pipeline(strict, columns, dtypes)
    assert verify(refusing, pipeline, frame_builder, rows) == math.inf
    right = compile_pipeline(pipeline, columns, dtypes)
    assert verify(right, pipeline, frame_builder, rows) <= EXACT


def test_a_compiled_model_is_a_snapshot_of_the_fitted_pipeline(root, titanic_data):
    pipeline, columns, dtypes, _, _ = root
    copied = copy.deepcopy(pipeline)
    compiled = compile_pipeline(copied, columns, dtypes)
    rows = as_rows(titanic_data[0][columns].head(20))
    before = compiled.predict_proba(rows)
    copied[-1].coef_[0, 0] += 1.0
    assert max_gap(compiled.predict_proba(rows), before) == 0.0


def test_calling_the_wrong_method_or_passing_a_gap_in_an_int_column_fails_clearly(root):
    pipeline, columns, dtypes, _, _ = root
    compiled = compile_pipeline(pipeline, columns, dtypes)
    assert compiled.predict_proba([]).shape == (0, 2)
    row = {
        "Age": None, "Cabin": None, "Embarked": None, "Fare": 7.25,
        "Parch": 0, "Pclass": 3, "Sex": "male", "SibSp": 1,
    }  # fmt: skip
    assert compiled.predict_proba([row]).shape == (1, 2)
    with pytest.raises(TypeError, match="predict_proba"):
        compiled.predict([row])
    with pytest.raises(ValueError, match="Parch"):
        compiled.predict_proba([{**row, "Parch": None}])


@pytest.mark.any_database  # the model's answers; test_predictions stores them on both
@pytest.mark.parametrize("compile_models", [True, False], ids=["compiled", "pipeline"])
def test_http_answers_are_the_pipelines_with_or_without_the_fast_path(
    compile_models, database_url, tmp_path
):
    """The one app-level check of the fast path (make_app leaves it off unless asked): with
    it on, /predict on every kind of model answers the pipeline's numbers within 1e-6, the
    endpoint info says it is on, and /predict/batch agrees row for row."""
    from tests.conftest import fit_tiny_multiclass, fit_tiny_regression, make_app

    models = tmp_path / "models"
    fit_tiny_multiclass(models / "tiers" / "1", initial_status="production")
    fit_tiny_regression(models / "line" / "1", initial_status="production")
    app = make_app(database_url, models, compile_models=compile_models)
    client = app.test_client()
    registry = app.extensions["registry"]
    for endpoint in ("default", "tiers", "line"):
        info = client.get(f"/api/v1/{endpoint}").get_json()
        fast = [v["fast_path"]["enabled"] for v in info["versions"]]
        assert fast == [compile_models], (endpoint, info["versions"])

    titanic_rows = pd.read_csv(REPO_ROOT / "data" / "titanic.csv").head(25)
    model = registry.models["default"]["1"]
    observations = as_rows(titanic_rows[model.columns])
    expected = model.pipeline.predict_proba(titanic_rows[model.columns].astype(model.dtypes))
    singles = []
    for i, observation in enumerate(observations):
        answer = client.post("/predict", json={"id": f"t{i}", "observation": observation})
        assert answer.status_code == 200, answer.get_json()
        singles.append(answer.get_json())
    assert [a["proba"] for a in singles] == pytest.approx(list(expected[:, 1]), abs=1e-6)
    batch = client.post(
        "/predict/batch",
        json=[{"id": f"b{i}", "observation": o} for i, o in enumerate(observations)],
    ).get_json()
    assert [r["proba"] for r in batch["results"]] == pytest.approx(
        [a["proba"] for a in singles], abs=1e-6
    )
    assert [r["prediction"] for r in batch["results"]] == [a["prediction"] for a in singles]

    tiny = [{"x": x, "k": 1, "color": c} for x in (-2.0, 0.3, 2.0) for c in ("red", "blue")]
    for endpoint in ("tiers", "line"):
        loaded = registry.models[endpoint]["1"]
        frame = pd.DataFrame(tiny)[loaded.columns].astype(loaded.dtypes)
        for i, observation in enumerate(tiny):
            answer = client.post(
                f"/api/v1/{endpoint}/predict", json={"id": i, "observation": observation}
            ).get_json()
            if endpoint == "line":
                want = loaded.pipeline.predict(frame.iloc[[i]])[0]
                assert answer["prediction"] == pytest.approx(want, abs=1e-6)
            else:
                want = loaded.pipeline.predict_proba(frame.iloc[[i]])[0]
                got = [answer["probabilities"][str(c)] for c in loaded.pipeline.classes_]
                assert got == pytest.approx(list(want), abs=1e-6)
    from serving.store.database import close_all

    close_all()


@pytest.mark.parametrize(
    ("classifier", "intended"),
    [
        (LogisticRegression(max_iter=1000), COMPILED),
        (RandomForestClassifier(n_estimators=30, random_state=0), ESTIMATOR),
    ],
    ids=["logistic", "forest"],
)
def test_a_large_batch_takes_the_intended_path_and_gives_predict_proba(
    tmp_path, titanic_data, classifier, intended
):
    X, y = titanic_data
    pipeline = titanic.build_pipeline().set_params(classifier=classifier).fit(X, y)
    model = served(tmp_path, pipeline, X)
    compiled = model.compiled
    assert compiled is not None, model.fast_path
    n = 3 * trees.BATCH_FROM
    frame = X.iloc[np.random.default_rng(0).integers(0, len(X), size=n)].reset_index(drop=True)
    rows = as_rows(frame)
    want = pipeline.predict_proba(frame)

    # The path depends on the batch size alone: one row and anything under the crossover stay
    # compiled; a forest's large batches go to its own predict_proba, a logistic's do not.
    assert compiled.path_for(1) == compiled.path_for(trees.BATCH_FROM - 1) == COMPILED
    assert compiled.path_for(n) == intended
    assert ("estimator_from_rows" in model.fast_path) == (intended == ESTIMATOR)
    took: list[str] = []
    head = compiled.head

    def spy(path: str, fn):
        def run(X):
            took.append(path)
            return fn(X)

        return run

    compiled.head = dataclasses.replace(
        head,
        proba=spy(COMPILED, head.proba),
        batch_proba=head.batch_proba and spy(ESTIMATOR, head.batch_proba),
    )
    try:
        scores = model.predict(rows)
        by_columns = model.predict_columns({c: [r[c] for r in rows] for c in model.columns})
        model.predict(rows[:1])
    finally:
        compiled.head = head
    assert took == [intended, intended, COMPILED]

    positive = want[:, list(pipeline.classes_).index(1)]
    assert max_gap(np.array([s.proba for s in scores]), positive) <= 1e-6
    assert max_gap(by_columns.proba, positive) <= 1e-6
    assert [s.label for s in scores] == by_columns.labels == list(pipeline.predict(frame))
    for path in compiled.paths:
        assert max_gap(compiled.predict_proba(rows, path=path), want) <= 1e-6


def test_cell_functions_run_once_per_distinct_value_and_keep_equal_types_apart():
    calls: list[object] = []

    def cell(value: object) -> str:
        calls.append(value)
        return repr(value)

    values = ["C85", None, "C85", math.nan, "E1", None, math.nan] * 10
    assert map_distinct(cell, values) == [repr(v) for v in values]
    assert len(calls) == 4
    # 1, 1.0 and True are one dict key, as are 0.0 and -0.0, yet spelled apart: no sharing.
    for mixed in ([1, 1.0, True, 1], [0.0, -0.0, 0.0, "0.0"]):
        assert map_distinct(repr, mixed) == [repr(v) for v in mixed]
