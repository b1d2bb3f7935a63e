"""`flask score --engine dask`: a real `dask scheduler` and `dask worker` processes on
127.0.0.1 score and store a file's partitions as `flask score` does, exactly once by id,
and a run interrupted by a killed worker or a killed client finishes with nothing stored
twice.

One cluster and one database serve the whole module (the workers read DATABASE_URL when they
start, as a deployment's would); each test uses ids of its own."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.batch.cluster import ClusterError, PartitionRefused, score_with_dask
from serving.batch.files import Checkpoint
from serving.store.tables import Prediction
from tests.conftest import (
    REPO_ROOT,
    _tiny_frame,
    make_app,
    postgres_url,
    reset_postgres,
    using_postgres,
)
from tests.environment import clean_environ
from tests.published_models import tiny_version
from tests.test_batch_cli import TITANIC, expected_proba, read_output

pytestmark = pytest.mark.slow

DASK = Path(sys.executable).with_name("dask")
# The scheduler's, workers' and clients' own start and stop, on a busy 2-core machine.
STARTUP_SECONDS = 60


def passengers(path: Path, rows: int, prefix: str, seed: int = 0) -> pd.DataFrame:
    """`rows` Titanic passengers drawn with replacement, ids `<prefix><n>`."""
    frame = pd.read_csv(TITANIC)
    picks = np.random.default_rng(seed).integers(0, len(frame), size=rows)
    sample = frame.iloc[picks].drop(columns=["PassengerId"]).reset_index(drop=True)
    sample.insert(0, "id", [f"{prefix}{i}" for i in range(rows)])
    sample.to_csv(path, index=False)
    return sample


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A scheduler and its workers, each a process this test module started."""

    def __init__(self, database_url: str, folder: Path, **settings: str):
        self.folder = folder
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        self.env = clean_environ(
            {
                "DATABASE_URL": database_url,
                "ROOT_MODEL_DIR": str(REPO_ROOT),
                "MODELS_DIR": str(folder / "no-models"),
                "LOG_LEVEL": "WARNING",
                # The workers import `serving` from this checkout, as the image's would.
                "PYTHONPATH": str(REPO_ROOT),
                **settings,
            }
        )
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, *argv: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [str(DASK), *argv], cwd=REPO_ROOT, env=self.env, stdout=log, stderr=log
        )
        log.close()
        self.processes[name] = process
        return process

    def start_scheduler(self) -> None:
        port = self.address.rsplit(":", 1)[1]
        self._start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", port)

    def start_worker(self, name: str) -> subprocess.Popen:
        # No nanny: the process killed is the worker itself, and nothing restarts it.
        return self._start(
            name,
            "worker",
            self.address,
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
            "--name",
            name,
        )

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=STARTUP_SECONDS, set_as_default=False) as client:
            client.wait_for_workers(n, timeout=STARTUP_SECONDS)

    def stop(self) -> None:
        """Stop every process started here (the workers first), by its own id."""
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                # A worker's orderly close is not under test: a few seconds, then SIGKILL.
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def database_url(tmp_path_factory) -> str:
    """One database for the module: the workers are told it when they start."""
    if using_postgres():
        url = postgres_url()
        reset_postgres(url)
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('dask-db') / 'predictions.db'}"


@pytest.fixture(scope="module")
def cluster(database_url, tmp_path_factory) -> Iterator[Cluster]:
    """A `dask scheduler` and three single-threaded `dask worker`s on 127.0.0.1 (the third,
    `doomed`, is killed by a test; started here so that its start overlaps the others')."""
    running = Cluster(database_url, tmp_path_factory.mktemp("dask-cluster"))
    try:
        running.start_scheduler()
        for name in ("w1", "w2", "doomed"):
            running.start_worker(name)
        running.wait_for_workers(3)
        yield running
    finally:
        running.stop()


@contextlib.contextmanager
def lone_worker(database_url: str, folder: Path, **settings: str) -> Iterator[Cluster]:
    """A scheduler of its own with one worker whose environment differs from the module's
    cluster by `settings`."""
    running = Cluster(database_url, folder, **settings)
    try:
        running.start_scheduler()
        running.start_worker("odd")
        running.wait_for_workers(1)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def dask_client(cluster):
    """A client of the cluster in this process, for the Python API."""
    from distributed import Client

    with Client(cluster.address, timeout=STARTUP_SECONDS, set_as_default=False) as client:
        yield client


def score(
    cluster: Cluster, database_url: str, source: Path, output: Path, *extra: str, **settings: str
):
    """`flask score --engine dask` as a user runs it, in a process of its own (`settings`:
    environment variables of its own)."""
    env = {**cluster.env, "DATABASE_URL": database_url, **settings}
    del env["PYTHONPATH"]  # the client runs from the checkout, like the tests
    argv = [sys.executable, "-m", "flask", "--app", "app", "score", str(source), str(output)]
    argv += ["--engine", "dask", "--scheduler", cluster.address, "--quiet", *extra]
    return subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=STARTUP_SECONDS * 2)
    assert process.returncode == 0, err
    return out


def stored_ids(app, prefix: str) -> list[str]:
    with app.app_context():
        query = Prediction.select(Prediction.observation_id).where(
            Prediction.observation_id.startswith(prefix)
        )
        return [row.observation_id for row in query]


def _rows_done(output: Path) -> int:
    try:
        return json.loads(Checkpoint.path_for(output).read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return 0


def test_dask_answers_and_stores_as_flask_score_does(
    app, cluster, dask_client, database_url, tmp_path
):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    frame = passengers(source, 3000, "a")
    frame = frame.astype(object)
    # Bad rows in several partitions, and a repeated id with another observation in one.
    frame.loc[10, "Age"] = "abc"
    frame.loc[1500, "Pclass"] = "first"
    frame.loc[2999, "id"] = ""
    frame.loc[2205, "id"] = "a2201"
    frame.loc[2205, "Age"] = 99
    frame.to_csv(source, index=False)

    out = finish(score(cluster, database_url, source, output, "--chunk-rows", "400"))
    assert "2,996 answered (2,996 stored, 0 replayed), 3 invalid, 1 conflicts" in out

    # The same file through plain `flask score`, into a database of its own.
    reference_app = make_app(f"sqlite:///{tmp_path / 'reference.db'}", tmp_path / "none")
    reference = tmp_path / "reference.csv"
    local = reference_app.test_cli_runner().invoke(
        args=["score", str(source), str(reference), "--quiet"]
    )
    assert local.exit_code == 0, local.output

    lines, expected = read_output(output), read_output(reference)
    assert [line["id"] for line in lines] == [line["id"] for line in expected]
    assert [line["status"] for line in lines] == [line["status"] for line in expected]
    assert [line["status"] for line in lines].count("200") == 2996
    for column in ("model_version", "prediction", "warnings", "error", "details"):
        assert [line[column] for line in lines] == [line[column] for line in expected], column
    answered = [i for i, line in enumerate(lines) if line["status"] == "200"]
    np.testing.assert_allclose(
        [float(lines[i]["proba"]) for i in answered],
        [float(expected[i]["proba"]) for i in answered],
        rtol=0,
        atol=1e-9,
    )
    assert lines[10]["details"] == "observation.Age: expected a number, got 'abc'"
    assert lines[2205]["status"] == "409"

    stored = stored_ids(app, "a")
    assert len(stored) == len(set(stored)) == 2996
    assert not Checkpoint.path_for(output).exists()

    # Again from the start: every row replays its stored answer, nothing is stored twice.
    again = score_with_dask(
        app, source, output, dask_client, partition_rows=400, restart=True, progress=False
    )
    assert (again.answered, again.stored, again.replayed) == (2996, 0, 2996)
    assert read_output(output) == lines
    assert len(stored_ids(app, "a")) == 2996


def test_parquet_through_the_python_api(app, dask_client, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, output = tmp_path / "in.parquet", tmp_path / "out.csv"
    frame = pd.read_csv(TITANIC).sample(1200, replace=True, random_state=1)
    frame = frame.drop(columns=["PassengerId"]).reset_index(drop=True)
    frame.insert(0, "id", range(7_000_000, 7_001_200))
    # Typed columns with real nulls, in row groups of 300.
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source, row_group_size=300)

    summary = score_with_dask(app, source, output, dask_client, partition_rows=500, progress=False)
    assert (summary.rows, summary.stored, summary.invalid) == (1200, 1200, 0)
    lines = read_output(output)
    assert [line["id"] for line in lines] == [str(i) for i in frame["id"]]
    np.testing.assert_allclose(
        [float(line["proba"]) for line in lines], expected_proba(app, frame), rtol=0, atol=1e-9
    )
    assert len(stored_ids(app, "700")) == 1200


def test_a_worker_that_stores_elsewhere_refuses_and_nothing_is_written(dask_client, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    passengers(source, 50, "e")
    elsewhere = make_app(f"sqlite:///{tmp_path / 'elsewhere.db'}", tmp_path / "none")
    with pytest.raises(PartitionRefused, match="give the workers the same DATABASE_URL"):
        score_with_dask(elsewhere, source, output, dask_client, progress=False)
    assert not output.exists()


@pytest.mark.parametrize("migrates", ["0", "1"])
def test_a_worker_whose_database_is_down_fails_the_run_resumably(tmp_path, migrates):
    """Not a refusal (the file is fine): a failure that says the database could not be
    reached and that running again resumes. Client and worker name the same database, on a
    port nothing listens on. The client starts without migrating; the worker fails where it
    stores (MIGRATE_ON_START=0: as one started before its database went down) or while it
    builds its app (=1: its migrations)."""
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    passengers(source, 50, "d")
    down = f"postgresql://postgres@127.0.0.1:{_free_port()}/serving_down"
    with lone_worker(down, tmp_path, MIGRATE_ON_START=migrates) as lone:
        process = score(lone, down, source, output, MIGRATE_ON_START="0")
        _, err = process.communicate(timeout=STARTUP_SECONDS * 2)
        # The Python API raises the cluster's failure, not a refusal.
        client_app = make_app(down, tmp_path / "none", migrate_on_start=False)
        with pytest.raises(ClusterError, match="the database could not be reached from worker"):
            score_with_dask(client_app, source, tmp_path / "api.csv", lone.address, progress=False)
    assert process.returncode == 1, err
    error = err.strip().splitlines()[-1]
    assert "partition 1 failed: the database could not be reached from worker tcp://" in error
    assert "Connection refused" in error
    assert error.endswith("run the same command again to resume where it stopped")
    assert not output.exists()


def test_a_worker_with_other_versions_refuses(app, tmp_path):
    """A worker whose models folder has a version the client's lacks is refused, even for a
    run that names a version both have: its routing would answer from another set."""
    from distributed import Client

    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    passengers(source, 50, "v")
    metadata = json.loads((REPO_ROOT / "model.json").read_text())

    def version(models: Path, name: str, **more: str) -> None:
        folder = models / "default" / name
        folder.mkdir(parents=True)
        for file in ("pipeline.pickle", "dtypes.pickle", "columns.json"):
            shutil.copy(REPO_ROOT / file, folder / file)
        (folder / "model.json").write_text(json.dumps({**metadata, "version": name, **more}))

    version(tmp_path / "worker", "2")
    # The client's own version 2 differs by its model.json; its version 3 is the client's alone.
    version(tmp_path / "client", "2", note="retrained")
    version(tmp_path / "client", "3")
    url = app.config["SETTINGS"].database_url
    with (
        lone_worker(url, tmp_path, MODELS_DIR=str(tmp_path / "worker")) as lone,
        Client(lone.address, timeout=STARTUP_SECONDS, set_as_default=False) as client,
    ):
        with pytest.raises(PartitionRefused) as refused:
            score_with_dask(app, source, output, client, version="1", progress=False)
        assert "this worker's versions of 'default' are not the client's: version 2 only on " in (
            str(refused.value)
        )
        other = make_app(url, tmp_path / "client")
        with pytest.raises(PartitionRefused) as refused:
            score_with_dask(other, source, output, client, progress=False)
        assert (
            "are not the client's: version 3 only on the client; version 2 with other model "
            "files (by sha256); give the workers the same models folder"
        ) in str(refused.value)
        # Its folder removed since: only the worker's copy in memory is old, and the
        # sentence says so rather than blame the folder.
        shutil.rmtree(tmp_path / "worker" / "default" / "2")
        with pytest.raises(PartitionRefused) as refused:
            score_with_dask(app, source, output, client, version="1", progress=False)
        assert (
            "are not the client's: version 2 only on this worker; restart the workers: they "
            "loaded their models at "
        ) in str(refused.value)
        assert "models folder has changed since" in str(refused.value)
    assert not output.exists()
    assert stored_ids(app, "v") == []


def test_a_long_lived_worker_goes_on_with_the_versions_published_since_it_started(app, tmp_path):
    """A worker that stays up between runs loads what was published since it loaded its
    models (as a serving worker's periodic check does), so the next run goes on with the new
    set; a version it loads on demand mid-run, which the client never checked (published and
    promoted after the client's check), answers nothing that is stored."""
    from distributed import Client

    url = app.config["SETTINGS"].database_url

    def publish(version: str, **metadata: object) -> None:
        folder = tiny_version(tmp_path / f"tiny-{version}", version, endpoint="tiny", **metadata)
        pushed = app.test_cli_runner().invoke(args=["models", "push", str(folder)])
        assert pushed.exit_code == 0, pushed.output

    publish("1", initial_status="production")
    with (
        lone_worker(url, tmp_path, STATUS_REFRESH_SECONDS="0") as lone,
        Client(lone.address, timeout=STARTUP_SECONDS, set_as_default=False) as client,
    ):

        def run(prefix: str, checked=None, **options: str) -> list[dict[str, str]]:
            source, output = tmp_path / f"{prefix}.csv", tmp_path / f"{prefix}-out.csv"
            frame = _tiny_frame(60)
            frame.insert(0, "id", [f"{prefix}{i}" for i in range(60)])
            frame.to_csv(source, index=False)
            summary = score_with_dask(
                checked or make_app(url, tmp_path / "none"),
                source,
                output,
                client,
                endpoint="tiny",
                partition_rows=20,
                progress=False,
                **options,
            )
            assert summary.stored == 60
            return read_output(output)

        # The worker loads its models with the first partition: version 1 alone.
        assert {line["model_version"] for line in run("t1-")} == {"1"}
        publish("2")
        # The client has version 2 and the worker did not: it loads it, even for a run that
        # names version 1, rather than refuse every run from now on.
        assert {line["model_version"] for line in run("t2-", version="1")} == {"1"}

        checked = make_app(url, tmp_path / "none")  # loads versions 1 and 2
        publish("3")
        with app.app_context():
            app.extensions["lifecycle"].change("tiny", "3", "production", "test")
        with pytest.raises(PartitionRefused) as refused:
            run("t3-", checked)
        assert (
            "partition 1: rows were routed to version 3 of 'tiny', which the client did not "
            "check (published or promoted since the run began); nothing of this partition was "
            "stored: run the same command again to go on with the new set"
        ) in str(refused.value)
        assert stored_ids(app, "t3-") == []
        # Run again: the client has version 3 now, and so has the worker.
        assert {line["model_version"] for line in run("t3-")} == {"3"}
    assert len(stored_ids(app, "t3-")) == 60


def test_a_file_the_model_cannot_read_stops_before_the_output_is_written(
    app, dask_client, tmp_path
):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("id,Age,Cabin\nm1,22,\n")
    with pytest.raises(PartitionRefused, match="no column 'Embarked'"):
        score_with_dask(app, source, output, dask_client, progress=False)
    assert not output.exists() and not Checkpoint.path_for(output).exists()


def _when_done(output: Path, rows: int, then) -> threading.Thread:
    """A thread that calls `then` once `rows` rows of the run into `output` are written."""

    def watch() -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while _rows_done(output) < rows and time.monotonic() < deadline:
            time.sleep(0.005)
        then()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_killed_worker_leaves_the_run_complete_and_exactly_once(
    app, cluster, dask_client, tmp_path
):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    frame = passengers(source, 5000, "k", seed=2)
    doomed = cluster.processes["doomed"]
    [address] = [
        address
        for address, worker in dask_client.scheduler_info()["workers"].items()
        if worker["name"] == "doomed"
    ]
    killed_at: list[tuple[int, int]] = []

    def kill() -> None:
        # Killed while the scheduler has given it partitions: they must run again elsewhere.
        # What it holds is read once, and the kill follows that read at once: a second read
        # could find it between two partitions (a race that failed this test once in CI).
        deadline = time.monotonic() + 10
        while True:
            holding = len(dask_client.processing(workers=[address]).get(address, ()))
            if holding or time.monotonic() > deadline:
                break
            time.sleep(0.002)
        doomed.send_signal(signal.SIGKILL)
        killed_at.append((_rows_done(output), holding))

    # Early (3 of 50 partitions written), so that most of the run is still ahead.
    watcher = _when_done(output, 300, kill)
    summary = score_with_dask(app, source, output, dask_client, partition_rows=100, progress=False)
    watcher.join()
    assert doomed.wait(timeout=10) == -signal.SIGKILL
    assert killed_at, "the worker was not killed"
    rows_then, holding = killed_at[0]
    assert rows_then < 5000 and holding > 0, f"killed after {rows_then} rows, holding {holding}"
    assert summary.answered == 5000 and summary.stored + summary.replayed == 5000
    lines = read_output(output)
    assert [line["id"] for line in lines] == list(frame["id"])
    assert {line["status"] for line in lines} == {"200"}
    np.testing.assert_allclose(
        [float(line["proba"]) for line in lines], expected_proba(app, frame), rtol=0, atol=1e-9
    )
    stored = stored_ids(app, "k")
    assert len(stored) == len(set(stored)) == 5000


def test_a_killed_client_is_resumed_by_running_it_again(
    app, cluster, dask_client, database_url, tmp_path
):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    frame = passengers(source, 5000, "c", seed=3)
    process = score(cluster, database_url, source, output, "--chunk-rows", "100")
    deadline = time.monotonic() + STARTUP_SECONDS
    while _rows_done(output) < 1000 and process.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before the client could be killed"
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert 0 < _rows_done(output) < 5000
    # The same run again (here through the Python API, which `flask score` calls).
    summary = score_with_dask(app, source, output, dask_client, partition_rows=100, progress=False)
    assert summary.resumed_at > 0 and summary.answered == 5000 - summary.resumed_at
    lines = read_output(output)
    assert [line["id"] for line in lines] == list(frame["id"])
    assert {line["status"] for line in lines} == {"200"}
    np.testing.assert_allclose(
        [float(line["proba"]) for line in lines], expected_proba(app, frame), rtol=0, atol=1e-9
    )
    stored = stored_ids(app, "c")
    assert len(stored) == len(set(stored)) == 5000
    assert not Checkpoint.path_for(output).exists()


def test_csv_partitions_end_on_record_boundaries_even_inside_quotes(tmp_path):
    from serving.batch import partitions

    source = tmp_path / "in.csv"
    records = [
        b"id,Name,Age\n",
        b'a,"one\nline break",1\n',
        b'b,"two ""quoted""\n\nline breaks",2\n',
        b"c,plain,3\n",
        b'd,"last\r\n",4\n',
    ]
    source.write_bytes(b"".join(records))
    plan = partitions.plan(source, 2)
    # Partition 2 starts after the first three records, at line 7 (two quoted line ends
    # in b, one in a).
    starts = [len(records[0]), len(b"".join(records[:3]))]
    assert [(p.start, p.line) for p in plan.partitions] == [(starts[0], 2), (starts[1], 7)]
    read = [partitions.read(p, plan.head, plan.header, "id") for p in plan.partitions]
    assert [rows.ids for rows in read] == [["a", "b"], ["c", "d"]]
    whole = pd.concat([rows.frame for rows in read], ignore_index=True)
    assert list(whole["Name"]) == [
        "one\nline break",
        'two "quoted"\n\nline breaks',
        "plain",
        "last\r\n",
    ]


def test_a_stray_quote_is_refused_as_flask_score_refuses_it(app, cluster, database_url, tmp_path):
    """A quote left open at line 3 and closed by another stray one past MAX_RECORD_BYTES
    would make one record, and one partition, of everything between: a worker would read it
    whole. Refused instead, with `flask score`'s sentence, before any partition is sent."""
    from serving.batch.files import MAX_RECORD_BYTES

    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    passengers(source, 1, "q")
    head, row = source.read_bytes().splitlines(keepends=True)
    rest = row.split(b",", 1)[1]
    tail = [b"q%d,%s" % (i, rest) for i in range(2, MAX_RECORD_BYTES // len(rest) + 100)]
    source.write_bytes(
        b"".join([head, row, b'q1,"' + rest, *tail, b'q-end,"' + rest, b"q-last," + rest])
    )
    assert source.stat().st_size > MAX_RECORD_BYTES

    process = score(cluster, database_url, source, output, "--chunk-rows", "100")
    _, err = process.communicate(timeout=STARTUP_SECONDS * 2)
    sentence = "The CSV record at line 3 never closes its quote"
    assert process.returncode == 1 and sentence in err, err
    assert not output.exists() and not Checkpoint.path_for(output).exists()
    assert stored_ids(app, "q") == []
    local = app.test_cli_runner().invoke(
        args=["score", str(source), str(tmp_path / "local.csv"), "--quiet"]
    )
    assert local.exit_code == 1
    assert local.output.splitlines()[-1] in err.splitlines()


def test_the_dask_engine_needs_a_scheduler_and_the_local_one_a_csv(runner, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, output = tmp_path / "in.parquet", tmp_path / "out.csv"
    pq.write_table(pa.table({"id": [1], "Age": [3.0]}), source)
    local = runner.invoke(args=["score", str(source), str(output), "--quiet"])
    assert local.exit_code != 0 and "--engine dask reads those" in local.output
    dask = runner.invoke(args=["score", str(source), str(output), "--engine", "dask"])
    assert dask.exit_code != 0 and "needs --scheduler" in dask.output
    assert not output.exists()


@pytest.mark.parametrize("seed", range(5))
def test_partition_boundaries_are_the_records_flask_score_reads(tmp_path, seed):
    import random

    from serving.batch import partitions
    from serving.batch.files import CsvReader

    pick = random.Random(seed)
    cells = [b"x", b'"a\nb"', b'"q ""z"" \n\n"', b'"c,d"', b"", b'"\r\n"']
    data = b"id,Name,Age\n" + b"".join(
        b"r%d,%s,%d\n" % (i, pick.choice(cells), i) for i in range(pick.randint(0, 40))
    )
    if seed % 2:
        data = data.rstrip(b"\n")  # a last record without a line end
    source = tmp_path / "in.csv"
    source.write_bytes(data)
    reader = CsvReader(source)
    for every in (1, 3, 500):
        expected = [(end, after) for _, _, end, after in reader.spans(reader.data_start, every)]
        for block in (1, 7, 1 << 20):  # a block may end anywhere, inside quotes too
            found = partitions.record_boundaries(source, reader.data_start, every, block)
            assert list(found) == expected, (every, block)


def test_a_worker_refuses_a_file_that_is_not_the_clients(tmp_path):
    """Byte ranges planned on the client's file, read from another file at the same path
    (a stale copy on one machine), would start inside records: refused with a sentence."""
    from serving.batch import partitions
    from serving.errors import BadRequest

    source = tmp_path / "in.csv"
    source.write_text("id,Age\n1,22\n2,38\n")
    plan = partitions.plan(source, 1)
    source.write_text("id,Age\n1,22\n2,38\n3,26\n")
    with pytest.raises(BadRequest, match="the workers need the same file"):
        partitions.read(plan.partitions[0], plan.head, plan.header, "id")
    source.unlink()
    with pytest.raises(BadRequest, match="cannot open"):
        partitions.read(plan.partitions[0], plan.head, plan.header, "id")


def test_a_local_database_names_its_machine(tmp_path, monkeypatch):
    """A relative SQLite path is the file peewee opens (relative to the working folder), and
    it, like a PostgreSQL reached as localhost, is this machine's: a worker elsewhere with
    the same URL stores somewhere else and is refused."""
    from serving.batch.cluster import database_identity

    monkeypatch.chdir(tmp_path)
    here = socket.gethostname()
    assert database_identity("sqlite:///predictions.db") == (
        f"sqlite://{here}{(tmp_path / 'predictions.db').resolve()}"
    )
    assert database_identity("postgresql://u:secret@localhost/db") == (
        f"postgresql://{here}/localhost:5432/db"
    )
    assert database_identity("postgres://u@db.example:6543/x") == "postgresql://db.example:6543/x"
