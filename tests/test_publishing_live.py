"""Publishing to a running deployment, end to end: real gunicorn masters of two workers on
127.0.0.1 and one database. A published version reaches every worker of every replica within
STATUS_REFRESH_SECONDS, without a restart, and a restart keeps serving it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
import requests

from tests.conftest import using_postgres
from tests.environment import clean_environ
from tests.live import GUNICORN, REPO_ROOT, Server, eventually, gunicorn
from tests.published_models import income_version, multipart, tiny_version

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOKEN = "publish-live-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 1_000_000
ENV = {
    "ADMIN_TOKEN": TOKEN,
    "STATUS_REFRESH_SECONDS": "1",
    "MAX_MODEL_UPLOAD_BYTES": str(LIMIT),
    "THREADS": "4",
    "DB_POOL_SIZE": "4",
}
INCOME = json.loads((REPO_ROOT / "examples" / "income-observation.json").read_text())
FLASK = GUNICORN.with_name("flask")


def put(url: str, endpoint: str, version: str, files: dict, **kwargs) -> requests.Response:
    return requests.put(
        f"{url}/api/v1/{endpoint}/versions/{version}",
        files=files,
        headers=ADMIN,
        timeout=120,
        **kwargs,
    )


def income_answers(url: str, prefix: str, count: int = 40) -> list[str]:
    """The model_version of `count` concurrent fresh predictions on /api/v1/income/predict
    (concurrent, so both workers answer some)."""

    def one(i: int) -> str:
        body = {"id": f"{prefix}-{i}", "observation": INCOME["observation"]}
        response = requests.post(f"{url}/api/v1/income/predict", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["model_version"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def serving_pids(server: Server, endpoint: str, version: str) -> set[int]:
    """The processes that logged they serve the published version."""
    pids = set()
    for line in server.log().splitlines():
        if '"serving published version"' not in line:
            continue
        entry = json.loads(line)
        if (entry["endpoint"], entry["model_version"]) == (endpoint, version):
            pids.add(entry["pid"])
    return pids


def chunks(size: int) -> Iterator[bytes]:
    """A body of `size` bytes sent chunked (no Content-Length)."""
    block = b"x" * 65536
    for start in range(0, size, len(block)):
        yield block[: size - start]


def test_a_pushed_version_reaches_every_worker_and_survives_a_restart(database_url, tmp_path):
    version3 = income_version(tmp_path / "income-3", "3")
    with gunicorn(database_url, tmp_path, workers=2, env=ENV) as server:
        assert set(income_answers(server.url, "before")) == {"1"}
        published = put(server.url, "income", "3", multipart(version3), data={"by": "alice"})
        assert published.status_code == 201, published.text
        assert published.json()["status"] == "testing"
        promoted = requests.put(
            f"{server.url}/api/v1/income/versions/3/status",
            headers=ADMIN,
            json={"status": "production", "by": "alice"},
            timeout=30,
        )
        assert promoted.status_code == 200, promoted.text
        # Within the refresh window, both workers load it and every answer comes from it.
        assert eventually(
            lambda: (
                set(income_answers(server.url, f"after-{time.monotonic()}")) == {"3"}
                and len(serving_pids(server, "income", "3")) == 2
            )
        ), server.log()[-3000:]
        assert set(income_answers(server.url, "settled", 60)) == {"3"}

        # Never overwritten.
        assert put(server.url, "income", "3", multipart(version3)).status_code == 409
        # A pickle, on a server that does not allow them.
        pickled = tiny_version(tmp_path / "tiny-1", "1", skops=False)
        refused = put(server.url, "tiny", "1", multipart(pickled))
        assert refused.status_code == 422
        assert "ALLOW_PICKLE_UPLOADS" in refused.json()["error"]
        # A digest that does not match its bytes.
        tampered = multipart(tiny_version(tmp_path / "tiny-2", "2"))
        tampered["columns.json"] = ("columns.json", b'["x", "k", "colour"]')
        refused = put(server.url, "tiny", "2", tampered)
        assert refused.status_code == 422
        assert refused.json()["details"] == [
            {"field": "columns.json", "problem": "sha256 differs from model.json's pin"}
        ]
        # Over MAX_MODEL_UPLOAD_BYTES with a Content-Length, and chunked: 413, never cut short.
        big = {"pipeline.skops": ("pipeline.skops", b"x" * (LIMIT + 1))}
        assert put(server.url, "tiny", "2", big).status_code == 413
        chunked = requests.put(
            f"{server.url}/api/v1/tiny/versions/2",
            data=chunks(LIMIT + 1),
            headers={**ADMIN, "Content-Type": "multipart/form-data; boundary=b"},
            timeout=60,
        )
        assert chunked.status_code == 413
        assert "MAX_MODEL_UPLOAD_BYTES" in chunked.json()["error"]
        # `flask models push --url` publishes through the admin route: a new endpoint.
        fresh = tiny_version(tmp_path / "fresh", "1", endpoint="fresh")
        pushed = subprocess.run(
            [
                str(FLASK),
                "--app",
                "app",
                "models",
                "push",
                str(fresh),
                "--url",
                server.url,
                "--token",
                TOKEN,
            ],
            cwd=REPO_ROOT,
            env=clean_environ(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert "published fresh version 1 (testing" in pushed.stdout
        # With no request naming it, the other worker's background check loads it too.
        assert eventually(lambda: len(serving_pids(server, "fresh", "1")) == 2)
        assert requests.get(f"{server.url}/api/v1/fresh", timeout=10).status_code == 200
        listed = requests.get(f"{server.url}/api/v1/endpoints", timeout=10).json()["endpoints"]
        # The refused uploads stored nothing: no endpoint `tiny` anywhere.
        assert {e["endpoint"] for e in listed} == {"default", "income", "heights", "fresh"}
        assert "Traceback" not in server.log()

    # A restart serves it from the store at once, still in production.
    with gunicorn(database_url, tmp_path, workers=2, env=ENV) as restarted:
        assert set(income_answers(restarted.url, "restarted")) == {"3"}
        assert requests.get(f"{restarted.url}/api/v1/fresh", timeout=10).status_code == 200


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not using_postgres():
        pytest.skip("two replicas on one PostgreSQL; runs in the PostgreSQL pass")
    return database_url


@pytest.mark.postgres_only
def test_a_version_pushed_to_the_database_reaches_a_second_replica(postgres_url, tmp_path):
    version = tiny_version(tmp_path / "fresh", "1", endpoint="fresh", initial_status="production")
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(gunicorn(postgres_url, tmp_path, workers=2, env=ENV))
            for _ in range(2)
        ]
        # Straight into the database (DATABASE_URL), as an operator next to it would.
        pushed = subprocess.run(
            [str(FLASK), "--app", "app", "models", "push", str(version)],
            cwd=REPO_ROOT,
            env={**clean_environ(), "DATABASE_URL": postgres_url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        # Every worker of both replicas loads it by itself, before any request names it.
        assert eventually(lambda: all(len(serving_pids(s, "fresh", "1")) == 2 for s in replicas)), [
            s.log()[-2000:] for s in replicas
        ]
        for server in replicas:
            for i in range(8):
                body = {
                    "id": f"{server.url}-{i}",
                    "observation": {"x": 0.1, "k": 1, "color": "red"},
                }
                response = requests.post(
                    f"{server.url}/api/v1/fresh/predict", json=body, timeout=30
                )
                assert response.status_code == 200, response.text
                assert response.json()["model_version"] == "1"
