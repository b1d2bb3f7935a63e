"""Schema migrations: applied once, in order, safely when many processes start together."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from serving import migrations
from serving.config import Settings
from serving.database import db, open_database
from serving.tables import Prediction
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
        from serving import migrations
        from serving.config import Settings
        from serving.database import db, open_database
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
