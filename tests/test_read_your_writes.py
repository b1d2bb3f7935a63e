"""Status codes and read-your-writes (issue 16, item 3): an unknown endpoint is 404 whatever
the body holds; after a status change, the worker that made it reads it back at once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from serving.store.refreshing import Refreshing
from tests.conftest import fit_tiny_model, make_app

TOKEN = "ryw-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app(database_url: str, tmp_path: Path):
    models = tmp_path / "models"
    fit_tiny_model(models / "tiny" / "1", version="1", initial_status="production")
    fit_tiny_model(models / "tiny" / "2", shift=1.5, version="2", initial_status="testing")
    # A long refresh interval: reading the change back must not depend on the cache expiring.
    application = make_app(database_url, models, admin_token=TOKEN, status_refresh_seconds=600)
    yield application
    from serving.store.database import close_all

    close_all()


@pytest.mark.parametrize("path", ["predict", "update", "predict/batch"])
@pytest.mark.parametrize("body", ["{}", '{"observation": {}}', "[]", "not json"])
def test_an_unknown_endpoint_is_404_whatever_the_body(app, path, body):
    answer = app.test_client().post(f"/api/v1/nope/{path}", data=body)
    assert answer.status_code == 404, answer.get_json()
    assert answer.get_json()["details"][0]["field"] == "endpoint"


def _statuses(client) -> tuple[dict[str, str], dict[str, str]]:
    listed = client.get("/api/v1/endpoints").get_json()["endpoints"]
    [tiny] = [e for e in listed if e["endpoint"] == "tiny"]
    info = client.get("/api/v1/tiny").get_json()["versions"]
    return (
        {v["version"]: v["status"] for v in tiny["versions"]},
        {v["version"]: v["status"] for v in info},
    )


def test_a_status_change_over_http_is_read_back_at_once(app):
    client = app.test_client()
    # Both caches warm, with ten minutes to live.
    assert _statuses(client) == ({"1": "production", "2": "testing"},) * 2
    changed = client.put(
        "/api/v1/tiny/versions/2/status", headers=ADMIN, data=json.dumps({"status": "production"})
    )
    assert changed.status_code == 200
    for _ in range(5):
        assert _statuses(client) == ({"1": "archived", "2": "production"},) * 2
    row = {"x": 0.3, "k": 2, "color": "red"}
    answered = client.post("/api/v1/tiny/predict", data=json.dumps({"id": 1, "observation": row}))
    assert answered.get_json()["model_version"] == "2"


def test_a_status_change_from_the_cli_is_read_back_at_once(app):
    client = app.test_client()
    assert _statuses(client) == ({"1": "production", "2": "testing"},) * 2
    result = app.test_cli_runner().invoke(args=["set-status", "tiny", "2", "staging", "--by", "t"])
    assert result.exit_code == 0, result.output
    assert _statuses(client) == ({"1": "production", "2": "staging"},) * 2


def test_a_read_under_way_during_a_change_is_not_kept():
    # A read that began before this process wrote may return what it read, but a cache that
    # kept it would show the old value for a whole interval after the write.
    database = {"value": "old"}
    reading, release = threading.Event(), threading.Event()

    def read() -> str:
        value = database["value"]
        if value == "old":
            reading.set()
            release.wait(5)
        return value

    cache = Refreshing(read, 600, "")
    slow = threading.Thread(target=cache.get)
    slow.start()
    assert reading.wait(5)
    database["value"] = "new"  # the write...
    cache.forget()  # ...and this process forgetting what it had
    release.set()
    slow.join(5)
    assert cache.get() == "new"


def test_a_value_is_kept_for_its_interval(monkeypatch):
    calls = []
    cache = Refreshing(lambda: calls.append(1) or len(calls), 600, 0)
    assert [cache.get() for _ in range(3)] == [1, 1, 1]
    cache.forget()
    assert cache.get() == 2
