"""A/B tests over HTTP: sticky assignment, live comparison, a stop that promotes, admin only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.decisions.experiments import assign
from serving.store.predictions import NewPrediction, store
from serving.store.tables import Prediction
from tests.conftest import fit_tiny_model, fit_tiny_regression, make_app

TOKEN = "ab-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ROW = {"x": 0.3, "k": 2, "color": "red"}


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    fit_tiny_model(root / "tiny" / "1", shift=0.5, version="1", initial_status="production")
    fit_tiny_model(root / "tiny" / "2", shift=1.5, version="2", initial_status="testing")
    fit_tiny_model(root / "tiny" / "3", shift=-0.5, version="3", initial_status="staging")
    fit_tiny_regression(root / "line" / "1", version="1", initial_status="production")
    fit_tiny_regression(root / "line" / "2", version="2", initial_status="testing")
    return root


@pytest.fixture
def client(database_url: str, models_dir: Path):
    return make_app(database_url, models_dir, admin_token=TOKEN).test_client()


def start(client, endpoint="tiny", headers=ADMIN, **body):
    body = {"version_a": "1", "version_b": "2", "split": 0.5, **body}
    return client.post(f"/api/v1/{endpoint}/ab-tests", headers=headers, data=json.dumps(body))


def predict(client, observation_id, endpoint="tiny", query=""):
    return client.post(
        f"/api/v1/{endpoint}/predict{query}",
        data=json.dumps({"id": observation_id, "observation": ROW}),
    )


def test_assignment_is_sticky_and_matches_the_split():
    arms = [assign(42, i, 0.3) for i in range(10_000)]
    assert abs(arms.count("B") / 10_000 - 0.3) < 0.02
    assert arms == [assign(42, i, 0.3) for i in range(10_000)]
    # An integer id and its decimal string are one observation, so one arm.
    assert [assign(42, str(i), 0.3) for i in range(1000)] == arms[:1000]
    # Another test reshuffles: assignment depends on the test as well as the id.
    assert [assign(43, i, 0.3) for i in range(1000)] != arms[:1000]


def test_predictions_record_the_test_and_arm_that_chose_their_version(client):
    test = start(client, split=0.5).get_json()
    assert test["state"] == "running"
    for i in range(60):
        answer = predict(client, i).get_json()
        arm = assign(test["id"], i, 0.5)
        assert (answer["ab_test"], answer["arm"]) == (test["id"], arm)
        assert answer["model_version"] == ("1" if arm == "A" else "2")
    # A retried id replays its first answer, on its arm.
    again = predict(client, 7).get_json()
    assert again["arm"] == assign(test["id"], 7, 0.5)
    # An explicit version bypasses the test.
    explicit = predict(client, "x-1", query="?version=3").get_json()
    assert "ab_test" not in explicit and explicit["model_version"] == "3"
    shown = client.get(f"/api/v1/tiny/ab-tests/{test['id']}").get_json()
    requests = {arm: shown["arms"][arm]["requests"] for arm in "AB"}
    arms = [assign(test["id"], i, 0.5) for i in range(60)]
    assert requests == {"A": arms.count("A"), "B": arms.count("B")}


def _seed_arm(test_id: int, arm: str, version: str, correct: int, n: int) -> None:
    """Labelled rows of one arm: the first `correct` predicted the true class, 1."""
    store(
        [
            NewPrediction(
                endpoint="tiny",
                model_version=version,
                observation_id=f"{arm}-{i}",
                observation=ROW,
                proba=0.9 if i < correct else 0.1,
                label=1 if i < correct else 0,
                ab_test=test_id,
                arm=arm,
            )
            for i in range(n)
        ]
    )
    Prediction.update(true_class="1").where(
        (Prediction.ab_test == test_id) & (Prediction.arm == arm)
    ).execute()


def test_a_known_difference_gives_a_verdict_and_stop_promotes_the_winner(client):
    test = start(client).get_json()
    _seed_arm(test["id"], "A", "1", correct=1400, n=2000)
    _seed_arm(test["id"], "B", "2", correct=1600, n=2000)

    live = client.get(f"/api/v1/tiny/ab-tests/{test['id']}").get_json()
    assert live["verdict"]["result"] == "B better"
    assert live["verdict"]["p_value"] < 1e-6
    assert live["arms"]["A"]["metrics"]["accuracy"]["value"] == pytest.approx(0.7)
    assert live["arms"]["B"]["metrics"]["accuracy"]["value"] == pytest.approx(0.8)
    low, high = (live["arms"]["B"]["metrics"]["accuracy"][k] for k in ("low", "high"))
    assert low < 0.8 < high
    assert live["arms"]["B"]["labelled"] == 2000
    assert live["verdict"]["required_per_arm"] == 294

    stopped = client.post(f"/api/v1/tiny/ab-tests/{test['id']}/stop", headers=ADMIN)
    assert stopped.status_code == 200, stopped.get_json()
    summary = stopped.get_json()
    assert (summary["state"], summary["winner"], summary["promoted"]) == ("stopped", "2", True)
    statuses = {
        v["version"]: v["status"]
        for v in client.get("/api/v1/endpoints").get_json()["endpoints"][-1]["versions"]
    }
    assert statuses == {"1": "testing", "2": "production", "3": "staging"}
    history = client.get("/api/v1/tiny/history").get_json()["history"]
    assert [(h["version"], h["to"]) for h in history[-3:]] == [
        ("1", "archived"),
        ("2", "production"),
        ("1", "testing"),
    ]
    assert all(f"A/B test {test['id']}" in h["by"] for h in history[-3:])
    # The stored summary is what the test shows from now on, and assignment has ended.
    assert client.get(f"/api/v1/tiny/ab-tests/{test['id']}").get_json() == summary
    after = predict(client, "after-stop").get_json()
    assert "ab_test" not in after and after["model_version"] == "2"
    # Another test may start now.
    assert start(client, version_a="2", version_b="3").status_code == 201


def test_equal_arms_stop_without_promotion_unless_forced(client):
    test = start(client).get_json()
    _seed_arm(test["id"], "A", "1", correct=150, n=200)
    _seed_arm(test["id"], "B", "2", correct=150, n=200)
    assert client.get(f"/api/v1/tiny/ab-tests/{test['id']}").get_json()["verdict"]["result"] == (
        "not yet significant"
    )
    summary = client.post(f"/api/v1/tiny/ab-tests/{test['id']}/stop", headers=ADMIN).get_json()
    assert (summary["winner"], summary["promoted"]) == (None, False)
    versions = client.get("/api/v1/endpoints").get_json()["endpoints"][-1]["versions"]
    assert versions[0]["status"] == "production"

    forced = start(client).get_json()
    summary = client.post(
        f"/api/v1/tiny/ab-tests/{forced['id']}/stop",
        headers=ADMIN,
        data=json.dumps({"winner": "B", "reason": "cheaper to run"}),
    ).get_json()
    assert (summary["winner"], summary["forced"], summary["promoted"]) == ("2", True, True)
    history = client.get("/api/v1/tiny/history").get_json()["history"]
    assert history[-2]["reason"] == "cheaper to run"


def test_a_stop_by_the_longest_name_allowed_still_fits_the_history(client):
    test = start(client).get_json()
    stopped = client.post(
        f"/api/v1/tiny/ab-tests/{test['id']}/stop",
        headers=ADMIN,
        data=json.dumps({"winner": "B", "by": "b" * 200}),
    )
    assert stopped.status_code == 200, stopped.get_json()
    history = client.get("/api/v1/tiny/history").get_json()["history"]
    promoted = [h for h in history if f"A/B test {test['id']}" in h["by"]]
    assert promoted and all(len(h["by"]) <= 200 for h in promoted)


def test_an_empty_arm_says_no_labelled_data(client):
    test = start(client).get_json()
    shown = client.get(f"/api/v1/tiny/ab-tests/{test['id']}").get_json()
    assert shown["verdict"]["result"] == "no labelled data"
    assert shown["arms"]["A"]["labelled"] == 0
    assert shown["arms"]["A"]["metrics"]["accuracy"] == {"value": None, "low": None, "high": None}
    listed = client.get("/api/v1/tiny/ab-tests").get_json()["ab_tests"]
    assert [t["id"] for t in listed] == [test["id"]]


def test_a_regression_test_compares_absolute_errors(client):
    test = start(client, endpoint="line").get_json()
    for i in range(100):
        predict(client, i, endpoint="line")
    for row in Prediction.select().where(Prediction.endpoint == "line"):
        # Arm B's version predicts the truth closely, arm A's far off.
        offset = 0.05 if row.arm == "B" else 3.0 + (row.id % 3)
        Prediction.update(true_class=json.dumps(row.value + offset)).where(
            Prediction.id == row.id
        ).execute()
    shown = client.get(f"/api/v1/line/ab-tests/{test['id']}").get_json()
    assert shown["verdict"]["test"] == "Welch's t-test on absolute error"
    assert shown["verdict"]["result"] == "B better"
    assert shown["arms"]["B"]["metrics"]["mae"]["value"] == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        # A version the endpoint does not have is a resource not found, not a malformed body.
        ({"version_b": "9"}, 404, "version_b"),
        ({"version_a": "nope"}, 404, "version_a"),
        ({"version_b": 9}, 422, "version_b"),
        ({"version_b": "1"}, 422, "version_b"),
        ({"split": 1.0}, 422, "split"),
        ({"split": "half"}, 422, "split"),
        ({"split": True}, 422, "split"),
        ({"name": 5}, 422, "name"),
    ],
)
def test_bad_test_definitions_name_the_field(client, body, status, field):
    answer = start(client, **body)
    assert answer.status_code == status
    assert answer.get_json()["details"][0]["field"] == field


def test_one_running_test_per_endpoint_and_stopping_twice_conflicts(client):
    test = start(client).get_json()
    assert start(client, version_b="3").status_code == 409
    assert client.post(f"/api/v1/tiny/ab-tests/{test['id']}/stop", headers=ADMIN).status_code == 200
    again = client.post(f"/api/v1/tiny/ab-tests/{test['id']}/stop", headers=ADMIN)
    assert again.status_code == 409
    assert client.get("/api/v1/tiny/ab-tests/999").status_code == 404
    bad = client.post(
        f"/api/v1/tiny/ab-tests/{test['id']}/stop", headers=ADMIN, data='{"winner": "C"}'
    )
    assert bad.status_code == 422


def test_admin_routes_refuse_without_the_token(client):
    assert start(client, headers={}).status_code == 401
    assert start(client, headers={"Authorization": "Bearer wrong"}).status_code == 403
    test = start(client).get_json()
    stop = f"/api/v1/tiny/ab-tests/{test['id']}/stop"
    assert client.post(stop).status_code == 401
    assert client.post(stop, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.put("/api/v1/tiny/shadows/2").status_code == 401
    assert client.delete("/api/v1/tiny/shadows/2").status_code == 401
    # Reading is open.
    assert client.get(f"/api/v1/tiny/ab-tests/{test['id']}").status_code == 200
