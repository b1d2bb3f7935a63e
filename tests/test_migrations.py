"""Schema migrations: applied once, in order, safely when many processes start together."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from serving import migrations
from serving.config import Settings
from serving.database import db, open_database
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
        for _ in range(6)
    ]
    results = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _, err in results]
    counts = sorted(int(out.strip()) for out, _ in results)
    assert counts == [0] * 5 + [len(migrations.MIGRATIONS)]


def test_flask_migrate_command_migrates_a_fresh_database(database_url):
    from serving import create_app

    app = create_app({"database_url": database_url, "migrate_on_start": False})
    runner = app.test_cli_runner()
    first = runner.invoke(args=["migrate"])
    assert first.exit_code == 0, first.output
    assert "applied migrations [1]" in first.output
    again = runner.invoke(args=["migrate"])
    assert "up to date at version 1" in again.output
