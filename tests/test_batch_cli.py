"""`flask score INPUT OUTPUT`: streams a CSV, logs every row once, resumes after SIGKILL."""

from __future__ import annotations

import csv
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.batch.files import Checkpoint
from serving.store.tables import Prediction
from tests.conftest import REPO_ROOT, make_app, using_postgres
from tests.environment import clean_environ
from tests.pools import only_connection_held

TITANIC = REPO_ROOT / "data" / "titanic.csv"


def passengers(path: Path, rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` Titanic passengers drawn with replacement, each with an id of its own."""
    frame = pd.read_csv(TITANIC)
    picks = np.random.default_rng(seed).integers(0, len(frame), size=rows)
    sample = frame.iloc[picks].drop(columns=["PassengerId"]).reset_index(drop=True)
    sample.insert(0, "id", [f"p{i}" for i in range(rows)])
    sample.to_csv(path, index=False)
    return sample


def read_output(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def expected_proba(app, frame: pd.DataFrame) -> np.ndarray:
    model = app.extensions["registry"].find("default", "1")
    return model.pipeline.predict_proba(frame[model.columns].astype(model.dtypes))[:, 1]


def test_a_file_is_scored_into_the_output_and_every_row_logged(app, runner, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    frame = passengers(source, 2500)
    result = runner.invoke(args=["score", str(source), str(output), "--chunk-rows", "700"])
    assert result.exit_code == 0, result.output
    assert "2,500 answered (2,500 stored, 0 replayed)" in result.output
    assert "rows/s" in result.stderr  # the progress line
    lines = read_output(output)
    assert [line["id"] for line in lines] == list(frame["id"])
    assert {line["status"] for line in lines} == {"200"}
    np.testing.assert_allclose(
        [float(line["proba"]) for line in lines], expected_proba(app, frame), rtol=0, atol=1e-12
    )
    with app.app_context():
        assert Prediction.select().count() == 2500
        stored = Prediction.get(Prediction.observation_id == "p7")
        assert stored.proba == float(lines[7]["proba"])
    assert not Checkpoint.path_for(output).exists()


def test_invalid_rows_are_answered_in_the_output_and_not_stored(app, runner, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text(
        "id,Age,Cabin,Embarked,Fare,Parch,Pclass,Sex,SibSp,Note\n"
        "a,22,,S,7.25,0,3,male,1,x\n"
        "b,abc,,S,7.25,0,3,male,1,x\n"
        ",22,,S,7.25,0,3,male,1,x\n"
        "a,30,,S,7.25,0,3,male,1,x\n"
        "c,22,,S,7.25,,3,male,1,x\n"
    )
    result = runner.invoke(args=["score", str(source), str(output), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = read_output(output)
    assert [(line["id"], line["status"]) for line in lines] == [
        ("a", "200"),
        ("b", "422"),
        ("", "422"),
        ("a", "409"),
        ("c", "422"),
    ]
    assert lines[1]["details"] == "observation.Age: expected a number, got 'abc'"
    assert lines[4]["details"] == "observation.Parch: expected an integer, got null"
    assert "1 answered (1 stored, 0 replayed), 3 invalid, 1 conflicts" in result.output
    with app.app_context():
        assert [p.observation_id for p in Prediction.select()] == ["a"]


def test_no_log_scores_without_storing(app, runner, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    frame = passengers(source, 300)
    result = runner.invoke(args=["score", str(source), str(output), "--no-log", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = read_output(output)
    np.testing.assert_allclose(
        [float(line["proba"]) for line in lines], expected_proba(app, frame), rtol=0, atol=1e-12
    )
    with app.app_context():
        assert Prediction.select().count() == 0


def test_an_existing_output_is_kept_unless_restarted(app, runner, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    passengers(source, 50)
    assert runner.invoke(args=["score", str(source), str(output), "--quiet"]).exit_code == 0
    before = output.read_text()
    refused = runner.invoke(args=["score", str(source), str(output), "--quiet"])
    assert refused.exit_code != 0 and "--restart" in refused.output
    assert output.read_text() == before
    again = runner.invoke(args=["score", str(source), str(output), "--quiet", "--restart"])
    assert again.exit_code == 0 and "0 stored, 50 replayed" in again.output
    assert output.read_text() == before


def test_a_resume_is_refused_when_its_checkpoint_or_output_does_not_fit(app, runner, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    passengers(source, 30)
    checkpoint = Checkpoint.path_for(output)

    def score(*extra: str):
        return runner.invoke(args=["score", str(source), str(output), "--quiet", *extra])

    output.write_text("id,status\n")
    checkpoint.write_text("{not json")
    damaged = score()
    assert damaged.exit_code != 0 and "is damaged" in damaged.output
    # Nothing was scored or stored on a refused resume.
    with app.app_context():
        assert Prediction.select().count() == 0
    assert score("--restart").exit_code == 0
    assert not checkpoint.exists()


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("Age,Cabin,Embarked,Fare,Parch,Pclass,Sex,SibSp", "--id-column"),
        ("id,Age,Cabin", "'Embarked'"),
    ],
)
def test_a_file_the_model_cannot_read_writes_nothing(runner, tmp_path, header, words):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text(header + "\n" + ",".join("1" for _ in header.split(",")) + "\n")
    result = runner.invoke(args=["score", str(source), str(output), "--quiet"])
    assert result.exit_code != 0 and words in result.output
    assert not output.exists() and not Checkpoint.path_for(output).exists()


def test_another_id_column_and_an_unknown_endpoint(app, runner, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    frame = pd.read_csv(TITANIC).head(20)
    frame.to_csv(source, index=False)
    args = ["score", str(source), str(output), "--quiet", "--id-column", "PassengerId"]
    assert runner.invoke(args=args).exit_code == 0
    assert read_output(output)[0]["PassengerId"] == "1"
    other = runner.invoke(args=[*args[:3], "--endpoint", "nope", "--restart"])
    assert other.exit_code != 0 and "no endpoint named 'nope'" in other.output


def _score(
    database_url: str, source: Path, output: Path, *extra: str, **settings: str
) -> subprocess.Popen:
    env = {
        **clean_environ(),
        "DATABASE_URL": database_url,
        "ROOT_MODEL_DIR": str(REPO_ROOT),
        "MODELS_DIR": str(output.parent / "no-models"),
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    argv = [sys.executable, "-m", "flask", "--app", "app", "score", str(source), str(output)]
    return subprocess.Popen(
        [*argv, *extra],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _rows_done(output: Path) -> int:
    try:
        return json.loads(Checkpoint.path_for(output).read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return 0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("migrate", "engine"),
    [("1", "local"), ("0", "local"), ("1", "dask")],
)
def test_a_database_that_is_down_is_a_failure_to_run_again(tmp_path, migrate, engine):
    """Not a traceback (its migrations, MIGRATE_ON_START=1, on either engine's command) nor a
    request's 'retry with the same id' (where a chunk is stored, =0): a sentence saying the
    database could not be reached and that running again resumes. (The Dask engine's
    workers: tests/test_batch_dask.py.)"""
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    passengers(source, 20)
    down = f"postgresql://postgres@127.0.0.1:{_closed_port()}/serving_down"
    # The command stops before it asks for a scheduler: none is needed.
    cluster = ["--engine", "dask", "--scheduler", "tcp://127.0.0.1:1"] if engine == "dask" else []
    process = _score(down, source, output, "--quiet", *cluster, MIGRATE_ON_START=migrate)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    assert "Traceback" not in err
    error = err.strip().splitlines()[-1]
    assert error.startswith("Error: the database could not be reached (connection to server at")
    assert error.endswith("; run the same command again to resume where it stopped")
    assert not output.exists()


def _score_in_process(app, source: Path, output: Path, engine: str):
    # The command stops before it asks for a scheduler: none is needed.
    cluster = ["--engine", "dask", "--scheduler", "tcp://127.0.0.1:1"] if engine == "dask" else []
    return app.test_cli_runner().invoke(
        args=["score", str(source), str(output), "--quiet", *cluster]
    )


def _unloaded_app(database_url: str, tmp_path: Path, **settings: object):
    """An app on a migrated database whose models load when the command asks, as under the
    `flask` command line."""
    from serving import create_app
    from serving.store.database import close_all

    make_app(database_url, tmp_path / "none")  # migrates
    close_all()
    config = {
        "database_url": database_url,
        "root_model_dir": REPO_ROOT,
        "models_dir": tmp_path / "none",
        "compile_models": False,
        **settings,
    }
    return create_app(config, load=False)


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_a_database_with_no_connection_free_is_a_failure_to_run_again(
    database_url, tmp_path, engine
):
    """Every pooled connection busy while the command migrates: a sentence saying so and that
    running again resumes (was the pool's own exception, uncaught), never an HTTP client's
    'retry the request with the same id'."""
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    passengers(source, 20)
    app = _unloaded_app(database_url, tmp_path, db_pool_size=1, db_pool_wait_seconds=0.3)
    with only_connection_held():
        result = _score_in_process(app, source, output, engine)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    error = result.output.strip().splitlines()[-1]
    assert error == (
        "Error: no database connection was free within DB_POOL_WAIT_SECONDS (all DB_POOL_SIZE "
        "of them stayed busy), so nothing was stored; run the same command again to resume "
        "where it stopped"
    )
    assert not output.exists()
    # Where a chunk (or a Dask worker's partition) is stored, the data layer's 503 for the
    # same pool: the command line's sentence too, not the HTTP answer's advice.
    from serving.batch import render
    from serving.errors import Unavailable
    from serving.store.database import db, run_with_retry

    with only_connection_held(), app.app_context(), pytest.raises(Unavailable) as busy:
        run_with_retry(lambda: db.execute_sql("SELECT 1"))
    assert render.database_failure(busy.value, "worker tcp://w") == (
        "no database connection was free from worker tcp://w within DB_POOL_WAIT_SECONDS "
        "(all DB_POOL_SIZE of them stayed busy), so nothing was stored"
    )


@pytest.mark.postgres_only
@pytest.mark.parametrize("engine", ["local", "dask"])
def test_a_database_too_slow_at_start_is_a_failure_to_run_again(database_url, tmp_path, engine):
    """The first statuses wait behind another status change past DB_STATEMENT_TIMEOUT_MS: the
    503 the data layer raises (was uncaught where models load) comes out as a command line's
    sentence, without the HTTP answer's 'Retry it with the same id'."""
    if not using_postgres():
        pytest.skip("statement_timeout is PostgreSQL's")
    import psycopg2

    from serving.decisions.lifecycle import _PG_LOCK_KEY

    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    passengers(source, 20)
    app = _unloaded_app(database_url, tmp_path, db_statement_timeout_ms=300)
    changing = psycopg2.connect(database_url)
    try:
        with changing.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
        result = _score_in_process(app, source, output, engine)
    finally:
        changing.rollback()
        changing.close()
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: the database did not answer in time (a statement ran past")
    assert error.endswith("; run the same command again to resume where it stopped")
    assert "Retry" not in error
    assert not output.exists()


@pytest.mark.slow
def test_a_killed_run_resumes_without_duplicating_rows(app, database_url, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    frame = passengers(source, 30_000)
    chunk = ["--chunk-rows", "300", "--quiet"]
    for stop_after in (3_000, 12_000):
        process = _score(database_url, source, output, *chunk)
        deadline = time.monotonic() + 60
        while _rows_done(output) < stop_after and process.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert process.returncode == -signal.SIGKILL
    finished = _score(database_url, source, output, *chunk)
    out, err = finished.communicate(timeout=120)
    assert finished.returncode == 0, err
    assert "resumed after" in out
    lines = read_output(output)
    assert [line["id"] for line in lines] == list(frame["id"])
    assert {line["status"] for line in lines} == {"200"}
    np.testing.assert_allclose(
        [float(line["proba"]) for line in lines], expected_proba(app, frame), rtol=0, atol=1e-12
    )
    with app.app_context():
        stored = [p.observation_id for p in Prediction.select(Prediction.observation_id)]
    assert sorted(stored) == sorted(frame["id"])
    assert not Checkpoint.path_for(output).exists()


PEAK = """
import resource, sys
from flask.cli import main
sys.argv = ["flask", "--app", "app", *sys.argv[1:]]
try:
    main()
finally:
    print("peak_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def _peak_kb(database_url: str, source: Path, output: Path) -> int:
    env = {
        **clean_environ(),
        "DATABASE_URL": database_url,
        "ROOT_MODEL_DIR": str(REPO_ROOT),
        "MODELS_DIR": str(output.parent / "no-models"),
        "LOG_LEVEL": "WARNING",
    }
    argv = ["score", str(source), str(output), "--no-log", "--quiet", "--chunk-rows", "2000"]
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stderr.rsplit("peak_kb", 1)[1].split()[0])


@pytest.mark.slow
def test_memory_stays_flat_as_the_file_grows(database_url, tmp_path):
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    passengers(small, 10_000)
    passengers(large, 200_000)
    assert large.stat().st_size > 15 * small.stat().st_size
    small_kb = _peak_kb(database_url, small, tmp_path / "small-out.csv")
    large_kb = _peak_kb(database_url, large, tmp_path / "large-out.csv")
    # Twenty times the rows: the peak grows by a few chunks' worth at most, not by the file.
    assert large_kb - small_kb < 40_000, (small_kb, large_kb)
