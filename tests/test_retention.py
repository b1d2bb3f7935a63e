"""Retention: `flask prune-predictions` exports old predictions to Parquet and drops exactly
the rows the files hold; newer rows stay, a second run does nothing, a failure drops nothing."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from serving.reports import rollups
from serving.store import migrations, partitions, predictions, retention
from serving.store.database import close_all, db, is_sqlite
from serving.store.dialect import rows as sql_rows
from serving.store.tables import Prediction, PredictionKey, utcnow
from tests.conftest import REPO_ROOT, make_app
from tests.environment import clean_environ
from tests.test_partitions import at

DAYS = 30


@pytest.fixture
def app(database_url: str, tmp_path: Path):
    """The service with PREDICTION_RETENTION_DAYS set."""
    application = make_app(
        database_url, tmp_path / "no-more-models", prediction_retention_days=DAYS
    )
    yield application
    close_all()


def every_row() -> dict[int, tuple]:
    """Each stored row by id, every column."""
    columns = ", ".join(f'"{c}"' for c in partitions.COLUMNS)
    rows = db.execute_sql(f"SELECT {columns} FROM prediction").fetchall()
    return {row[0]: tuple(_plain(v) for v in row) for row in rows}


def _plain(value):
    # SQLite hands timestamps back as text; the Parquet file holds them as timestamps.
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == " ":
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def in_files(folder: Path) -> dict[int, tuple]:
    """Each exported row by id, read back with pyarrow."""
    found: dict[int, tuple] = {}
    for path in sorted(folder.glob("*.parquet")):
        table = pq.read_table(path)
        assert tuple(table.column_names) == partitions.COLUMNS
        for row in table.to_pylist():
            assert row["id"] not in found
            found[row["id"]] = tuple(row[c] for c in partitions.COLUMNS)
    return found


def store_old_and_new(app) -> tuple[dict[str, dt.datetime], dict[str, dt.datetime]]:
    """Rows in two long-past months (their partitions made, as when those months were the
    current one), one from a month with no partition, and recent rows."""
    now = utcnow()
    old = {
        "old-a1": now - dt.timedelta(days=150),
        "old-a2": now - dt.timedelta(days=150, hours=1),
        "old-b1": now - dt.timedelta(days=100),
        "stray": dt.datetime(2019, 5, 15, 12),
    }
    new = {"new-1": now - dt.timedelta(days=DAYS - 1), "new-2": now}
    with app.app_context():
        if not is_sqlite():
            with db.atomic():
                for oid in ("old-a1", "old-b1"):
                    partitions.create_month(db.obj, partitions.month_start(old[oid]))
        assert all(isinstance(o, int) for o in predictions.save(at({**old, **new})))
    return old, new


def prune(app, folder: Path):
    return app.test_cli_runner().invoke(args=["prune-predictions", "--to", str(folder)])


def test_export_then_drop_round_trip(app, tmp_path):
    old, new = store_old_and_new(app)
    folder = tmp_path / "exports"
    with app.app_context():
        before = every_row()
        old_months = {p.name for p in partitions.partitions(db.obj)} if not is_sqlite() else set()

    result = prune(app, folder)
    assert result.exit_code == 0, result.output

    with app.app_context():
        after = every_row()
        dropped = {i: row for i, row in before.items() if i not in after}
        # Rows in Parquet = rows dropped: the same ids, every column alike.
        assert in_files(folder) == dropped
        assert {row[3] for row in dropped.values()} == set(old)
        # Rows newer than the cutoff untouched, keys included.
        assert after == {i: row for i, row in before.items() if row[3] in new}
        assert {k.observation_id for k in PredictionKey.select()} == set(new)
        if not is_sqlite():
            months = {partitions.month_start(old[o]) for o in ("old-a1", "old-b1")}
            gone = {partitions.name_of(month) for month in months}
            left = {p.name for p in partitions.partitions(db.obj)}
            assert left == old_months - gone
            assert f"{gone.pop()}.parquet" in {p.name for p in folder.iterdir()}
        # The window: a dropped id is free again; a kept one still replays.
        replay = predictions.save(at({"old-b1": utcnow(), "new-1": utcnow()}))
        assert isinstance(replay[0], int) and replay[0] not in before
        assert replay[1].id in after

    files = sorted(folder.iterdir())
    if is_sqlite():
        # A day at a time: writers never wait for more than one day's export.
        assert len(files) == len({moment.date() for moment in old.values()})
    again = prune(app, folder)
    assert again.exit_code == 0, again.output
    assert "no prediction older than" in again.output
    assert sorted(folder.iterdir()) == files
    with app.app_context():
        assert len(every_row()) == len(after) + 1


def test_a_prune_folds_first_and_cuts_on_a_whole_hour(app, tmp_path):
    # The cutoff goes down to its hour: the boundary hour stays whole (a row in it older
    # than the retention included), so its rollup still counts every row it holds; and the
    # hours pruned were rolled up first, though nothing folded before the command ran.
    due = utcnow() - dt.timedelta(days=DAYS)
    boundary = due.replace(minute=0, second=0, microsecond=0)
    if due - boundary < dt.timedelta(seconds=5):
        time.sleep(5)  # a row a second into the hour must be older than the retention
    moments = {
        "before-the-hour": boundary - dt.timedelta(minutes=1),
        "in-the-hour": boundary + dt.timedelta(seconds=1),
    }
    with app.app_context():
        predictions.save(at(moments))
    result = prune(app, tmp_path / "exports")
    assert result.exit_code == 0, result.output
    assert "rolled up" in result.output
    with app.app_context():
        assert {row[3] for row in every_row().values()} == {"in-the-hour"}
        assert {row[3] for row in in_files(tmp_path / "exports").values()} == {"before-the-hour"}
        counts = dict(
            db.execute_sql(
                "SELECT hour, SUM(predictions) FROM rollup_count GROUP BY hour"
            ).fetchall()
        )
    assert counts == {rollups.hour_of(boundary) - 1: 1, rollups.hour_of(boundary): 1}


def test_a_label_that_arrives_after_the_fold_still_counts_once_its_row_is_pruned(app, tmp_path):
    # The command folds, then prunes; a ground truth sent in between lands on a row about to
    # go. The next fold could never find it (its row is gone), so the prune rolls that hour
    # up again, with the label, before it drops the row: the rollups keep counting it.
    old = utcnow() - dt.timedelta(days=DAYS + 3)
    with app.app_context():
        predictions.save(at({"late-label": old, "kept": utcnow()}))
        assert rollups.fold().sealed_hour is not None
    answer = app.test_client().post("/update", data='{"id": "late-label", "true_class": 1}')
    assert answer.status_code == 200, answer.get_json()
    folder = tmp_path / "exports"
    with app.app_context():
        before = retention.cutoff(utcnow(), DAYS)
        pruned = retention.prune(folder, before, lambda line: None, rollups.settle_before_drop)
        assert sum(p.rows for p in pruned) == 1
        assert [row[7] for row in in_files(folder).values()] == ["1"]  # its true_class
        rollups.fold()
        [counts] = sql_rows(
            "SELECT SUM(predictions), SUM(labelled) FROM rollup_count WHERE hour = ?",
            (rollups.hour_of(old),),
        )
    assert tuple(int(n) for n in counts) == (1, 1)


def test_a_database_that_fails_the_command_gives_a_sentence(app, database_url, tmp_path):
    # A fold past its statement limit (here: behind a lock another session holds) ends the
    # command with exit 1 and a sentence, never a traceback or the HTTP API's wording.
    if is_sqlite():
        pytest.skip("needs a lock another connection holds while a statement limit runs")
    import psycopg2

    store_old_and_new(app)
    close_all()
    application = make_app(
        database_url,
        tmp_path / "no-more-models",
        prediction_retention_days=DAYS,
        db_long_statement_timeout_ms=300,
    )
    other = psycopg2.connect(database_url)
    try:
        with other.cursor() as cursor:
            cursor.execute("LOCK TABLE rollup_state IN ACCESS EXCLUSIVE MODE")
            runner = application.test_cli_runner()
            pruned = runner.invoke(args=["prune-predictions", "--to", str(tmp_path / "out")])
            folded = runner.invoke(args=["rollups"])
    finally:
        other.rollback()
        other.close()
        close_all()
    assert pruned.exit_code == 1, pruned.output
    assert "nothing more was dropped: the database did not serve the command" in pruned.output
    assert "statement timeout" in pruned.output
    # Ended by its own sentence (click's exit), not by an exception it let through.
    assert isinstance(pruned.exception, SystemExit), pruned.exception
    assert isinstance(folded.exception, SystemExit), folded.exception
    assert folded.exit_code == 1, folded.output
    assert "the rollups were not brought up to date" in folded.output
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_failed_export_drops_nothing(app, tmp_path):
    store_old_and_new(app)
    with app.app_context():
        before = every_row()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    result = prune(app, blocker / "exports")
    assert result.exit_code == 1
    assert "nothing more was dropped" in result.output
    with app.app_context():
        assert every_row() == before
        assert PredictionKey.select().count() == len(before)


def test_a_row_that_cannot_be_exported_keeps_every_row(app, tmp_path):
    # SQLite keeps what a writer gave it: text in a REAL column fails the export halfway
    # (pyarrow cannot make it a double), and nothing is dropped, no file left, not even the
    # partial one.
    store_old_and_new(app)
    with app.app_context():
        if not is_sqlite():
            pytest.skip("PostgreSQL refuses text for a number when it is written")
        db.execute_sql(
            "UPDATE prediction SET proba = 'not a probability' WHERE observation_id = 'stray'"
        )
        before = every_row()
    folder = tmp_path / "exports"
    result = prune(app, folder)
    assert result.exit_code == 1
    assert "nothing more was dropped" in result.output
    assert list(folder.iterdir()) == []
    with app.app_context():
        assert every_row() == before
        assert Prediction.select().count() == PredictionKey.select().count()


def test_a_drop_that_fails_after_the_export_leaves_no_file(app, tmp_path):
    # The file is written before the rows go; when the drop then fails, the rows stay, and
    # so must no file of them (the next run would export them again).
    store_old_and_new(app)
    with app.app_context():
        if not is_sqlite():
            pytest.skip("old months go by DROP TABLE on PostgreSQL; the trigger is SQLite's")
        db.execute_sql(
            "CREATE TRIGGER hold_rows BEFORE DELETE ON prediction "
            "BEGIN SELECT RAISE(ABORT, 'rows held'); END"
        )
        before = every_row()
    folder = tmp_path / "exports"
    result = prune(app, folder)
    assert result.exit_code == 1
    assert list(folder.iterdir()) == []
    with app.app_context():
        assert every_row() == before
        assert Prediction.select().count() == PredictionKey.select().count()


def test_before_the_rollups_migration_the_command_asks_for_flask_migrate(database_url, tmp_path):
    # The prune folds the rollups first, so it needs their tables (migration 8), not only
    # the partitioned log (7): with migrations off, a schema at 7 is refused by a sentence.
    application = make_app(
        database_url,
        tmp_path / "none",
        prediction_retention_days=DAYS,
        migrate_on_start=False,
    )
    try:
        with application.app_context():
            migrations.migrate(target=7)
        result = application.test_cli_runner().invoke(
            args=["prune-predictions", "--to", str(tmp_path / "out")]
        )
    finally:
        close_all()
    assert result.exit_code == 1, result.output
    assert "The schema is at version 7; run flask migrate first." in result.output
    assert not (tmp_path / "out").exists()


def test_an_empty_log_prunes_nothing(app, tmp_path):
    result = prune(app, tmp_path / "exports")
    assert result.exit_code == 0, result.output
    assert "nothing to roll up" in result.output
    assert list((tmp_path / "exports").iterdir()) == []


def test_without_a_retention_the_command_refuses(database_url, tmp_path):
    application = make_app(database_url, tmp_path / "none")
    try:
        result = application.test_cli_runner().invoke(
            args=["prune-predictions", "--to", str(tmp_path / "out")]
        )
    finally:
        close_all()
    assert result.exit_code == 1
    assert "PREDICTION_RETENTION_DAYS is not set" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_runs_at_once_export_each_row_once(app, database_url, tmp_path):
    old, _new = store_old_and_new(app)
    with app.app_context():
        before = every_row()
    close_all()
    folder = tmp_path / "exports"
    environ = clean_environ(
        {
            "DATABASE_URL": database_url,
            "PREDICTION_RETENTION_DAYS": str(DAYS),
            "MODELS_DIR": str(tmp_path / "none"),
        }
    )
    flask = str(REPO_ROOT / ".venv/bin/flask")
    runs = [
        subprocess.Popen(
            [flask, "--app", "app", "prune-predictions", "--to", str(folder)],
            cwd=REPO_ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    with app.app_context():
        after = every_row()
    dropped = {i: row for i, row in before.items() if i not in after}
    # Each dropped row is in exactly one file (in_files refuses an id seen twice).
    assert in_files(folder) == dropped
    assert {row[3] for row in dropped.values()} == set(old)
