"""Drift: PSI against hand computations, bins from the training profile, and the HTTP route on
predictions stored through the real /predict."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.errors import BadRequest
from serving.model.profile import profile_column
from serving.reports.drift import (
    EPSILON,
    categorical_drift,
    classify,
    feature_drift,
    numeric_drift,
    numeric_edges,
    parse_window,
    psi,
)
from serving.store.tables import Prediction, utcnow
from tests.conftest import REPO_ROOT, fit_tiny_model, make_app

DECILES = [-3.0, -1.28, -0.84, -0.52, -0.25, 0.0, 0.25, 0.52, 0.84, 1.28, 3.0]
PROFILE = {
    "x": {"kind": "numeric", "quantiles": DECILES, "missing": 0.0, "min": -3.0, "max": 3.0},
    "k": {"kind": "numeric", "quantiles": [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4], "missing": 0.0},
    "color": {
        "kind": "categorical",
        "frequencies": {"blue": 0.4, "red": 0.3, "green": 0.3},
        "missing": 0.0,
    },
}


def by_hand(training: list[float], recent: list[float]) -> float:
    """PSI as the module docstring writes it, one term per bin."""
    total = 0.0
    for t, r in zip(training, recent, strict=True):
        t, r = max(t, 1e-4), max(r, 1e-4)
        total += (r - t) * math.log(r / t)
    return total


def test_psi_equals_the_hand_computation():
    # Two bins: 0.25 * ln 2 + 0.25 * ln 1.5.
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    # An empty training bin counts as EPSILON = 1e-4, not as zero.
    expected = -0.1 * math.log(0.4 / 0.5) + (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    assert EPSILON == 1e-4
    assert psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1]) == pytest.approx(expected)
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "stable"),
        (0.0999, "stable"),
        (0.1, "moderate"),
        (0.25, "moderate"),
        (0.2501, "major"),
        (3.0, "major"),
        (None, "no_data"),
    ],
)
def test_classes_follow_the_usual_thresholds(value, expected):
    assert classify(value) == expected


def test_numeric_bins_come_from_the_distinct_inner_deciles():
    edges, shares = numeric_edges(DECILES)
    assert edges == DECILES[1:-1]
    assert shares == pytest.approx([0.1] * 10)
    # A value many rows share repeats its decile: its bin gets that many tenths, and a
    # maximum equal to the last edge leaves the open upper bin empty (Pclass: 1, 2 or 3).
    edges, shares = numeric_edges([1, 1, 1, 2, 2, 3, 3, 3, 3, 3, 3])
    assert edges == [1, 2, 3]
    assert shares == pytest.approx([0.2, 0.2, 0.6, 0.0])
    # Mostly zeros with a long tail (Parch).
    edges, shares = numeric_edges([0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 6])
    assert edges == [0, 1, 2]
    assert shares == pytest.approx([0.7, 0.1, 0.1, 0.1])


def test_numeric_recent_values_fall_in_left_open_bins():
    values = [-5.0, -1.28, -1.0, 0.1, 0.25, 2.0, 99.0, None, float("nan")]
    drift = numeric_drift("x", {**PROFILE["x"], "missing": 0.1}, values)
    recent = [b.recent for b in drift.bins]
    n = len(values)
    # (-inf, -1.28] holds -5 and -1.28; (-1.28, -0.84] holds -1; (0, 0.25] holds 0.1 and 0.25;
    # (1.28, +inf) holds 2 and 99; None and NaN are missing.
    assert recent == pytest.approx([2 / n, 1 / n, 0, 0, 0, 2 / n, 0, 0, 0, 2 / n, 2 / n])
    assert [b.name for b in drift.bins][:2] == ["(-inf, -1.28]", "(-1.28, -0.84]"]
    assert drift.bins[-2].name == "(1.28, +inf)" and drift.bins[-2].high is None
    training = [0.1 * 0.9] * 10 + [0.1]
    assert [b.training for b in drift.bins] == pytest.approx(training)
    assert drift.psi == pytest.approx(by_hand(training, recent))
    assert drift.missing_training == 0.1 and drift.missing_recent == pytest.approx(2 / n)
    assert drift.to_json()["approximate"] is False
    # Repeated deciles: a value many rows share, whose bin shares are estimates.
    assert numeric_drift("k", PROFILE["k"], [1]).to_json()["approximate"] is True


def test_the_same_distribution_is_stable_and_a_shifted_one_is_major():
    rng = np.random.default_rng(3)
    training = pd.Series(rng.normal(50, 10, 20_000))
    entry = profile_column(training)  # the profile the training package writes
    same = rng.normal(50, 10, 5000).tolist()
    stable = feature_drift("x", entry, same)
    assert stable.psi < 0.02 and classify(stable.psi) == "stable"
    shifted = feature_drift("x", entry, (rng.normal(50, 10, 5000) + 10).tolist())
    assert shifted.psi > 0.25 and classify(shifted.psi) == "major"
    slightly = feature_drift("x", entry, (rng.normal(50, 10, 5000) + 3.5).tolist())
    assert classify(slightly.psi) == "moderate", slightly.psi


MIDPOINTS = [-2.0, -1.0, -0.7, -0.4, -0.1, 0.1, 0.4, 0.7, 1.0, 2.0]  # one per decile bin


def test_missing_values_have_their_own_bin():
    entry = {**PROFILE["x"], "missing": 0.05}
    # Present values spread like training's, but half the rows missing instead of 5%.
    values = MIDPOINTS * 5 + [None] * 50
    drift = numeric_drift("x", entry, values)
    assert (drift.missing_training, drift.missing_recent) == (0.05, 0.5)
    assert drift.bins[-1].name == "missing"
    assert (drift.bins[-1].training, drift.bins[-1].recent) == (0.05, 0.5)
    assert drift.psi == pytest.approx(by_hand([0.095] * 10 + [0.05], [0.05] * 10 + [0.5]))
    assert classify(drift.psi) == "major"
    # As often missing as in training: stable.
    same = numeric_drift("x", entry, MIDPOINTS * 19 + [None] * 10)
    assert same.missing_recent == 0.05 and same.psi == pytest.approx(0.0, abs=1e-12)


def test_categories_come_from_training_frequencies_with_an_other_bin():
    entry = {
        "kind": "categorical",
        "frequencies": {"S": 0.7, "C": 0.2, "Q": 0.09, "X": 0.005},
        "missing": 0.005,
    }
    values = ["S"] * 6 + ["C"] * 2 + ["Q"] + ["X"] + ["Z"] * 2 + [None] * 2 + [7]
    drift = categorical_drift("Embarked", entry, values)
    n = len(values)
    table = {b.name: (b.type, b.training, b.recent) for b in drift.bins}
    # X is under MIN_CATEGORY_SHARE (1%): pooled in "other" with Z and 7, never seen.
    assert table == {
        "S": ("category", 0.7, 6 / n),
        "C": ("category", 0.2, 2 / n),
        "Q": ("category", 0.09, 1 / n),
        "other": ("other", pytest.approx(0.005), 4 / n),
        "missing": ("missing", 0.005, 2 / n),
    }
    assert drift.unseen_recent == pytest.approx(3 / n)
    training = [0.7, 0.2, 0.09, 0.005, 0.005]
    recent = [6 / n, 2 / n, 1 / n, 4 / n, 2 / n]
    assert drift.psi == pytest.approx(by_hand(training, recent))


def test_an_unseen_category_alone_is_major_drift():
    drift = categorical_drift("color", PROFILE["color"], ["yellow"] * 10)
    assert drift.unseen_recent == 1.0
    assert drift.bins[3].name == "other" and drift.bins[3].training == 0.0
    assert classify(drift.psi) == "major"
    assert categorical_drift("color", PROFILE["color"], ["blue", "red", "green"] * 3).psi < 0.1


def test_no_recent_values_mean_no_psi():
    drift = feature_drift("x", PROFILE["x"], [])
    assert drift.psi is None and drift.missing_recent is None
    assert drift.to_json()["class"] == "no_data"
    assert all(b["recent"] is None for b in drift.to_json()["bins"])


@pytest.mark.parametrize(
    ("raw", "rows", "seconds"),
    [
        (None, 1000, None),
        ("", 1000, None),
        ("250", 250, None),
        ("100000", 100000, None),
        ("90s", 100000, 90),
        ("30m", 100000, 1800),
        ("24H", 100000, 86400),
        ("7d", 100000, 604800),
    ],
)
def test_window_is_a_count_or_a_duration(raw, rows, seconds):
    window = parse_window(raw)
    assert (window.rows, window.seconds) == (rows, seconds)


@pytest.mark.parametrize("raw", ["0", "100001", "-5", "1.5", "abc", "10w", "0h", "400d", "5 m"])
def test_a_bad_window_names_the_parameter(raw):
    with pytest.raises(BadRequest) as caught:
        parse_window(raw)
    assert caught.value.details[0]["field"] == "window"


# HTTP: predictions stored through the real /predict, on SQLite or PostgreSQL.


@pytest.fixture
def client(database_url: str, tmp_path: Path):
    root = tmp_path / "models"
    for version, status in (("1", "production"), ("2", "testing")):
        fit_tiny_model(
            root / "tiny" / version, version=version, initial_status=status, profile=PROFILE
        )
    fit_tiny_model(root / "bare" / "1", initial_status="production")
    yield make_app(database_url, root).test_client()
    from serving.store.database import close_all

    close_all()


def predict(client, i: int, observation: dict, query: str = "", endpoint: str = "tiny") -> None:
    response = client.post(
        f"/api/v1/{endpoint}/predict{query}",
        data=json.dumps({"id": f"{endpoint}{query}-{i}", "observation": observation}),
    )
    assert response.status_code == 200, response.get_json()


def test_drift_of_stored_predictions(client):
    empty = client.get("/api/v1/tiny/drift")
    assert empty.status_code == 200
    assert empty.json["rows"] == 0 and empty.json["summary"]["class"] == "no_data"
    assert "No predictions" in empty.json["summary"]["message"]
    assert all(f["psi"] is None for f in empty.json["features"])

    sent = [
        {"x": 0.1 if i % 2 else 2.0, "k": i % 2, "color": "red" if i < 15 else "yellow"}
        for i in range(20)
    ]
    for i, observation in enumerate(sent):
        predict(client, i, observation)
    predict(client, 0, {"x": -2.0, "k": 4, "color": "blue"}, query="?version=2")

    answer = client.get("/api/v1/tiny/drift").json
    assert (answer["endpoint"], answer["version"], answer["rows"]) == ("tiny", "1", 20)
    assert answer["window"] == {"rows": 1000, "seconds": None}
    features = {f["feature"]: f for f in answer["features"]}
    assert list(features) == ["x", "k", "color"]
    x = features["x"]
    # Half at 0.1, in (0, 0.25]; half at 2.0, in (1.28, +inf); none missing.
    recent = [0, 0, 0, 0, 0, 0.5, 0, 0, 0, 0.5, 0]
    assert [b["recent"] for b in x["bins"]] == recent
    assert x["psi"] == pytest.approx(by_hand([0.1] * 10 + [0.0], recent))
    assert x["class"] == "major" and x["missing"] == {"training": 0.0, "recent": 0.0}
    color = features["color"]
    assert [(b["bin"], b["recent"]) for b in color["bins"]] == [
        ("blue", 0.0),
        ("red", 0.75),
        ("green", 0.0),
        ("other", 0.25),
        ("missing", 0.0),
    ]
    assert color["unseen"] == 0.25
    assert color["psi"] == pytest.approx(by_hand([0.4, 0.3, 0.3, 0, 0], [0, 0.75, 0, 0.25, 0]))
    # k: 0 and 1 half each; the training deciles give (-inf, 0] 0.2, (0, 1] 0.2.
    assert [b["recent"] for b in features["k"]["bins"]][:2] == [0.5, 0.5]
    summary = answer["summary"]
    assert summary["class"] == "major" and summary["features"]["major"] == 3
    assert summary["max_psi"] == max(f["psi"] for f in answer["features"])
    assert answer["skipped"] == []

    # The newest 5 only: ids 15..19, all yellow.
    newest = client.get("/api/v1/tiny/drift?window=5").json
    assert newest["rows"] == 5
    assert newest["features"][2]["unseen"] == 1.0
    assert client.get("/api/v1/tiny/drift?window=1h").json["rows"] == 20
    blank = client.get("/api/v1/tiny/drift?version=&window=").json  # empty means default
    assert (blank["version"], blank["rows"], blank["window"]["rows"]) == ("1", 20, 1000)

    other = client.get("/api/v1/tiny/drift?version=2").json
    assert (other["version"], other["rows"]) == ("2", 1)
    assert other["features"][0]["bins"][0]["recent"] == 1.0

    # A duration leaves out what is older: five rows made two hours ago.
    old = Prediction.observation_id.in_([f"tiny-{i}" for i in range(5)])
    Prediction.update(created_at=utcnow() - dt.timedelta(hours=2)).where(old).execute()
    assert client.get("/api/v1/tiny/drift?window=1h").json["rows"] == 15
    assert client.get("/api/v1/tiny/drift?window=3h").json["rows"] == 20
    assert client.get("/api/v1/tiny/drift?window=1000").json["rows"] == 20


def test_a_model_without_a_profile_lists_its_inputs_as_skipped(client):
    predict(client, 0, {"x": 0.0, "k": 1, "color": "red"}, endpoint="bare")
    answer = client.get("/api/v1/bare/drift").json
    assert answer["rows"] == 1 and answer["features"] == []
    assert [s["feature"] for s in answer["skipped"]] == ["x", "k", "color"]
    assert answer["summary"]["class"] == "no_data"


def test_the_default_endpoint_has_a_drift_route_too(client):
    answer = client.get("/api/v1/default/drift").json
    assert answer["version"] == "1"
    assert {f["feature"] for f in answer["features"]} == {
        "Age",
        "Cabin",
        "Embarked",
        "Fare",
        "Parch",
        "Pclass",
        "Sex",
        "SibSp",
    }


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("?window=0", 400, "window"),
        ("?window=lots", 400, "window"),
        ("?window=999999", 400, "window"),
        ("?version=9", 404, "version"),
    ],
)
def test_bad_parameters_are_client_errors_naming_them(client, query, status, field):
    response = client.get(f"/api/v1/tiny/drift{query}")
    assert response.status_code == status
    assert response.json["details"][0]["field"] == field
    assert response.json["error"]


def test_an_unknown_endpoint_is_404(client):
    response = client.get("/api/v1/nope/drift")
    assert response.status_code == 404
    assert response.json["details"][0]["field"] == "endpoint"


def test_the_bundled_model_shows_no_drift_on_its_own_training_data():
    # Exact training shares in the profile: even Parch, where most rows share one decile,
    # stays stable on the data the model was trained from.
    profile = json.loads((REPO_ROOT / "model.json").read_text())["profile"]
    frame = pd.read_csv(REPO_ROOT / "data" / "titanic.csv")
    for feature, entry in profile.items():
        values = [None if pd.isna(v) else v for v in frame[feature].tolist()]
        result = feature_drift(feature, entry, values)
        assert result.psi < 0.1, (feature, result.psi)
        assert not result.approximate, feature
