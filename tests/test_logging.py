"""One structured JSON line per request on stdout."""

from __future__ import annotations

import json

import pytest
import requests

from tests.live import gunicorn
from tests.samples import PASSENGER

# JSON lines and request ids: the same whatever stores the predictions.
pytestmark = [pytest.mark.e2e, pytest.mark.any_database]


def test_one_json_line_per_request(database_url, tmp_path):
    body = {"id": "log-1", "observation": PASSENGER}
    with gunicorn(database_url, tmp_path, workers=1) as server:
        requests.post(f"{server.url}/predict", data=json.dumps(body), timeout=30)
        requests.post(f"{server.url}/update", data='{"id": "nope", "true_class": 1}', timeout=30)
        log = server.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    requests_logged = [line for line in lines if line.get("logger") == "serving.requests"]
    by_path = {(line["path"], line["status"]): line for line in requests_logged}
    predict = by_path[("/predict", 200)]
    assert predict["method"] == "POST"
    assert predict["endpoint"] == "default"
    assert predict["model_version"] == "1"
    assert predict["observation_id"] == "log-1"
    assert predict["latency_ms"] > 0
    assert by_path[("/update", 404)]["observation_id"] == "nope"
    assert sum(1 for line in requests_logged if line["path"] in ("/predict", "/update")) == 2
    assert "Traceback" not in log


def test_every_line_is_json_and_requests_carry_their_id(database_url, tmp_path):
    # gunicorn's own lines (boot, shutdown) included: one stream a log shipper can parse.
    body = {"id": "log-2", "observation": PASSENGER}
    with gunicorn(database_url, tmp_path, workers=1) as server:
        sent = requests.post(
            f"{server.url}/predict",
            data=json.dumps(body),
            headers={"X-Request-ID": "trace-7f3a.1"},
            timeout=30,
        )
        made = requests.get(f"{server.url}/health", timeout=30)
        unsafe = requests.get(
            f"{server.url}/health", headers={"X-Request-ID": "x" * 200}, timeout=30
        )
        log_path = server.log_path
    log = log_path.read_text()  # after the server stopped: its shutdown lines too
    lines = [line for line in log.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, not only the app's
    messages = {(r["logger"], r["message"].split(":")[0]) for r in records}
    assert ("gunicorn.error", "Booting worker with pid") in messages
    assert ("gunicorn.error", "Handling signal") in messages
    assert sent.headers["X-Request-ID"] == "trace-7f3a.1"
    generated = made.headers["X-Request-ID"]
    assert len(generated) == 32 and generated != "trace-7f3a.1"
    # An id that is not a plain token of at most 128 characters is replaced, not echoed.
    assert unsafe.headers["X-Request-ID"] not in ("x" * 200, generated)
    by_id = {r.get("request_id"): r for r in records if r.get("logger") == "serving.requests"}
    assert by_id["trace-7f3a.1"]["path"] == "/predict"
    assert by_id[generated]["path"] == "/health"


def test_lines_logged_while_handling_a_request_carry_its_id(app, capfd):
    import logging

    @app.get("/test-only/log")
    def log_something():
        logging.getLogger("tests.inside").warning("inside the request")
        return {"ok": True}

    answer = app.test_client().get("/test-only/log", headers={"X-Request-ID": "abc"})
    assert answer.headers["X-Request-ID"] == "abc"
    records = [json.loads(x) for x in capfd.readouterr().out.splitlines() if x.startswith("{")]
    inside = [r for r in records if r["logger"] == "tests.inside"]
    assert [r["request_id"] for r in inside] == ["abc"]
    logging.getLogger("tests.outside").warning("outside any request")
    after = [json.loads(x) for x in capfd.readouterr().out.splitlines() if x.startswith("{")]
    assert all("request_id" not in r for r in after)
