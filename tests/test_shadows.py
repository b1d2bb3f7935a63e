"""Shadow versions score every request without answering; a paired comparison judges them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serving.store.tables import Prediction, ShadowScore
from tests.conftest import fit_tiny_model, fit_tiny_regression, make_app

TOKEN = "shadow-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app(database_url: str, tmp_path: Path):
    root = tmp_path / "models"
    fit_tiny_model(root / "tiny" / "1", shift=0.5, version="1", initial_status="production")
    fit_tiny_model(root / "tiny" / "2", shift=1.5, version="2", initial_status="testing")
    fit_tiny_regression(root / "line" / "1", version="1", initial_status="production")
    fit_tiny_regression(root / "line" / "2", version="2", initial_status="testing")
    fit_tiny_model(root / "strict" / "1", shift=0.5, version="1", initial_status="production")
    fit_tiny_model(
        root / "strict" / "2",
        version="2",
        initial_status="testing",
        out_of_range="reject",
        profile={"x": {"kind": "numeric", "min": -5.0, "max": 5.0}},
    )
    return make_app(database_url, root, admin_token=TOKEN)


@pytest.fixture
def client(app):
    return app.test_client()


def _observations(n: int) -> list[dict]:
    rng = np.random.default_rng(3)
    return [
        {
            "x": round(float(rng.normal()), 2),
            "k": int(rng.integers(0, 5)),
            "color": str(rng.choice(["red", "green", "blue"])),
        }
        for _ in range(n)
    ]


def test_a_shadow_scores_every_request_and_never_answers(app, client):
    assert client.put("/api/v1/tiny/shadows/2", headers=ADMIN).status_code == 200
    observations = _observations(40)
    for i, observation in enumerate(observations):
        answer = client.post(
            "/api/v1/tiny/predict", data=json.dumps({"id": i, "observation": observation})
        ).get_json()
        assert answer["model_version"] == "1"
    # A replay stores nothing twice.
    client.post("/api/v1/tiny/predict", data=json.dumps({"id": 0, "observation": observations[0]}))

    shadow_model = app.extensions["registry"].find("tiny", "2")
    scores = {s.prediction_id: s for s in ShadowScore.select()}
    assert len(scores) == 40
    for row in Prediction.select():
        stored = scores[row.id]
        assert stored.model_version == "2"
        [expected] = shadow_model.predict([json.loads(row.observation)])
        assert stored.proba == pytest.approx(expected.proba, abs=1e-12)
        assert json.loads(stored.prediction) == expected.label

    # Switched off, it stops scoring; what it scored stays.
    assert client.delete("/api/v1/tiny/shadows/2", headers=ADMIN).status_code == 200
    client.post("/api/v1/tiny/predict", data=json.dumps({"id": 99, "observation": observations[1]}))
    assert ShadowScore.select().count() == 40
    history = client.get("/api/v1/tiny/shadows").get_json()["history"]
    assert [h["enabled"] for h in history] == [True, False]


def test_the_paired_comparison_counts_disagreements_on_the_same_rows(client):
    client.put("/api/v1/tiny/shadows/2", headers=ADMIN)
    for i, observation in enumerate(_observations(120)):
        client.post("/api/v1/tiny/predict", data=json.dumps({"id": i, "observation": observation}))
        # The truth is what version 2 (the shadow) would say, so the shadow should win.
        truth = int(observation["x"] + (observation["color"] == "red") > 1.5)
        client.post("/api/v1/tiny/update", data=json.dumps({"id": i, "true_class": truth}))

    comparison = client.get("/api/v1/tiny/shadows/2").get_json()
    pairs = [
        (json.loads(p.prediction), json.loads(s.prediction), json.loads(p.true_class))
        for p, s in ((Prediction.get_by_id(s.prediction_id), s) for s in ShadowScore.select())
    ]
    only_answering = sum(1 for a, s, t in pairs if a == t and s != t)
    only_shadow = sum(1 for a, s, t in pairs if a != t and s == t)
    assert comparison["labelled"] == 120
    assert comparison["verdict"]["test"] == "McNemar's exact test"
    assert comparison["verdict"]["statistic"] == only_shadow - only_answering
    assert only_shadow > only_answering
    assert comparison["verdict"]["result"] == "shadow better"
    accuracy = {
        side: comparison[side]["metrics"]["accuracy"]["value"] for side in ("shadow", "answering")
    }
    assert accuracy["shadow"] == pytest.approx(sum(s == t for _, s, t in pairs) / 120)
    assert accuracy["answering"] == pytest.approx(sum(a == t for a, _, t in pairs) / 120)
    assert comparison["deltas"]["accuracy"] == pytest.approx(
        accuracy["shadow"] - accuracy["answering"]
    )


def test_a_regression_shadow_is_compared_by_a_paired_t_test(client):
    client.put("/api/v1/line/shadows/2", headers=ADMIN, data='{"reason": "try it"}')
    for i, observation in enumerate(_observations(30)):
        client.post("/api/v1/line/predict", data=json.dumps({"id": i, "observation": observation}))
        client.post("/api/v1/line/update", data=json.dumps({"id": i, "true_class": 1.0}))
    comparison = client.get("/api/v1/line/shadows/2").get_json()
    assert comparison["verdict"]["test"] == "paired t-test on absolute error"
    # Both versions are the same fit: no difference to find.
    assert comparison["deltas"]["mae"] == pytest.approx(0.0)
    assert comparison["verdict"]["result"] == "not yet significant"


def test_no_labelled_rows_and_unknown_versions(client):
    client.put("/api/v1/tiny/shadows/2", headers=ADMIN)
    empty = client.get("/api/v1/tiny/shadows/2").get_json()
    assert (empty["scored"], empty["labelled"], empty["verdict"]["result"]) == (
        0,
        0,
        "no labelled data",
    )
    assert client.put("/api/v1/tiny/shadows/7", headers=ADMIN).status_code == 404
    assert client.get("/api/v1/nope/shadows").status_code == 404
    listed = client.get("/api/v1/tiny/shadows").get_json()
    assert [s["version"] for s in listed["shadows"]] == ["2"]


def test_a_shadow_scores_the_rows_of_a_batch(app, client):
    assert client.put("/api/v1/tiny/shadows/2", headers=ADMIN).status_code == 200
    observations = _observations(30)
    batch = [{"id": f"b{i}", "observation": o} for i, o in enumerate(observations)]
    batch.append({"id": "bad", "observation": {"x": "not a number", "k": 1, "color": "red"}})
    answer = client.post("/api/v1/tiny/predict/batch", data=json.dumps(batch))
    assert answer.status_code == 200
    # Sent again, the rows replay; the shadow keeps one score per row.
    client.post("/api/v1/tiny/predict/batch", data=json.dumps(batch))

    shadow_model = app.extensions["registry"].find("tiny", "2")
    scores = {s.prediction_id: s for s in ShadowScore.select()}
    stored = list(Prediction.select())
    assert len(stored) == 30 and len(scores) == 30
    for row in stored:
        [expected] = shadow_model.predict([json.loads(row.observation)])
        assert scores[row.id].proba == pytest.approx(expected.proba, abs=1e-12)
        assert json.loads(scores[row.id].prediction) == expected.label


def test_a_shadow_skips_what_it_would_refuse_and_the_answer_stands(client):
    assert client.put("/api/v1/strict/shadows/2", headers=ADMIN).status_code == 200
    usual = {"x": 0.1, "k": 1, "color": "red"}
    odd = {**usual, "x": 1000.0}  # far outside training: version 2 rejects it
    assert (
        client.post(
            "/api/v1/strict/predict?version=2", data=json.dumps({"id": "d", "observation": odd})
        ).status_code
        == 422
    )
    for key, observation in (("a", usual), ("b", odd)):
        answer = client.post(
            "/api/v1/strict/predict", data=json.dumps({"id": key, "observation": observation})
        )
        assert answer.status_code == 200 and answer.get_json()["model_version"] == "1"
    batch = [{"id": "c", "observation": usual}, {"id": "e", "observation": odd}]
    assert client.post("/api/v1/strict/predict/batch", data=json.dumps(batch)).status_code == 200
    scored = {
        Prediction.get_by_id(s.prediction_id).observation_id
        for s in ShadowScore.select().where(ShadowScore.endpoint == "strict")
    }
    assert scored == {"a", "c"}
