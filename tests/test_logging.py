"""One structured JSON line per request on stdout."""

from __future__ import annotations

import json

import pytest
import requests

from tests.live import gunicorn
from tests.samples import PASSENGER

pytestmark = pytest.mark.e2e


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
