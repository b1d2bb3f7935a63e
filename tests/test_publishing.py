"""Publishing a model version to a running deployment (PUT /api/v1/<endpoint>/versions/
<version>, `flask models push`): what is refused and why, what is stored, and how another
process on the same database (a worker, a replica, a restart) comes to serve it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from serving import create_app
from serving.model.runtime import ModelLoadError
from serving.store.database import close_all, db
from tests.conftest import REPO_ROOT, fit_tiny_model, make_app
from tests.published_models import multipart, pin, tiny_version

TOKEN = "publish-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
OBSERVATION = {"x": 0.1, "k": 1, "color": "red"}


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """An endpoint `tiny` with one folder version, 1, in production."""
    models = tmp_path / "models"
    fit_tiny_model(models / "tiny" / "1", version="1", initial_status="production")
    return models


def app_on(database_url: str, models_dir: Path, **settings: object):
    return make_app(database_url, models_dir, admin_token=TOKEN, **settings)


@pytest.fixture
def app(database_url: str, models_dir: Path):
    application = app_on(database_url, models_dir)
    yield application
    close_all()


@pytest.fixture
def client(app):
    return app.test_client()


def put(client, endpoint: str, version: str, files: dict, headers=ADMIN, **fields):
    """PUT the files (name -> (filename, bytes)) as multipart/form-data."""
    data = {name: (_stream(content), filename) for name, (filename, content) in files.items()}
    return client.put(
        f"/api/v1/{endpoint}/versions/{version}",
        data={**data, **fields},
        headers=headers,
        content_type="multipart/form-data",
    )


def _stream(content: bytes):
    import io

    return io.BytesIO(content)


def stored_rows(database_url: str) -> list[tuple]:
    """(endpoint, version) of every published version, straight from the database."""
    del database_url  # the app bound the database already
    with db.connection_context():
        return db.execute_sql("SELECT endpoint, version FROM published_version").fetchall()


def predict(client, endpoint: str, observation_id: str, version: str | None = None):
    query = f"?version={version}" if version else ""
    return client.post(
        f"/api/v1/{endpoint}/predict{query}",
        data=json.dumps({"id": observation_id, "observation": OBSERVATION}),
    )


def test_a_published_version_is_stored_with_its_digests_and_served_at_once(
    client, database_url, tmp_path
):
    folder = tiny_version(tmp_path / "v2", "2", shift=1.5)
    answer = put(client, "tiny", "2", multipart(folder), by="alice")
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert (body["endpoint"], body["version"], body["status"]) == ("tiny", "2", "testing")
    assert body["published_by"] == "alice"
    assert (
        body["files"]["pipeline.skops"]["sha256"]
        == hashlib.sha256((folder / "pipeline.skops").read_bytes()).hexdigest()
    )
    assert set(body["files"]) == {"pipeline.skops", "dtypes.pickle", "columns.json", "model.json"}
    # Served by this process at once, in its declared status (testing: not the default).
    scored = predict(client, "tiny", "a", version="2")
    assert scored.status_code == 200, scored.get_json()
    assert scored.get_json()["model_version"] == "2"
    assert predict(client, "tiny", "b").get_json()["model_version"] == "1"
    history = client.get("/api/v1/tiny/history").get_json()["history"]
    assert history[-1] | {"at": None} == {
        "endpoint": "tiny",
        "version": "2",
        "from": None,
        "to": "testing",
        "by": "alice",
        "reason": "published; status declared by model.json",
        "at": None,
    }
    assert stored_rows(database_url) == [("tiny", "2")]


def test_a_new_endpoint_gets_its_routes_listing_schema_and_metrics(client, tmp_path):
    folder = tiny_version(tmp_path / "fresh", "1", initial_status="production")
    assert put(client, "fresh", "1", multipart(folder)).status_code == 201
    # Its production version answers the endpoint's default route.
    assert predict(client, "fresh", "a").get_json()["model_version"] == "1"
    listed = client.get("/api/v1/endpoints").get_json()["endpoints"]
    assert {"endpoint": "fresh", "default": False} | {
        "versions": [{"version": "1", "status": "production", "task": "binary_classification"}]
    } in listed
    document = client.get("/openapi.json").get_json()
    assert "/api/v1/fresh/predict" in document["paths"]
    assert "fresh.PredictRequest" in document["components"]["schemas"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'serving_model_info{endpoint="fresh",fast_path="false",task="binary_' in metrics
    assert 'endpoint="fresh"' in metrics.split("serving_http_requests_total", 1)[1]


def test_a_version_is_never_overwritten_nor_a_folder_replaced(client, database_url, tmp_path):
    folder = tiny_version(tmp_path / "v2", "2")
    assert put(client, "tiny", "2", multipart(folder)).status_code == 201
    again = put(client, "tiny", "2", multipart(folder))
    assert again.status_code == 409
    assert again.get_json()["details"] == [{"field": "version", "problem": "already published"}]
    # Version 1 is a model folder: publishing it is refused, the folder keeps serving.
    one = tiny_version(tmp_path / "v1", "1")
    refused = put(client, "tiny", "1", multipart(one))
    assert refused.status_code == 409
    assert "model folder" in refused.get_json()["error"]
    assert stored_rows(database_url) == [("tiny", "2")]


def test_pickles_are_refused_unless_the_operator_allows_them(database_url, models_dir, tmp_path):
    folder = tiny_version(tmp_path / "v2", "2", skops=False)
    refusing = app_on(database_url, models_dir).test_client()
    answer = put(refusing, "tiny", "2", multipart(folder))
    assert answer.status_code == 422
    assert "ALLOW_PICKLE_UPLOADS" in answer.get_json()["error"]
    assert answer.get_json()["details"][0]["field"] == "pipeline.pickle"
    assert stored_rows(database_url) == []
    close_all()
    allowing = app_on(database_url, models_dir, allow_pickle_uploads=True).test_client()
    assert put(allowing, "tiny", "2", multipart(folder)).status_code == 201
    assert predict(allowing, "tiny", "p", version="2").get_json()["model_version"] == "2"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ("tamper", "pipeline.skops", "does not match its sha256"),
        ("unpin", "model.json.sha256.columns.json", "does not pin columns.json"),
        ("drop", "dtypes.pickle", "has no dtypes.pickle"),
        ("extra", "notes.txt", "'notes.txt' is not a model file"),
        ("both", "pipeline.pickle", "both pipeline.pickle and pipeline.skops"),
        ("version", "files", "model.json says version '2' but it is published as version '7'"),
    ],
)
def test_an_upload_that_is_wrong_is_refused_naming_the_problem_and_nothing_is_stored(
    client, database_url, tmp_path, change, field, words
):
    folder = tiny_version(tmp_path / "v2", "2")
    files = multipart(folder)
    version = "2"
    if change == "tamper":
        name, data = files["pipeline.skops"]
        files["pipeline.skops"] = (name, data[:-1] + bytes([data[-1] ^ 1]))
    elif change == "unpin":
        metadata = json.loads((folder / "model.json").read_text())
        del metadata["sha256"]["columns.json"]
        files["model.json"] = ("model.json", json.dumps(metadata).encode())
    elif change == "drop":
        del files["dtypes.pickle"]
    elif change == "extra":
        files["notes.txt"] = ("notes.txt", b"hello")
    elif change == "both":
        files["pipeline.pickle"] = ("pipeline.pickle", b"not even a pickle")
    elif change == "version":
        version = "7"
    answer = put(client, "tiny", version, files)
    assert answer.status_code == 422, answer.get_json()
    assert words in answer.get_json()["error"]
    assert field in [d["field"] for d in answer.get_json()["details"]]
    assert stored_rows(database_url) == []


def test_a_version_that_would_not_load_is_refused_with_the_reason(client, database_url, tmp_path):
    folder = tiny_version(tmp_path / "v2", "2")
    # Every digest matches, but the columns disagree with what the pipeline was fitted on.
    (folder / "columns.json").write_text(json.dumps(["x", "k", "colour"]))
    pin(folder)
    answer = put(client, "tiny", "2", multipart(folder))
    assert answer.status_code == 422
    assert answer.get_json()["error"].startswith(
        "The version cannot be served, so nothing was stored: published version tiny/2: "
        "columns.json ['x', 'k', 'colour'] disagrees with the columns the pipeline was fitted on"
    )
    assert stored_rows(database_url) == []


def test_names_body_type_auth_and_size_are_checked(database_url, models_dir, tmp_path):
    folder = tiny_version(tmp_path / "v2", "2")
    client = app_on(database_url, models_dir, max_model_upload_bytes=1000).test_client()
    assert put(client, "tiny", "2", multipart(folder), headers={}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert put(client, "tiny", "2", multipart(folder), headers=wrong).status_code == 403
    too_large = put(client, "tiny", "2", multipart(folder))
    assert too_large.status_code == 413
    assert "MAX_MODEL_UPLOAD_BYTES" in too_large.get_json()["error"]
    bad_name = client.put("/api/v1/tiny/versions/..%2F", headers=ADMIN, data=b"")
    assert bad_name.status_code in (404, 422)
    assert client.put("/api/v1/tiny/versions/.x", headers=ADMIN).status_code == 422
    not_multipart = client.put("/api/v1/tiny/versions/2", headers=ADMIN, data=b"{}")
    assert not_multipart.status_code == 422
    assert not_multipart.get_json()["details"][0]["field"] == "body"
    assert stored_rows(database_url) == []


def test_another_process_on_the_database_loads_it_and_a_restart_keeps_it(
    database_url, models_dir, tmp_path
):
    publisher = app_on(database_url, models_dir)
    other = app_on(database_url, models_dir)
    folder = tiny_version(tmp_path / "v2", "2", shift=1.5)
    assert put(publisher.test_client(), "tiny", "2", multipart(folder)).status_code == 201
    # The other process (a worker or replica) has not loaded it yet; its check adds it.
    assert other.extensions["registry"].find("tiny", "2") is None
    assert other.extensions["hot_loader"].check() == [("tiny", "2")]
    assert other.extensions["hot_loader"].check() == []
    scored = predict(other.test_client(), "tiny", "o", version="2")
    assert scored.get_json()["model_version"] == "2"
    # Promote it; a restart (a new process) serves it from the store at start.
    promoted = other.test_client().put(
        "/api/v1/tiny/versions/2/status", headers=ADMIN, data=json.dumps({"status": "production"})
    )
    assert promoted.status_code == 200
    close_all()
    restarted = app_on(database_url, models_dir)
    assert restarted.extensions["registry"].published == frozenset({("tiny", "2")})
    assert predict(restarted.test_client(), "tiny", "r").get_json()["model_version"] == "2"


def test_a_version_both_published_and_a_folder_stops_start_up(database_url, models_dir, tmp_path):
    folder = tiny_version(tmp_path / "v2", "2")
    assert put(app_on(database_url, models_dir).test_client(), "tiny", "2", multipart(folder))
    close_all()
    fit_tiny_model(models_dir / "tiny" / "2", version="2")
    with pytest.raises(ModelLoadError, match="published version tiny/2 is also a model folder"):
        app_on(database_url, models_dir)


def test_stored_bytes_that_no_longer_match_their_digest_are_never_loaded(
    database_url, models_dir, tmp_path
):
    folder = tiny_version(tmp_path / "v2", "2")
    assert put(app_on(database_url, models_dir).test_client(), "tiny", "2", multipart(folder))
    with db.connection_context():
        db.execute_sql(
            "UPDATE published_file SET sha256 = %s WHERE name = 'pipeline.skops'"
            if "postgres" in database_url
            else "UPDATE published_file SET sha256 = ? WHERE name = 'pipeline.skops'",
            ("0" * 64,),
        )
    close_all()
    with pytest.raises(ModelLoadError, match="stored pipeline.skops does not match the sha256"):
        app_on(database_url, models_dir)
    skipping = app_on(database_url, models_dir, skip_broken_models=True)
    assert skipping.extensions["registry"].find("tiny", "2") is None
    ready = skipping.test_client().get("/ready", headers=ADMIN).get_json()
    assert {"endpoint": "tiny", "version": "2"} in ready["checks"]["broken_models"]


def test_flask_models_push_writes_the_store_directly(database_url, models_dir, tmp_path):
    app = create_app(
        {
            "database_url": database_url,
            "root_model_dir": REPO_ROOT,
            "models_dir": models_dir,
            "compile_models": False,
        }
    )
    folder = tiny_version(tmp_path / "2", "2", endpoint="tiny")
    runner = app.test_cli_runner()
    done = runner.invoke(args=["models", "push", str(folder), "--by", "bob"])
    assert done.exit_code == 0, done.output
    assert "published tiny version 2 (testing, 4 files" in done.output
    again = runner.invoke(args=["models", "push", str(folder)])
    assert again.exit_code == 1
    assert "is published already" in again.output
    pickled = tiny_version(tmp_path / "3", "3", skops=False)
    refused = runner.invoke(args=["models", "push", str(pickled), "--endpoint", "tiny"])
    assert refused.exit_code == 1
    assert "ALLOW_PICKLE_UPLOADS" in refused.output
    close_all()
    serving = app_on(database_url, models_dir)
    assert serving.extensions["registry"].find("tiny", "2") is not None
    history = serving.test_client().get("/api/v1/tiny/history").get_json()["history"]
    assert (history[-1]["version"], history[-1]["by"]) == ("2", "bob")
