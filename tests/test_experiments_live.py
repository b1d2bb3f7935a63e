"""Two service processes on one database assign A/B arms identically and both feed shadows."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from serving.decisions.experiments import assign
from tests.conftest import fit_tiny_model
from tests.live import gunicorn

pytestmark = pytest.mark.e2e

TOKEN = "live-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ROW = {"x": 0.1, "k": 1, "color": "red"}


def _predict(url: str, observation_id: int) -> dict:
    response = requests.post(
        f"{url}/api/v1/tiny/predict",
        data=json.dumps({"id": observation_id, "observation": ROW}),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def _until(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the change never reached the process"
        time.sleep(0.1)


def test_two_processes_assign_identically_and_both_score_shadows(database_url, tmp_path: Path):
    models = tmp_path / "models"
    fit_tiny_model(models / "tiny" / "1", version="1", initial_status="production")
    fit_tiny_model(models / "tiny" / "2", shift=1.5, version="2", initial_status="testing")
    fit_tiny_model(models / "tiny" / "3", shift=-0.5, version="3", initial_status="testing")
    env = {"MODELS_DIR": str(models), "ADMIN_TOKEN": TOKEN, "STATUS_REFRESH_SECONDS": "0.5"}
    with (
        gunicorn(database_url, tmp_path, workers=2, env=env) as first,
        gunicorn(database_url, tmp_path, workers=2, env=env) as second,
    ):
        started = requests.post(
            f"{first.url}/api/v1/tiny/ab-tests",
            headers=ADMIN,
            data=json.dumps({"version_a": "1", "version_b": "2", "split": 0.4}),
            timeout=30,
        )
        assert started.status_code == 201, started.text
        test_id = started.json()["id"]
        shadow = requests.put(f"{first.url}/api/v1/tiny/shadows/3", headers=ADMIN, timeout=30)
        assert shadow.status_code == 200, shadow.text
        # Every worker of the second process learns of the test within its refresh time.
        time.sleep(1.0)

        answers = {i: _predict(first.url if i % 2 else second.url, i) for i in range(200)}
        for i, answer in answers.items():
            arm = assign(test_id, i, 0.4)
            assert (answer["ab_test"], answer["arm"]) == (test_id, arm), i
            assert answer["model_version"] == ("1" if arm == "A" else "2")

        comparison = requests.get(f"{second.url}/api/v1/tiny/shadows/3", timeout=30).json()
        assert comparison["scored"] == 200
        assert comparison["answered_by"] == {
            "1": sum(1 for a in answers.values() if a["arm"] == "A"),
            "2": sum(1 for a in answers.values() if a["arm"] == "B"),
        }
        shown = requests.get(f"{second.url}/api/v1/tiny/ab-tests/{test_id}", timeout=30).json()
        assert shown["arms"]["A"]["requests"] + shown["arms"]["B"]["requests"] == 200

        stopped = requests.post(
            f"{second.url}/api/v1/tiny/ab-tests/{test_id}/stop", headers=ADMIN, timeout=30
        )
        assert stopped.status_code == 200
        _until(lambda: "ab_test" not in _predict(first.url, 10_000 + int(time.time() * 1000)))
