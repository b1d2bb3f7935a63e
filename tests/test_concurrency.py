"""Concurrent duplicates against a real gunicorn: one row, one answer, no errors."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import peewee
import pytest
import requests

from serving.config import Settings
from serving.store.database import open_database
from tests.live import gunicorn

pytestmark = pytest.mark.e2e

PASSENGER = {
    "Age": 30.0,
    "Cabin": "C85",
    "Embarked": "C",
    "Fare": 71.28,
    "Parch": 0,
    "Pclass": 1,
    "Sex": "female",
    "SibSp": 1,
}


def fire(url: str, bodies: list[dict]) -> list[requests.Response]:
    """Send every body at once (threads released together by a barrier)."""
    barrier = threading.Barrier(len(bodies))
    session_local = threading.local()

    def send(body: dict) -> requests.Response:
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        barrier.wait(timeout=30)
        return session.post(url, data=json.dumps(body), timeout=60)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(send, bodies))


def stored_rows(database_url: str) -> list[tuple]:
    database = open_database(Settings(database_url=database_url))
    with database:
        return database.execute_sql(
            "SELECT observation_id, proba, true_class FROM prediction"
        ).fetchall()


def test_150_concurrent_requests_with_one_new_id_store_one_row(database_url, tmp_path):
    with gunicorn(database_url, tmp_path, workers=2) as server:
        responses = fire(f"{server.url}/predict", [{"id": "same", "observation": PASSENGER}] * 150)
    assert [r.status_code for r in responses] == [200] * 150
    probas = {r.json()["proba"] for r in responses}
    assert len(probas) == 1
    rows = stored_rows(database_url)
    assert len(rows) == 1
    assert rows[0][1] == probas.pop()


def test_50_concurrent_updates_of_one_id_store_the_last(database_url, tmp_path):
    with gunicorn(database_url, tmp_path, workers=2) as server:
        first = requests.post(
            f"{server.url}/predict",
            data=json.dumps({"id": 1, "observation": PASSENGER}),
            timeout=30,
        )
        assert first.status_code == 200
        responses = fire(
            f"{server.url}/update", [{"id": 1, "true_class": i % 2} for i in range(50)]
        )
        assert [r.status_code for r in responses] == [200] * 50
        # The last write wins: whatever the final row holds was one of the updates, and a
        # sequential update afterwards is what stays.
        final = requests.post(
            f"{server.url}/update", data=json.dumps({"id": 1, "true_class": 1}), timeout=30
        )
        assert final.json()["true_class"] == 1
    [(observation_id, _proba, true_class)] = stored_rows(database_url)
    assert observation_id == "1" and json.loads(true_class) == 1


def test_unique_index_is_what_guards_duplicates(database_url, app):
    # Belt and braces: even a writer that skips our code cannot store an id's key twice (the
    # key table holds the one unique index; the partitioned prediction table cannot).
    from serving.store.tables import PredictionKey

    key = dict(id=1, endpoint="default", observation_id="x", created_at="2026-11-30 10:00:00")
    PredictionKey.insert(**key).execute()
    with pytest.raises(peewee.IntegrityError):
        PredictionKey.insert(**{**key, "id": 2}).execute()


def test_an_answered_prediction_is_already_committed(database_url, tmp_path):
    # Read from a connection of our own the moment each 200 arrives: the row must be there.
    database = open_database(Settings(database_url=database_url))

    def predict_then_look(i: int) -> tuple[int, bool]:
        body = {"id": f"ack-{i}", "observation": PASSENGER}
        response = requests.post(f"{url}/predict", data=json.dumps(body), timeout=30)
        with database.connection_context():
            found = database.execute_sql(
                f"SELECT COUNT(*) FROM prediction WHERE observation_id = {database.param}",
                (f"ack-{i}",),
            ).fetchone()[0]
        return response.status_code, found == 1

    with gunicorn(database_url, tmp_path, workers=2) as server:
        url = server.url
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(predict_then_look, range(200)))
    database.close_all()
    assert results == [(200, True)] * 200
