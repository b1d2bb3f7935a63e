"""Quality from ground truth: the database's sums equal scikit-learn's metrics on the same rows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from serving.store.tables import Prediction
from tests.conftest import fit_tiny_model, fit_tiny_multiclass, fit_tiny_regression, make_app


@pytest.fixture
def client(database_url: str, tmp_path: Path):
    root = tmp_path / "models"
    fit_tiny_model(root / "tiny" / "1", shift=0.5, version="1", initial_status="production")
    fit_tiny_model(root / "tiny" / "2", shift=1.5, version="2", initial_status="testing")
    fit_tiny_multiclass(root / "tiers" / "1", initial_status="production")
    fit_tiny_regression(root / "line" / "1", initial_status="production")
    return make_app(database_url, root).test_client()


def _observations(n: int, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = [
        {
            "x": round(float(rng.normal()), 2),
            "k": int(rng.integers(0, 5)),
            "color": str(rng.choice(["red", "green", "blue"])),
        }
        for _ in range(n)
    ]
    # Repeated observations under new ids give tied probabilities, which ROC AUC must average.
    return rows + rows[: n // 5]


def _predict_and_label(client, endpoint: str, truth_of, n: int = 250, query: str = "") -> None:
    rng = np.random.default_rng(7)
    for i, observation in enumerate(_observations(n)):
        answer = client.post(
            f"/api/v1/{endpoint}/predict{query}",
            data=json.dumps({"id": f"{endpoint}-{i}", "observation": observation}),
        )
        assert answer.status_code == 200, answer.get_json()
        if i % 10 != 0:  # some rows never get their ground truth
            truth = truth_of(observation, rng)
            update = client.post(
                f"/api/v1/{endpoint}/update",
                data=json.dumps({"id": f"{endpoint}-{i}", "true_class": truth}),
            )
            assert update.status_code == 200, update.get_json()


def _labelled(endpoint: str, version: str) -> list[Prediction]:
    return list(
        Prediction.select().where(
            (Prediction.endpoint == endpoint)
            & (Prediction.model_version == version)
            & Prediction.true_class.is_null(False)
        )
    )


@pytest.mark.slow  # hundreds of requests: 5-6 s
def test_binary_metrics_equal_scikit_learns(client):
    def noisy(observation, rng):
        return int(
            (observation["x"] + (observation["color"] == "red") > 0.5) ^ (rng.random() < 0.2)
        )

    _predict_and_label(client, "tiny", noisy)
    answer = client.get("/api/v1/tiny/performance?version=1")
    assert answer.status_code == 200
    [report] = answer.get_json()["versions"]

    rows = _labelled("tiny", "1")
    y = np.array([json.loads(r.true_class) for r in rows])
    proba = np.array([r.proba for r in rows])
    predicted = np.array([json.loads(r.prediction) for r in rows])
    got = report["metrics"]
    assert report["labelled"] == len(rows) == 270
    assert report["predictions"] == 300
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-12)
    assert got["precision"] == pytest.approx(skm.precision_score(y, predicted), abs=1e-12)
    assert got["recall"] == pytest.approx(skm.recall_score(y, predicted), abs=1e-12)
    assert got["f1"] == pytest.approx(skm.f1_score(y, predicted), abs=1e-12)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba), abs=1e-12)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba), abs=1e-12)
    assert got["brier"] == pytest.approx(skm.brier_score_loss(y, proba), abs=1e-12)
    assert report["confusion_matrix"] == {
        "labels": [0, 1],
        "matrix": skm.confusion_matrix(y, predicted, labels=[0, 1]).tolist(),
    }
    # Calibration: each bin's rows, mean prediction and observed rate, as computed by hand.
    bins = np.minimum((proba * 10).astype(int), 9)
    for b, entry in enumerate(report["calibration"]):
        inside = bins == b
        assert entry["count"] == int(inside.sum())
        if inside.any():
            assert entry["mean_predicted"] == pytest.approx(proba[inside].mean(), abs=1e-12)
            assert entry["observed_rate"] == pytest.approx(y[inside].mean(), abs=1e-12)
        else:
            assert entry["mean_predicted"] is None and entry["observed_rate"] is None
    low, high = report["intervals"]["accuracy"]
    assert low < got["accuracy"] < high


@pytest.mark.slow  # hundreds of requests: 5-6 s
def test_beyond_the_exact_limit_only_roc_auc_is_bucketed(client, monkeypatch):
    from serving.reports import quality

    def noisy(observation, rng):
        return int(rng.random() < 0.5)

    _predict_and_label(client, "tiny", noisy)
    exact = client.get("/api/v1/tiny/performance?version=1").get_json()["versions"][0]
    monkeypatch.setattr(quality, "EXACT_ROWS", 10)
    bucketed = client.get("/api/v1/tiny/performance?version=1").get_json()["versions"][0]
    for name, value in exact["metrics"].items():
        tolerance = 1e-3 if name == "roc_auc" else 1e-12
        assert bucketed["metrics"][name] == pytest.approx(value, abs=tolerance), name
    for ours, reference in zip(bucketed["calibration"], exact["calibration"], strict=True):
        assert ours["count"] == reference["count"]
        assert ours["mean_predicted"] == pytest.approx(reference["mean_predicted"], abs=1e-12)
    assert bucketed["confusion_matrix"] == exact["confusion_matrix"]


@pytest.mark.slow  # hundreds of requests: 5-6 s
def test_multiclass_metrics_equal_scikit_learns(client):
    labels = ["high", "low", "mid"]

    def noisy(observation, rng):
        x = observation["x"] + rng.normal(scale=0.4)
        return "low" if x < -0.5 else "high" if x > 0.5 else "mid"

    _predict_and_label(client, "tiers", noisy)
    [report] = client.get("/api/v1/tiers/performance").get_json()["versions"]
    rows = _labelled("tiers", "1")
    y = [json.loads(r.true_class) for r in rows]
    predicted = [json.loads(r.prediction) for r in rows]
    proba = np.array([[json.loads(r.probabilities)[c] for c in labels] for r in rows])
    got = report["metrics"]
    macro = {"average": "macro", "labels": labels, "zero_division": 0}
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-12)
    assert got["precision"] == pytest.approx(skm.precision_score(y, predicted, **macro))
    assert got["recall"] == pytest.approx(skm.recall_score(y, predicted, **macro))
    assert got["f1"] == pytest.approx(skm.f1_score(y, predicted, **macro))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=labels), abs=1e-12)
    assert got["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr", labels=labels), abs=1e-12
    )
    assert got["brier"] == pytest.approx(skm.brier_score_loss(y, proba, labels=labels))
    assert report["confusion_matrix"]["matrix"] == (
        skm.confusion_matrix(y, predicted, labels=labels).tolist()
    )


@pytest.mark.slow  # hundreds of requests: 5-6 s
def test_regression_metrics_equal_scikit_learns(client):
    def noisy(observation, rng):
        return 3 * observation["x"] + observation["k"] + float(rng.normal(scale=0.5))

    _predict_and_label(client, "line", noisy)
    [report] = client.get("/api/v1/line/performance").get_json()["versions"]
    rows = _labelled("line", "1")
    y = np.array([json.loads(r.true_class) for r in rows])
    value = np.array([r.value for r in rows])
    got = report["metrics"]
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, value), abs=1e-12)
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(y, value), abs=1e-12)
    assert got["r2"] == pytest.approx(skm.r2_score(y, value), abs=1e-9)
    assert "calibration" not in report


def test_every_version_is_listed_and_one_without_truth_says_so(client):
    _predict_and_label(client, "tiny", lambda o, rng: 1, n=20)
    versions = client.get("/api/v1/tiny/performance").get_json()["versions"]
    assert [v["version"] for v in versions] == ["1", "2"]
    empty = versions[1]
    assert (empty["predictions"], empty["labelled"]) == (0, 0)
    assert set(empty["metrics"].values()) == {None}
    # One class only: accuracy is defined, ROC AUC is not.
    assert versions[0]["metrics"]["roc_auc"] is None
    assert versions[0]["metrics"]["accuracy"] is not None


def test_a_time_window_measures_only_predictions_made_inside_it(client):
    _predict_and_label(client, "tiny", lambda o, rng: 1, n=40)
    old = dt.datetime(2026, 1, 1, 12, 0, 0)
    ids = [f"tiny-{i}" for i in range(20)]
    Prediction.update(created_at=old).where(Prediction.observation_id.in_(ids)).execute()
    inside = client.get(
        "/api/v1/tiny/performance?version=1&since=2026-01-01T11:00:00Z&until=2026-01-01T13:00:00%2B00:00"
    ).get_json()["versions"][0]
    assert inside["predictions"] == 20
    assert inside["labelled"] == 18
    after = client.get("/api/v1/tiny/performance?version=1&since=2026-01-02").get_json()
    assert after["versions"][0]["predictions"] == 28
    assert after["since"] == "2026-01-02T00:00:00Z"


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("version=9", 404, "version"),
        ("since=yesterday", 400, "since"),
        ("until=2026-13-01", 400, "until"),
        ("since=2026-02-01&until=2026-01-01", 400, "since"),
    ],
)
def test_bad_parameters_are_named(client, query, status, field):
    answer = client.get(f"/api/v1/tiny/performance?{query}")
    assert answer.status_code == status
    assert answer.get_json()["details"][0]["field"] == field


def test_unknown_endpoint_is_404(client):
    assert client.get("/api/v1/nope/performance").status_code == 404


@pytest.mark.parametrize(
    ("endpoint", "truths", "bounded"),
    [
        ("tiny", [0, 1], {"log_loss": (0, None), "brier": (0, 1)}),
        ("tiers", ["low", "high"], {"log_loss": (0, None), "brier": (0, 2)}),
        ("line", [0.5, 40.0], {"mae": (0, None), "rmse": (0, None)}),
    ],
)
def test_intervals_stay_in_the_metric_range_with_few_rows(client, endpoint, truths, bounded):
    # Two labelled rows give a wide normal interval, which used to reach below zero
    # (log loss [-0.134, 0.420]); a loss cannot be negative, nor a binary Brier score above 1.
    for i, (observation, truth) in enumerate(zip(_observations(2), truths, strict=False)):
        body = {"id": f"few-{i}", "observation": observation}
        assert client.post(f"/api/v1/{endpoint}/predict", json=body).status_code == 200
        update = {"id": f"few-{i}", "true_class": truth}
        assert client.post(f"/api/v1/{endpoint}/update", json=update).status_code == 200
    report = client.get(f"/api/v1/{endpoint}/performance").get_json()
    (version,) = [v for v in report["versions"] if v["labelled"]]
    assert version["labelled"] == 2
    for name, (floor, ceiling) in bounded.items():
        low, high = version["intervals"][name]
        assert low is not None and high is not None, name
        assert floor <= low <= version["metrics"][name] <= high, name
        assert ceiling is None or high <= ceiling, name
