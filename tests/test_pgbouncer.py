"""Two replicas behind PgBouncer in transaction mode, as in compose.yaml and deploy/kubernetes.

Debian's `pgbouncer` runs on a free 127.0.0.1 port with its own configuration, in front of
this run's throwaway PostgreSQL database, with a server pool of 4 connections for 16 client
connections (2 replicas x 2 workers x DB_POOL_SIZE 4): every transaction may land on another
server connection than the last, so anything the service kept in a session (a SET, a session
advisory lock, a prepared statement) would go wrong here. Through it: group commit under
concurrent replays, a status change reaching every worker of both replicas, and an A/B test
started, fed and stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from serving.decisions.experiments import assign
from tests.conftest import fit_tiny_model, using_postgres
from tests.live import Server, free_port, gunicorn
from tests.test_replicas import stored

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres_only]

TOKEN = "pooled-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SERVER_POOL = 4
# Each worker's own pool as large as its threads (see tests/test_replicas.py).
REPLICA_ENV = {"THREADS": "4", "DB_POOL_SIZE": "4", "STATUS_REFRESH_SECONDS": "1"}
WORKERS = 2
IDS = 60
REPEATS = 3


def pgbouncer_binary() -> str:
    """Debian's pgbouncer; skipped without it, except under CI, where that fails."""
    found = shutil.which("pgbouncer") or shutil.which("/usr/sbin/pgbouncer")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("pgbouncer is not installed; .ci/run installs Debian's package")
    pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")


@pytest.fixture
def server_url(database_url: str) -> str:
    if not using_postgres():
        pytest.skip("PgBouncer pools PostgreSQL; runs in the PostgreSQL pass")
    return database_url


def _config(folder: Path, database_url: str, port: int) -> Path:
    """A pgbouncer.ini for one database, transaction pooling, trust like the test server."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    user = parts.username or "postgres"
    (folder / "userlist.txt").write_text(f'"{user}" ""\n')
    settings = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(folder / "userlist.txt"),
        "pool_mode": "transaction",
        "default_pool_size": str(SERVER_POOL),
        "min_pool_size": "0",
        "reserve_pool_size": "0",
        "max_client_conn": "100",
        "server_reset_query": "",
        "log_connections": "0",
        "log_disconnections": "0",
        # Its console (database `pgbouncer`) tells how many server connections it holds.
        "admin_users": user,
    }
    if os.geteuid() == 0:
        # pgbouncer refuses to run as root; it opens its port, then becomes this user.
        settings["user"] = "nobody"
    host, server_port = parts.hostname or "127.0.0.1", parts.port or 5432
    lines = [
        "[databases]",
        f"{name} = host={host} port={server_port} dbname={name}",
        "[pgbouncer]",
        *(f"{key} = {value}" for key, value in settings.items()),
    ]
    path = folder / "pgbouncer.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def pgbouncer(database_url: str, folder: Path) -> Iterator[str]:
    """Run pgbouncer in front of `database_url`; yield the URL that goes through it."""
    binary = pgbouncer_binary()
    folder.mkdir()
    port = free_port()
    log = folder / "pgbouncer.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, str(_config(folder, database_url, port))],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        parts = urlsplit(database_url)
        yield urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _server_connections(pooled_url: str) -> int:
    """How many connections pgbouncer holds to PostgreSQL for this run's database, from its
    own console (SHOW SERVERS). Counting pg_stat_activity instead would also count the
    test's own direct connections."""
    import psycopg2

    parts = urlsplit(pooled_url)
    name = parts.path.lstrip("/")
    connection = psycopg2.connect(urlunsplit(parts._replace(path="/pgbouncer")))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW SERVERS")
            columns = [c[0] for c in cursor.description]
            rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    finally:
        connection.close()
    return sum(1 for row in rows if row["database"] == name)


def _predict(url: str, observation_id: str | int, x: float = 0.1) -> dict:
    # A new connection each time: the kernel hands it to either worker of the replica.
    response = requests.post(
        f"{url}/api/v1/tiny/predict",
        data=json.dumps({"id": observation_id, "observation": {"x": x, "k": 1, "color": "red"}}),
        timeout=60,
    )
    return response.json() | {"_status": response.status_code}


def _answered(server: Server, prefix: str) -> dict[int, set[str]]:
    """pid -> versions of the /predict lines in the server's log whose id starts `prefix`."""
    seen: dict[int, set[str]] = {}
    for line in server.log().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if str(record.get("observation_id", "")).startswith(prefix) and record.get("status") == 200:
            seen.setdefault(record["pid"], set()).add(record["model_version"])
    return seen


def _group_commit(servers: list[Server], database_url: str) -> None:
    """Concurrent predictions with each id sent REPEATS times to either replica."""
    work = [(f"pool-{i}", 0.01 * i) for _ in range(REPEATS) for i in range(IDS)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(
            pool.map(
                lambda n: _predict(servers[n % 2].url, work[n][0], work[n][1]), range(len(work))
            )
        )
    assert [a["_status"] for a in results] == [200] * len(work), results
    rows = {k: v for k, v in stored(database_url).items() if k.startswith("pool-")}
    assert len(rows) == IDS
    assert {oid: len(found) for oid, found in rows.items() if len(found) != 1} == {}
    answers: dict[str, set[str]] = {}
    for answer in results:
        answers.setdefault(answer["observation_id"], set()).add(json.dumps(answer, sort_keys=True))
    assert {oid: len(seen) for oid, seen in answers.items() if len(seen) != 1} == {}
    for observation_id, seen in answers.items():
        answer = json.loads(seen.pop())
        [(row_id, proba, _created_at)] = rows[observation_id]
        assert (answer["id"], answer["proba"]) == (row_id, proba)


def _every_worker_answers(servers: list[Server], prefix: str, version: str) -> None:
    """Predictions to each replica until both its workers answered; all with `version`."""
    for replica, server in enumerate(servers):
        deadline = time.monotonic() + 30
        sent = 0
        while len(_answered(server, prefix)) < WORKERS:
            assert time.monotonic() < deadline, _answered(server, prefix)
            batch = [f"{prefix}{replica}-{sent + i}" for i in range(8)]
            sent += len(batch)
            with ThreadPoolExecutor(max_workers=4) as pool:
                answers = list(pool.map(_predict, [server.url] * len(batch), batch))
            assert {a["_status"] for a in answers} == {200}, answers
        assert set().union(*_answered(server, prefix).values()) == {version}


def test_two_replicas_behind_pgbouncer_in_transaction_mode(server_url, tmp_path):
    models = tmp_path / "models"
    fit_tiny_model(models / "tiny" / "1", version="1", initial_status="production")
    fit_tiny_model(models / "tiny" / "2", shift=1.5, version="2", initial_status="testing")
    fit_tiny_model(models / "tiny" / "3", shift=-0.5, version="3", initial_status="testing")
    env = {**REPLICA_ENV, "MODELS_DIR": str(models), "ADMIN_TOKEN": TOKEN}
    with ExitStack() as stack:
        pooled = stack.enter_context(pgbouncer(server_url, tmp_path / "pgbouncer"))
        servers = [
            stack.enter_context(gunicorn(pooled, tmp_path, workers=WORKERS, env=env))
            for _ in range(2)
        ]

        # Group commit: one row per id, every replay the stored row.
        _group_commit(servers, server_url)
        # 16 client connections, at most SERVER_POOL server connections: really multiplexed.
        servers_held = _server_connections(pooled)
        assert 0 < servers_held <= SERVER_POOL, servers_held

        # The registry: a promotion through one replica reaches every worker of both.
        changed = requests.put(
            f"{servers[0].url}/api/v1/tiny/versions/2/status",
            headers=ADMIN,
            data=json.dumps({"status": "production", "by": "test"}),
            timeout=30,
        )
        assert changed.status_code == 200, changed.text
        time.sleep(float(REPLICA_ENV["STATUS_REFRESH_SECONDS"]) + 1)
        _every_worker_answers(servers, "promoted-", "2")

        # An A/B test started through one replica, fed through both, stopped through the other.
        started = requests.post(
            f"{servers[1].url}/api/v1/tiny/ab-tests",
            headers=ADMIN,
            data=json.dumps({"version_a": "2", "version_b": "3", "split": 0.5}),
            timeout=30,
        )
        assert started.status_code == 201, started.text
        test_id = started.json()["id"]
        time.sleep(float(REPLICA_ENV["STATUS_REFRESH_SECONDS"]) + 1)
        answers = {i: _predict(servers[i % 2].url, i) for i in range(100)}
        for i, answer in answers.items():
            arm = assign(test_id, i, 0.5)
            assert (answer["ab_test"], answer["arm"]) == (test_id, arm), (i, answer)
            assert answer["model_version"] == ("2" if arm == "A" else "3")
        shown = requests.get(f"{servers[0].url}/api/v1/tiny/ab-tests/{test_id}", timeout=30)
        arms = shown.json()["arms"]
        assert arms["A"]["requests"] + arms["B"]["requests"] == 100
        stopped = requests.post(
            f"{servers[0].url}/api/v1/tiny/ab-tests/{test_id}/stop", headers=ADMIN, timeout=30
        )
        assert stopped.status_code == 200, stopped.text
        time.sleep(float(REPLICA_ENV["STATUS_REFRESH_SECONDS"]) + 1)
        _every_worker_answers(servers, "stopped-", "2")
        for replica, server in enumerate(servers):
            assert "ab_test" not in _predict(server.url, f"after-{replica}")

        logs = [server.log() for server in servers]
    assert all("Traceback" not in log for log in logs)
