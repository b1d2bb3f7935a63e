"""SIGTERM with requests in flight: gunicorn drains them, each is answered 200 and stored.

A redeploy (Railway, or any container host) sends SIGTERM and waits its drain time before
SIGKILL; what was already accepted must finish inside gunicorn's graceful timeout.
"""

from __future__ import annotations

import http.client
import json
import os
import runpy
import signal
from urllib.parse import urlsplit

import pytest
import requests

from serving.config import Settings
from serving.store.database import open_database
from tests.live import REPO_ROOT, gunicorn
from tests.samples import PASSENGER

pytestmark = pytest.mark.e2e

IN_FLIGHT = 12
# Each scoring and each commit batch waits this long for company, so the requests are still
# being served for seconds after the signal: the signal surely lands while they are in flight.
HOLD_MS = 1500


def send_predict(url: str, observation_id: str) -> http.client.HTTPConnection:
    """Connect and send the whole request now; read the answer later."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    body = json.dumps({"id": observation_id, "observation": PASSENGER})
    connection.request("POST", "/predict", body=body)
    return connection


def read_answer(connection: http.client.HTTPConnection) -> tuple[int, dict]:
    """The status and JSON body of the request sent on this connection."""
    response = connection.getresponse()
    payload = json.loads(response.read())
    connection.close()
    return response.status, payload


def stored(database_url: str) -> dict[str, float]:
    """Every stored prediction's probability by observation id."""
    database = open_database(Settings(database_url=database_url))
    with database:
        rows = database.execute_sql("SELECT observation_id, proba FROM prediction").fetchall()
    return dict(rows)


def test_sigterm_lets_accepted_requests_finish_with_200_and_stores_them(database_url, tmp_path):
    hold = {"BATCH_MAX_WAIT_MS": str(HOLD_MS)}
    with gunicorn(database_url, tmp_path, workers=2, env=hold) as server:
        connections = [send_predict(server.url, f"drain-{i}") for i in range(IN_FLIGHT)]
        # The listen queue is first in, first out: once a later connection is answered, every
        # earlier one has been accepted by a worker, so none is still waiting in the backlog.
        assert requests.get(f"{server.url}/health", timeout=30).status_code == 200
        os.killpg(server.process.pid, signal.SIGTERM)
        answers = [read_answer(connection) for connection in connections]
        exit_code = server.process.wait(timeout=60)
        log = server.log()

    assert [status for status, _ in answers] == [200] * IN_FLIGHT, answers
    assert exit_code == 0, log
    # In flight for real: the workers logged every answer after the master took the signal.
    signal_at = log.index("Handling signal: term")
    answered_at = [log.index(f'"observation_id": "drain-{i}"') for i in range(IN_FLIGHT)]
    assert min(answered_at) > signal_at, log
    assert "Traceback" not in log
    # Acknowledged means committed: every 200 is a stored row with the probability it answered.
    assert stored(database_url) == {body["observation_id"]: body["proba"] for _, body in answers}


def test_railway_drains_longer_than_gunicorn_waits_for_requests():
    # The host SIGKILLs when its drain time is up: gunicorn's own grace must end before that,
    # or requests still in flight at the deadline would be cut off instead of answered.
    gunicorn_settings = runpy.run_path(str(REPO_ROOT / "gunicorn.conf.py"))
    railway = json.loads((REPO_ROOT / "railway.json").read_text())
    assert railway["deploy"]["drainingSeconds"] > gunicorn_settings["graceful_timeout"]
