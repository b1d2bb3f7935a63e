"""Two replicas (separate gunicorn masters) on one PostgreSQL: scale-out without containers.

Load split across both with every id sent several times, to either replica: one row per id,
no errors, every replay identical. Then one replica is killed mid-load: the other keeps
answering, and no prediction either of them acknowledged is missing from the database.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest
import requests

from serving.config import Settings
from serving.store.database import open_database
from tests.conftest import using_postgres
from tests.live import REPO_ROOT, Server, gunicorn

pytestmark = [pytest.mark.e2e, pytest.mark.postgres_only]

COLUMNS = ["Age", "Cabin", "Embarked", "Fare", "Parch", "Pclass", "Sex", "SibSp"]
IDS = 120
REPEATS = 3
# Two masters of two workers each share the database with everyone else: small pools, and as
# many threads as pooled connections (a thread holds its connection for the whole request, so
# fewer connections than threads can starve the group commit's leader until the pool times out).
REPLICA_ENV = {"THREADS": "4", "DB_POOL_SIZE": "4"}


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not using_postgres():
        pytest.skip("two replicas on one PostgreSQL is the point; runs in the PostgreSQL pass")
    return database_url


def observations() -> list[dict]:
    """Titanic passengers as JSON observations (null for a missing value)."""
    frame = pd.read_csv(REPO_ROOT / "data" / "titanic.csv")[COLUMNS].head(IDS)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [
        {k: float(v) if k in ("Age", "Fare") and v is not None else v for k, v in r.items()}
        for r in records
    ]


def jobs() -> list[tuple[str, dict]]:
    """Every id REPEATS times, interleaved so each id's copies arrive close together."""
    rows = observations()
    return [(f"rep-{i}", rows[i]) for _ in range(REPEATS) for i in range(IDS)]


def replicas(stack: ExitStack, database_url: str, log_dir: Path) -> list[Server]:
    """Start two independent gunicorn masters on the same database."""
    return [
        stack.enter_context(gunicorn(database_url, log_dir, workers=2, env=REPLICA_ENV))
        for _ in range(2)
    ]


def stored(database_url: str) -> dict[str, list[tuple]]:
    """Every stored row by observation id: (row id, proba, created_at)."""
    database = open_database(Settings(database_url=database_url))
    with database:
        rows = database.execute_sql(
            "SELECT observation_id, id, proba, created_at FROM prediction"
        ).fetchall()
    found: dict[str, list[tuple]] = {}
    for observation_id, *rest in rows:
        found.setdefault(observation_id, []).append(tuple(rest))
    return found


def post(session: requests.Session, url: str, observation_id: str, observation: dict) -> dict:
    """One prediction; the answer's JSON with its status."""
    body = json.dumps({"id": observation_id, "observation": observation})
    response = session.post(f"{url}/predict", data=body, timeout=60)
    return response.json() | {"_status": response.status_code}


def test_two_replicas_store_each_repeated_id_once_and_replay_it(postgres_url, tmp_path):
    work = jobs()
    with ExitStack() as stack:
        servers = replicas(stack, postgres_url, tmp_path)
        local = threading.local()

        def send(index: int) -> tuple[str, int, dict]:
            observation_id, observation = work[index]
            local.session = getattr(local, "session", None) or requests.Session()
            # Alternate replicas per request: an id's copies land on both of them.
            replica = index % 2
            answer = post(local.session, servers[replica].url, observation_id, observation)
            return observation_id, replica, answer

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(send, range(len(work))))
        logs = [server.log() for server in servers]

    assert [a["_status"] for _, _, a in results] == [200] * len(work)
    assert {replica for _, replica, _ in results} == {0, 1}
    rows = stored(postgres_url)
    assert len(rows) == IDS
    assert {oid: len(found) for oid, found in rows.items() if len(found) != 1} == {}
    # Identical replays: whichever replica answered, every copy of an id is the stored row.
    answers: dict[str, set[str]] = {}
    for observation_id, _, answer in results:
        answers.setdefault(observation_id, set()).add(json.dumps(answer, sort_keys=True))
    assert {oid: len(seen) for oid, seen in answers.items() if len(seen) != 1} == {}
    for observation_id, seen in answers.items():
        answer = json.loads(seen.pop())
        [(row_id, proba, _created_at)] = rows[observation_id]
        assert (answer["id"], answer["proba"]) == (row_id, proba)
    assert all("Traceback" not in log for log in logs)


def test_a_replica_killed_mid_load_loses_no_acknowledged_prediction(postgres_url, tmp_path):
    work = jobs()
    killed = threading.Event()
    halfway = threading.Event()
    done = 0
    count_lock = threading.Lock()
    with ExitStack() as stack:
        victim, survivor = replicas(stack, postgres_url, tmp_path)
        local = threading.local()

        def send(index: int) -> list[tuple[str, str, dict | None]]:
            """Try the replica this request was meant for; on a dropped connection, the other
            one with the same id, as a client behind a load balancer would."""
            nonlocal done
            observation_id, observation = work[index]
            local.session = getattr(local, "session", None) or requests.Session()
            order = [victim, survivor] if index % 2 == 0 else [survivor, victim]
            attempts: list[tuple[str, str, dict | None]] = []
            for server in order:
                after_kill = "after" if killed.is_set() else "before"
                try:
                    answer = post(local.session, server.url, observation_id, observation)
                except requests.RequestException:
                    attempts.append((server.url, after_kill, None))
                    local.session = requests.Session()
                    continue
                attempts.append((server.url, after_kill, answer))
                break
            with count_lock:
                done += 1
                if done == len(work) // 2:
                    halfway.set()
            return attempts

        with ThreadPoolExecutor(max_workers=16) as pool:
            pending = pool.map(send, range(len(work)))
            assert halfway.wait(timeout=120)
            # SIGKILL the whole replica, master and workers: a crashed container, no drain.
            os.killpg(victim.process.pid, signal.SIGKILL)
            victim.process.wait(timeout=30)
            killed.set()
            results = [attempt for attempts in pending for attempt in attempts]
        survivor_log = survivor.log()

    answered = [(url, when, a) for url, when, a in results if a is not None]
    dropped = [(url, when) for url, when, a in results if a is None]
    # Every request was answered 200 in the end, by one replica or the other.
    assert all(a["_status"] == 200 for _, _, a in answered), answered
    assert len({a["observation_id"] for _, _, a in answered}) == IDS
    # The kill landed mid-load: the victim dropped requests; the survivor never failed, and
    # kept answering once the other was gone.
    assert any(url == victim.url for url, _ in dropped)
    assert all(url != survivor.url for url, _ in dropped)
    assert any(url == survivor.url and when == "after" for url, when, _ in answered)
    # No acknowledged prediction lost: each 200 is the one stored row of its id.
    rows = stored(postgres_url)
    assert {oid: len(found) for oid, found in rows.items() if len(found) != 1} == {}
    lost = [
        a["observation_id"]
        for _, _, a in answered
        if (a["id"], a["proba"]) != rows.get(a["observation_id"], [(None, None, None)])[0][:2]
    ]
    assert lost == []
    assert "Traceback" not in survivor_log
