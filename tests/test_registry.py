"""Endpoints and versions: loading models/, routing by status or version, the status lifecycle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.model.runtime import ModelLoadError
from serving.store.tables import Prediction, VersionStatus
from tests.conftest import fit_tiny_model, fit_tiny_multiclass, fit_tiny_regression, make_app
from tests.samples import PASSENGER

TOKEN = "s3cret-token"
ROW = {"x": 0.3, "k": 2, "color": "red"}


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """tiny: v1 production, v2 and v3 testing; tiers (multi-class); line (regression)."""
    root = tmp_path / "models"
    fit_tiny_model(root / "tiny" / "1", shift=0.5, version="1", initial_status="production")
    fit_tiny_model(root / "tiny" / "2", shift=1.5, version="2", initial_status="testing")
    fit_tiny_model(root / "tiny" / "3", shift=-0.5, version="3")
    fit_tiny_multiclass(root / "tiers" / "1", initial_status="production")
    fit_tiny_regression(root / "line" / "1", initial_status="production", out_of_range="reject")
    return root


@pytest.fixture
def client(database_url, models_dir):
    return make_app(database_url, models_dir, admin_token=TOKEN).test_client()


def predict(client, endpoint: str, observation_id, query: str = "", observation=None):
    body = json.dumps({"id": observation_id, "observation": observation or ROW})
    return client.post(f"/api/v1/{endpoint}/predict{query}", data=body)


def set_status(client, endpoint, version, status, token=TOKEN, **extra):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.put(
        f"/api/v1/{endpoint}/versions/{version}/status",
        headers=headers,
        data=json.dumps({"status": status, **extra}),
    )


def test_every_endpoint_and_version_is_listed(client):
    listed = {e["endpoint"]: e for e in client.get("/api/v1/endpoints").get_json()["endpoints"]}
    assert set(listed) == {"default", "tiny", "tiers", "line"}
    assert listed["default"]["default"] is True
    assert [(v["version"], v["status"]) for v in listed["tiny"]["versions"]] == [
        ("1", "production"),
        ("2", "testing"),
        ("3", "testing"),
    ]


def test_production_answers_by_default_and_is_recorded(client):
    response = predict(client, "tiny", 1)
    assert response.status_code == 200
    assert response.get_json()["model_version"] == "1"
    assert response.get_json()["endpoint"] == "tiny"
    assert Prediction.get().model_version == "1"


def test_version_and_status_choose_the_model(client):
    by_version = predict(client, "tiny", 1, "?version=2").get_json()
    assert by_version["model_version"] == "2"
    ambiguous = predict(client, "tiny", 2, "?status=testing")
    assert ambiguous.status_code == 409
    assert "?version=" in ambiguous.get_json()["error"]
    assert predict(client, "tiny", 3, "?status=staging").status_code == 404
    assert predict(client, "tiny", 4, "?status=bogus").status_code == 422
    assert predict(client, "tiny", 5, "?version=9").status_code == 404
    assert predict(client, "nope", 6).status_code == 404
    assert Prediction.select().count() == 1


def test_versions_answer_differently(client):
    one = predict(client, "tiny", "a", "?version=1").get_json()["proba"]
    two = predict(client, "tiny", "b", "?version=2").get_json()["proba"]
    assert one != two


def test_tutorial_routes_still_serve_the_default_endpoint(client):
    answer = client.post("/predict", data=json.dumps({"id": 1, "observation": PASSENGER}))
    assert answer.get_json()["endpoint"] == "default"
    assert client.post("/update", data='{"id": 1, "true_class": 1}').status_code == 200


def test_update_per_endpoint(client):
    predict(client, "tiny", 10)
    response = client.post("/api/v1/tiny/update", data='{"id": 10, "true_class": 1}')
    assert response.status_code == 200 and response.get_json()["true_class"] == 1
    assert client.post("/api/v1/tiny/update", data='{"id": 11, "true_class": 1}').status_code == 404


def test_admin_calls_need_the_token(database_url, models_dir):
    closed = make_app(database_url, models_dir).test_client()
    assert set_status(closed, "tiny", "2", "staging").status_code == 403
    client = make_app(database_url, models_dir, admin_token=TOKEN).test_client()
    assert set_status(client, "tiny", "2", "staging", token=None).status_code == 401
    assert set_status(client, "tiny", "2", "staging", token="wrong").status_code == 403
    assert set_status(client, "tiny", "2", "staging").status_code == 200


def test_promotion_archives_the_old_production_and_keeps_history(client):
    response = set_status(client, "tiny", "2", "production", by="alice", reason="better AUC")
    assert response.status_code == 200
    assert response.get_json()["changed"] == [
        {"version": "1", "from": "production", "to": "archived"},
        {"version": "2", "from": "testing", "to": "production"},
    ]
    assert predict(client, "tiny", 1).get_json()["model_version"] == "2"
    archived = predict(client, "tiny", 2, "?version=1")
    assert archived.status_code == 409
    history = client.get("/api/v1/tiny/history").get_json()["history"]
    last = history[-1]
    assert (last["version"], last["from"], last["to"], last["by"], last["reason"]) == (
        "2",
        "testing",
        "production",
        "alice",
        "better AUC",
    )
    assert last["at"].endswith("Z")
    assert VersionStatus.select().where(VersionStatus.endpoint == "tiny").count() == 5


def test_production_cannot_be_demoted_directly(client):
    response = set_status(client, "tiny", "1", "testing")
    assert response.status_code == 409
    assert predict(client, "tiny", 1).get_json()["model_version"] == "1"


def test_bad_status_body_is_422(client):
    assert set_status(client, "tiny", "2", "retired").status_code == 422
    assert set_status(client, "tiny", "9", "staging").status_code == 404


def test_cli_changes_status(database_url, models_dir):
    app = make_app(database_url, models_dir)
    result = app.test_cli_runner().invoke(
        args=["set-status", "tiny", "3", "production", "--by", "bob"]
    )
    assert result.exit_code == 0, result.output
    assert "tiny version 3: testing -> production" in result.output
    assert predict(app.test_client(), "tiny", 1).get_json()["model_version"] == "3"
    refused = app.test_cli_runner().invoke(args=["set-status", "tiny", "3", "archived"])
    assert refused.exit_code != 0


def test_multiclass_returns_every_label(client):
    body = predict(client, "tiers", 1, observation={"x": 2.0, "k": 1, "color": "blue"}).get_json()
    assert body["prediction"] == "high"
    assert set(body["probabilities"]) == {"high", "low", "mid"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    assert body["proba"] == max(body["probabilities"].values())
    assert (
        client.post("/api/v1/tiers/update", data='{"id": 1, "true_class": "mid"}').status_code
        == 200
    )
    assert (
        client.post("/api/v1/tiers/update", data='{"id": 1, "true_class": "top"}').status_code
        == 422
    )


def test_regression_returns_a_value(client):
    body = predict(client, "line", 1, observation={"x": 1.0, "k": 2, "color": "red"}).get_json()
    assert body["prediction"] == pytest.approx(5.0, abs=0.01)
    assert body["proba"] is None
    assert Prediction.get().value == pytest.approx(5.0, abs=0.01)
    assert (
        client.post("/api/v1/line/update", data='{"id": 1, "true_class": 5.2}').status_code == 200
    )
    assert (
        client.post("/api/v1/line/update", data='{"id": 1, "true_class": "x"}').status_code == 422
    )


def test_out_of_range_is_rejected_when_the_model_says_so(client):
    response = predict(client, "line", 1, observation={"x": 50.0, "k": 2, "color": "red"})
    assert response.status_code == 422
    assert response.get_json()["details"][0]["field"] == "observation.x"
    assert "training range" in response.get_json()["details"][0]["problem"]
    unseen = predict(client, "line", 2, observation={"x": 0.0, "k": 2, "color": "pink"})
    assert unseen.status_code == 422
    assert Prediction.select().count() == 0


def test_out_of_range_and_unseen_categories_warn_by_default(client):
    passenger = {**PASSENGER, "Age": 200.0, "Embarked": "X"}
    body = client.post("/predict", data=json.dumps({"id": 1, "observation": passenger})).get_json()
    problems = {w["field"]: w["problem"] for w in body["warnings"]}
    assert "outside the training range" in problems["observation.Age"]
    assert "not seen in training" in problems["observation.Embarked"]


def test_endpoint_info_shows_schema_statuses_and_metadata(client):
    info = client.get("/api/v1/default").get_json()
    [version] = info["versions"]
    assert version["status"] == "production"
    fields = {f["name"]: f for f in version["inputs"]}
    assert fields["Age"]["type"] == "number" and fields["Age"]["training_range"][0] >= 0
    assert "S" in fields["Embarked"]["training_categories"]
    assert "pipeline_sha256" in version["metadata_keys"]
    key = client.get("/api/v1/default/key/target").get_json()
    assert key["value"] == "Survived"
    assert client.get("/api/v1/default/key/nope").status_code == 404
    assert client.get("/api/v1/nope").status_code == 404


def test_a_broken_folder_stops_startup_with_its_name(database_url, models_dir):
    (models_dir / "tiny" / "2" / "columns.json").unlink()
    with pytest.raises(ModelLoadError, match=r"tiny/2: columns.json is missing"):
        make_app(database_url, models_dir)


def test_a_version_named_unlike_its_model_json_is_refused(database_url, models_dir):
    (models_dir / "tiny" / "3").rename(models_dir / "tiny" / "4")
    message = "model.json says version '3' but the folder is named '4'"
    with pytest.raises(ModelLoadError, match=message):
        make_app(database_url, models_dir)


def test_broken_folders_can_be_skipped_and_are_reported(database_url, models_dir):
    (models_dir / "tiny" / "2" / "pipeline.pickle").write_bytes(b"junk")
    client = make_app(database_url, models_dir, skip_broken_models=True).test_client()
    ready = client.get("/ready").get_json()
    assert ready["checks"]["broken_models"][0]["version"] == "2"
    info = client.get("/api/v1/tiny").get_json()
    assert [v["version"] for v in info["versions"]] == ["1", "3"]
    assert "cannot be unpickled" in info["broken_versions"][0]["error"]
    assert predict(client, "tiny", 1).status_code == 200
