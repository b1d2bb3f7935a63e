"""The prediction log by month: rows land in their month's partition (PostgreSQL), and an id
stays unique across partitions (both databases), replayed and updated wherever its row is."""

from __future__ import annotations

import datetime as dt

import pytest

from serving.store import migrations, partitions, predictions
from serving.store.database import db, is_sqlite
from serving.store.predictions import NewPredictions, canonical_json
from serving.store.tables import Prediction, PredictionKey, utcnow
from tests.conftest import using_postgres
from tests.samples import PASSENGER


def at(moments: dict[str, dt.datetime], x: float = 1.0) -> NewPredictions:
    """One row of the default endpoint per id, stored at the given time."""
    n = len(moments)
    return NewPredictions(
        endpoint=["default"] * n,
        model_version=["1"] * n,
        observation_id=list(moments),
        observation=[canonical_json({"x": x})] * n,
        proba=[0.25] * n,
        prediction=["0"] * n,
        probabilities=[None] * n,
        value=[None] * n,
        ab_test=[None] * n,
        arm=[None] * n,
        created_at=list(moments.values()),
    )


def months_from_now(months: int) -> dt.datetime:
    """The 15th, noon, of the month `months` after (or before) this one."""
    start = partitions.month_start(utcnow())
    for _ in range(abs(months)):
        start = (
            partitions.next_month(start)
            if months > 0
            else partitions.month_start(start - dt.timedelta(days=1))
        )
    return start.replace(day=15, hour=12)


def where_each_row_is() -> dict[str, str]:
    """Observation id to the table that holds its row (PostgreSQL's tableoid)."""
    cursor = db.execute_sql("SELECT observation_id, tableoid::regclass::text FROM prediction")
    return dict(cursor.fetchall())


def test_rows_over_several_months_land_in_their_partitions_and_replay(app):
    # This month and the three after are made at start; a month long past has no partition.
    moments = {f"m{k}": months_from_now(k) for k in range(4)}
    moments["long-ago"] = dt.datetime(2019, 5, 15, 12)
    with app.app_context():
        stored = predictions.save(at(moments))
        assert all(isinstance(outcome, int) for outcome in stored)
        ids = dict(zip(moments, stored, strict=True))
        if not is_sqlite():
            made = {p.name for p in partitions.partitions(db.obj)}
            expected = {
                oid: partitions.name_of(partitions.month_start(moment))
                for oid, moment in moments.items()
            }
            assert {expected[f"m{k}"] for k in range(4)} <= made
            expected["long-ago"] = partitions.DEFAULT
            assert where_each_row_is() == expected

        # Replayed now, each id finds its row in whichever partition holds it; a changed
        # observation conflicts.
        now = {oid: utcnow() for oid in moments}
        again = predictions.save(at(now))
        assert [row.id for row in again] == [ids[oid] for oid in moments]
        assert [row.created_at for row in again] == list(moments.values())
        assert predictions.save(at(now, x=2.0)) == [None] * len(moments)
        assert Prediction.select().count() == PredictionKey.select().count() == len(moments)

        # /update finds its prediction in every partition, the default one included.
        for oid in moments:
            assert predictions.record_truth("default", oid, 1).id == ids[oid]

        if not is_sqlite():
            # Its month's partition made later, the stray row moves in and is still found.
            with db.atomic():
                partitions.create_month(db.obj, dt.datetime(2019, 5, 1))
            assert where_each_row_is()["long-ago"] == "prediction_2019_05"
            assert predictions.find("default", "long-ago").id == ids["long-ago"]
            assert predictions.save(at({"long-ago": utcnow()}))[0].id == ids["long-ago"]


def test_partitions_are_made_ahead_once(app):
    with app.app_context():
        db.connect(reuse_if_open=True)
        if is_sqlite():
            assert migrations.ensure_partitions() == []
            return
        names = [p.name for p in partitions.partitions(db.obj)]
        this_month = partitions.month_start(utcnow())
        assert names[0] == partitions.name_of(this_month)
        assert len(names) == partitions.AHEAD_MONTHS + 1
        # Made at start already: another start, or the command, makes none.
        assert migrations.ensure_partitions() == []
        assert migrations.migrate() == []
        assert [p.name for p in partitions.partitions(db.obj)] == names


def test_a_row_written_around_the_store_takes_an_id_no_prediction_reuses(app):
    """A backfill in SQL writes into `prediction` with no key: it cannot be replayed, but the
    next prediction must not be handed its id (a 500 on the primary key, before the fix on
    SQLite)."""
    with app.app_context():
        db.connect(reuse_if_open=True)
        first = predictions.save(at({"through-the-store": utcnow()}))[0]
        Prediction.insert(
            endpoint="default",
            model_version="1",
            observation_id="backfilled",
            observation=canonical_json({"x": 2.0}),
            proba=0.5,
            prediction="1",
            created_at=utcnow(),
        ).execute()
        hand = Prediction.get(Prediction.observation_id == "backfilled").id
        assert hand > first
        client = app.test_client()
        answer = client.post(
            "/predict", json={"id": "after-the-backfill", "observation": PASSENGER}
        )
        assert answer.status_code == 200, answer.get_json()
        after = Prediction.get(Prediction.observation_id == "after-the-backfill").id
        assert after > hand
        assert PredictionKey.get(PredictionKey.observation_id == "after-the-backfill").id == after


def test_an_id_whose_row_was_deleted_by_hand_is_stored_anew(app):
    """The README allows deleting rows in SQL (then `flask rollups --rebuild`); the key left
    behind must not turn every resend of that id into a 500."""
    client = app.test_client()
    body = {"id": "deleted-by-hand", "observation": PASSENGER}
    first = client.post("/predict", json=body)
    assert first.status_code == 200, first.get_json()
    with app.app_context():
        db.connect(reuse_if_open=True)
        Prediction.delete().where(Prediction.observation_id == "deleted-by-hand").execute()
        assert (
            PredictionKey.select().where(PredictionKey.observation_id == "deleted-by-hand").count()
            == 1
        )
    again = client.post("/predict", json=body)
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["proba"] == first.get_json()["proba"]
    with app.app_context():
        rows = list(Prediction.select().where(Prediction.observation_id == "deleted-by-hand"))
        [key] = list(
            PredictionKey.select().where(PredictionKey.observation_id == "deleted-by-hand")
        )
        assert [row.id for row in rows] == [key.id]
    replay = client.post("/predict", json=body)
    assert replay.get_json() == again.get_json()


def test_a_busy_log_postpones_a_partition_instead_of_queueing_every_insert(app, database_url):
    """Making a partition locks `prediction`; behind a long reader (here a transaction that
    read it and stays open) the service waits at most CREATE_LOCK_TIMEOUT, makes nothing,
    and the next attempt makes the month once the reader is done."""
    if not using_postgres():
        pytest.skip("partitions are PostgreSQL's")
    import time

    import psycopg2

    later = partitions.month_start(utcnow() + dt.timedelta(days=800))
    reader = psycopg2.connect(database_url)
    try:
        with reader.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM prediction")  # holds its lock until commit
        with app.app_context():
            db.connect(reuse_if_open=True)
            began = time.monotonic()
            with db.atomic():
                assert partitions.ensure(db.obj, later, ahead=0) == []
            assert time.monotonic() - began < 10
            assert partitions.name_of(later) not in {p.name for p in partitions.partitions(db.obj)}
        reader.rollback()
        with app.app_context(), db.atomic():
            assert partitions.ensure(db.obj, later, ahead=0) == [partitions.name_of(later)]
    finally:
        reader.close()
