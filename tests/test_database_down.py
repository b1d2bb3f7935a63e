"""PostgreSQL stopped mid-service: 503 and nothing stored; back up: served again, no restart.

Runs on a throwaway cluster of its own (never the shared one), so it needs PostgreSQL's server
binaries and root (to run them as the postgres user). It runs in the PostgreSQL pass.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from tests.conftest import using_postgres
from tests.live import free_port, gunicorn
from tests.samples import PASSENGER

pytestmark = [pytest.mark.e2e, pytest.mark.postgres_only]


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else None


class Cluster:
    """A PostgreSQL cluster in a temporary folder, on its own port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pg-throwaway-"))
        self.data = self.root / "data"
        self.port = free_port()
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(_bin("initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres")

    def _as_postgres(self, *argv: str | None) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster():
    if not using_postgres():
        pytest.skip("runs in the PostgreSQL pass of the suite")
    if _bin("initdb") is None or os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs PostgreSQL server binaries and root to run a throwaway cluster")
    made = Cluster()
    made.start()
    yield made
    made.destroy()


def predict(url: str, observation_id: str) -> requests.Response:
    body = json.dumps({"id": observation_id, "observation": PASSENGER})
    return requests.post(f"{url}/predict", data=body, timeout=30)


def test_outage_answers_503_stores_nothing_and_recovers(cluster, tmp_path):
    with gunicorn(cluster.url, tmp_path, workers=1) as server:
        assert predict(server.url, "before").status_code == 200

        cluster.stop()
        during = predict(server.url, "during")
        assert during.status_code == 503
        assert "database" in during.json()["error"].lower()
        assert "Traceback" not in during.text
        assert requests.get(f"{server.url}/ready", timeout=30).status_code == 503
        assert requests.get(f"{server.url}/health", timeout=30).status_code == 200
        update = requests.post(
            f"{server.url}/update", timeout=30, data=json.dumps({"id": "before", "true_class": 1})
        )
        assert update.status_code == 503
        batch = requests.post(
            f"{server.url}/predict/batch",
            timeout=30,
            data=json.dumps([{"id": "batch-during", "observation": PASSENGER}]),
        )
        assert batch.status_code == 503 and "Traceback" not in batch.text
        # Read routes say so too: JSON for the API, an HTML page for the dashboard.
        drift = requests.get(f"{server.url}/api/v1/default/drift", timeout=30)
        assert drift.status_code == 503 and "database" in drift.json()["error"].lower()
        dashboard = requests.get(f"{server.url}/", timeout=30)
        assert dashboard.status_code == 503
        assert dashboard.headers["Content-Type"].startswith("text/html")
        assert "Traceback" not in dashboard.text

        cluster.start()
        assert predict(server.url, "after").status_code == 200
        # The client that got a 503 retries with the same id and is served.
        retried = predict(server.url, "during")
        assert retried.status_code == 200
        assert requests.get(f"{server.url}/ready", timeout=30).status_code == 200

    import psycopg2

    with psycopg2.connect(cluster.url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT observation_id, true_class FROM prediction ORDER BY id")
        assert cursor.fetchall() == [("before", None), ("after", None), ("during", None)]
