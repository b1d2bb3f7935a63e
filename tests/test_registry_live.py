"""A status change reaches every worker of every service process on the database, no restart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import fit_tiny_model
from tests.live import gunicorn

pytestmark = pytest.mark.e2e

TOKEN = "live-token"


def answering_versions(url: str, prefix: str, count: int) -> set[str]:
    """Which versions answered `count` fresh predictions."""
    versions = set()
    for i in range(count):
        body = json.dumps(
            {"id": f"{prefix}-{i}", "observation": {"x": 0.1, "k": 1, "color": "red"}}
        )
        response = requests.post(f"{url}/api/v1/tiny/predict", data=body, timeout=30)
        assert response.status_code == 200, response.text
        versions.add(response.json()["model_version"])
    return versions


def test_promotion_reaches_a_second_worker_and_a_second_process(database_url, tmp_path: Path):
    models = tmp_path / "models"
    fit_tiny_model(models / "tiny" / "1", version="1", initial_status="production")
    fit_tiny_model(models / "tiny" / "2", shift=1.5, version="2", initial_status="testing")
    env = {"MODELS_DIR": str(models), "ADMIN_TOKEN": TOKEN, "STATUS_REFRESH_SECONDS": "1"}
    with (
        gunicorn(database_url, tmp_path, workers=2, env=env) as first,
        gunicorn(database_url, tmp_path, workers=2, env=env) as second,
    ):
        assert answering_versions(first.url, "a", 20) == {"1"}
        assert answering_versions(second.url, "b", 20) == {"1"}
        changed = requests.put(
            f"{first.url}/api/v1/tiny/versions/2/status",
            headers={"Authorization": f"Bearer {TOKEN}"},
            data=json.dumps({"status": "production", "by": "test"}),
            timeout=30,
        )
        assert changed.status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = answering_versions(first.url, f"c{time.monotonic()}", 10) | answering_versions(
                second.url, f"d{time.monotonic()}", 10
            )
            if seen == {"2"}:
                break
            time.sleep(0.5)
        # Many requests over both workers of both processes: all on the new version.
        assert answering_versions(first.url, "e", 40) == {"2"}
        assert answering_versions(second.url, "f", 40) == {"2"}
