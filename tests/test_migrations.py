"""Schema migrations: applied once, in order, safely when many processes start together."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from serving.config import Settings
from serving.store import migrations
from serving.store.database import db, open_database
from serving.store.tables import Prediction
from tests.live import REPO_ROOT


def test_migrate_creates_schema_and_is_idempotent(database_url):
    db.initialize(open_database(Settings(database_url=database_url)))
    try:
        assert migrations.current_version() == 0
        assert migrations.migrate() == [v for v, _, _ in migrations.MIGRATIONS]
        assert migrations.migrate() == []
        assert migrations.current_version() == migrations.MIGRATIONS[-1][0]
        assert db.table_exists("prediction")
    finally:
        db.close()


@pytest.mark.slow
def test_concurrent_migrations_apply_once(database_url):
    script = textwrap.dedent(
        """
        import sys
        from serving.store import migrations
        from serving.config import Settings
        from serving.store.database import db, open_database
        db.initialize(open_database(Settings(database_url=sys.argv[1])))
        print(len(migrations.migrate()))
        """
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, database_url],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Three racers are enough to show one applies and the others wait; each costs
        # seconds of CPU importing the service.
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _, err in results]
    counts = sorted(int(out.strip()) for out, _ in results)
    assert counts == [0] * 2 + [len(migrations.MIGRATIONS)]


def test_flask_migrate_command_migrates_a_fresh_database(database_url):
    from serving import create_app

    app = create_app({"database_url": database_url, "migrate_on_start": False})
    runner = app.test_cli_runner()
    first = runner.invoke(args=["migrate"])
    assert first.exit_code == 0, first.output
    every = [v for v, _, _ in migrations.MIGRATIONS]
    assert f"applied migrations {every}" in first.output
    again = runner.invoke(args=["migrate"])
    assert f"up to date at version {every[-1]}" in again.output


def test_a_database_written_by_the_first_schema_upgrades_in_place(database_url, tmp_path):
    from serving import create_app
    from tests.live import REPO_ROOT

    # The database as the foundation release left it: schema version 1 and a stored row.
    db.initialize(open_database(Settings(database_url=database_url)))
    assert migrations.migrate(target=1) == [1]
    db.execute_sql(
        "INSERT INTO prediction (endpoint, model_version, observation_id, observation, proba,"
        " prediction, true_class, created_at) VALUES"
        f" ({', '.join([db.param] * 8)})",
        ("default", "1", "old-1", '{"Age":22.0}', 0.25, "0", None, "2026-11-01 10:00:00"),
    )
    db.close()

    app = create_app(
        {"database_url": database_url, "root_model_dir": REPO_ROOT, "models_dir": tmp_path / "none"}
    )
    assert migrations.current_version() == migrations.MIGRATIONS[-1][0]
    columns = {c.name for c in db.get_columns("prediction")}
    assert {"probabilities", "value", "ab_test", "arm"} <= columns
    assert all(db.table_exists(t) for t in ("version_status", "ab_test", "shadow_score", "api_key"))
    client = app.test_client()
    updated = client.post("/update", data='{"id": "old-1", "true_class": 1}').get_json()
    assert (updated["proba"], updated["true_class"]) == (0.25, 1)
    assert json.loads(Prediction.get(Prediction.observation_id == "old-1").observation) == {
        "Age": 22.0
    }
    statuses = client.get("/api/v1/endpoints").get_json()["endpoints"][0]["versions"]
    assert statuses == [{"version": "1", "status": "production", "task": "binary_classification"}]


def test_the_partitioning_migration_keeps_every_row_and_its_id(database_url, tmp_path):
    from serving import create_app
    from serving.store import partitions, predictions
    from serving.store.tables import PredictionKey
    from tests.test_partitions import at

    # Schema 6 with rows over three months (one row updated, one from an A/B test), a
    # shadow score pointing at one of them, and ids with a gap (a deleted row).
    db.initialize(open_database(Settings(database_url=database_url)))
    assert migrations.migrate(target=6) == [1, 2, 3, 4, 5, 6]
    columns = partitions.COLUMNS
    rows = [
        (1, "default", "1", "a", '{"Age":22.0}', 0.25, "0", "1", "2026-09-03 10:00:00",
         "2026-09-04 08:00:00", '{"0":0.75,"1":0.25}', None, None, None),
        (2, "default", "1", "b", '{"Age":30.0}', 0.5, "1", None, "2026-10-20 11:30:00.250000",
         None, None, None, 4, "B"),
        (5, "default", "2", "c", '{"Age":41.0}', 0.75, "1", None, "2026-11-02 09:15:00",
         None, None, None, None, None),
        (6, "income", "1", "a", '{"x":1}', None, "12.5", None, "2026-11-02 09:16:00",
         None, None, 12.5, None, None),
    ]  # fmt: skip
    marks = ", ".join([db.param] * len(columns))
    for row in rows:
        names = ", ".join(f'"{c}"' for c in columns)
        db.execute_sql(f"INSERT INTO prediction ({names}) VALUES ({marks})", row)
    db.execute_sql(
        "INSERT INTO shadow_score (prediction_id, endpoint, model_version, proba, created_at) "
        f"VALUES (5, 'default', '2', 0.5, {db.param})",
        ("2026-11-02 09:15:01",),
    )
    if db.param == "%s":  # PostgreSQL: the sequence has handed out 7 (a row rolled back)
        db.execute_sql("SELECT setval(pg_get_serial_sequence('prediction', 'id'), 7)")

    def stored() -> list[tuple]:
        names = ", ".join(f'"{c}"' for c in columns)
        found = db.execute_sql(f"SELECT {names} FROM prediction ORDER BY id").fetchall()
        # SQLite gives back the text it holds; PostgreSQL a datetime, printed alike.
        return [tuple(v.isoformat(sep=" ") if hasattr(v, "isoformat") else v for v in r)
                for r in found]  # fmt: skip

    before = stored()
    assert migrations.migrate(target=7) == [7]
    assert stored() == before
    assert {(k.endpoint, k.observation_id, k.id) for k in PredictionKey.select()} == {
        (r[1], r[3], r[0]) for r in rows
    }
    if db.param == "%s":
        where = dict(
            db.execute_sql("SELECT id, tableoid::regclass::text FROM prediction").fetchall()
        )
        assert where == {1: "prediction_2026_09", 2: "prediction_2026_10", 5: "prediction_2026_11",
                         6: "prediction_2026_11"}  # fmt: skip
    db.close()

    app = create_app(
        {"database_url": database_url, "root_model_dir": REPO_ROOT, "models_dir": tmp_path / "none"}
    )
    client = app.test_client()
    # /update finds an old row; an old id replays its stored row; the shadow still joins.
    updated = client.post("/update", data='{"id": "b", "true_class": 1}').get_json()
    assert (updated["id"], updated["proba"], updated["ab_test"]) == (2, 0.5, 4)
    with app.app_context():
        later = {"c": dt.datetime(2026, 11, 30)}
        [replayed] = predictions.save(replace(at(later), observation=['{"Age":41.0}']))
        assert (replayed.id, replayed.model_version, replayed.proba) == (5, "2", 0.75)
        assert predictions.save(at(later)) == [None]  # another observation: a conflict
        joined = db.execute_sql(
            "SELECT p.observation_id FROM shadow_score s "
            "JOIN prediction p ON p.id = s.prediction_id"
        ).fetchall()
        assert joined == [("c",)]
        # New ids come after every id handed out before.
        [fresh] = predictions.save(at({"new": dt.datetime(2026, 11, 30)}))
        assert fresh > (7 if db.param == "%s" else 6)
    db.close()
