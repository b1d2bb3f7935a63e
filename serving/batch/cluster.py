"""`flask score --engine dask`: a CSV or Parquet file scored on the workers of a Dask cluster.

The client cuts the input into partitions (`serving.batch.partitions`) and sends each
worker a partition's description, never data or a model: the worker reads its partition
from the file, loads the endpoint from its own models folder with the service's loader and
its digest checks (`serving.load_models`, once per worker process), then runs the data
plane's one batch sequence, `prepare_many` then `commit`: one transaction per partition,
exactly once by observation id (a row stored before, by this run or any other, is replayed
with its stored answer). The worker sends back the partition's answers as CSV text.

The client writes the answers in input order and moves a checkpoint beside the output
after each partition, as `flask score` does after each chunk. A worker that dies mid-task
has its partition run again elsewhere by the scheduler; a client that dies is resumed by
running the same command again. Either way a partition stored before the interruption is
stored again, which replays it: the output is complete and every id is stored once.

The workers are deployments of the same image as the service: their environment names the
database (DATABASE_URL) and the models (ROOT_MODEL_DIR, MODELS_DIR, MODEL_DIGESTS), and the
input path must be one they can open. A worker lacking a version the client has first loads
the versions published since it started, as a serving worker's periodic check does; one
whose versions of the endpoint are still not the client's (one more or fewer, or other
model files by their sha256), or that stores into another database, refuses its partitions.
A partition routed to a version the client did not check is refused with nothing stored.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from serving.batch import ID_COLUMN, partitions, render
from serving.batch.files import Checkpoint, Refused, Summary, open_output, resumable
from serving.batch.progress import Progress
from serving.errors import ServiceError, Unavailable

if TYPE_CHECKING:
    from distributed import Client, Future
    from flask import Flask


class ClusterError(Exception):
    """The cluster could not finish a partition (a worker or the database failed); running
    the same command again resumes."""


class PartitionRefused(Refused):
    """A partition was refused whole, for what the file or the worker is (a column the
    model needs is missing, another database or other models); running again will not help
    until that changes."""


@dataclass(frozen=True)
class Job:
    """What every partition of one run is scored with; small, sent with each task."""

    endpoint: str
    version: str | None
    status: str | None
    store: bool
    id_column: str
    columns: list[str]
    header: list[str]
    head: bytes
    # The sha256 of every file of each version the client loaded, by version.
    digests: dict[str, dict[str, str]]
    # Where the client's database is (no credentials); None when nothing is stored.
    database: str | None


@dataclass(frozen=True)
class Outcome:
    """A partition's answers as CSV lines and their counts, or why it was refused whole."""

    index: int
    text: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    # Why the worker could not finish it for a passing cause (its database did not answer):
    # the run stops as a failure, not a refusal, and running it again resumes.
    failure: str | None = None


_LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1"}


def database_identity(url: str) -> str:
    """Which database a URL names, without user or password: enough to tell two apart.

    A SQLite file, and a PostgreSQL server reached as localhost or through a socket, are
    this machine's own: the identity names the machine, so a worker on another host (which
    would store into a file or server of its own) is refused rather than trusted."""
    from playhouse.db_url import parse

    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme.startswith("sqlite"):
        path = parse(url)["database"]  # as peewee opens it: relative to the working folder
        where = path if path == ":memory:" else os.path.realpath(path)
        return f"sqlite://{socket.gethostname()}{where}"
    scheme = "postgresql" if scheme == "postgres" else scheme
    host = parts.hostname
    if host in _LOCAL_HOSTS:
        host = f"{socket.gethostname()}/{host or 'socket'}"
    return f"{scheme}://{host}:{parts.port or 5432}{parts.path}"


# ---- on a worker ----------------------------------------------------------------------

_apps: list[Flask] = []
# When this process loaded its models (UTC), for a refusal that asks for a restart.
_loaded_at: list[str] = []
_loading = threading.Lock()


def _worker_app() -> Flask:
    """This worker process's one app, built from its own environment on first use with every
    endpoint it serves. One app, not one per endpoint: building an app binds the process's
    database, and a second one built while a partition of the first is inside its
    transaction would move that transaction's remaining statements to another connection."""
    with _loading:
        if not _apps:
            import serving

            app = serving.create_app(load=False)
            serving.load_models(app)
            _apps.append(app)
            _loaded_at.append(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
        return _apps[0]


def _refusal(app: Flask, job: Job) -> str | None:
    """Why this worker must not score the job's rows, if it must not."""
    if job.database is not None:
        mine = database_identity(app.config["SETTINGS"].database_url)
        if mine != job.database:
            return (
                f"this worker stores into {mine}, the client into {job.database}; "
                "give the workers the same DATABASE_URL as the client"
            )
    # Every version, not only those the job names: routing by status or A/B arm on a worker
    # with a version the client lacks would answer with a version the client never checked.
    differences = _differences(app, job)
    if any(kind == "client" for kind, _ in differences):
        # Published since this long-lived worker loaded its models: load them now, as a
        # serving worker's periodic check would, rather than refuse every run from now on.
        app.extensions["hot_loader"].check()
        differences = _differences(app, job)
    if not differences:
        return None
    registry = app.extensions["registry"]
    said = []
    for kind, version in differences:
        where = {"worker": "only on this worker", "client": "only on the client"}.get(
            kind, "with other model files (by sha256)"
        )
        broken = [
            b["error"]
            for b in registry.broken
            if b["endpoint"] == job.endpoint and b["version"] == version and b.get("error")
        ]
        said.append(
            f"{version} {where}" + (f" (it cannot load here: {broken[0]})" if broken else "")
        )
    return (
        f"this worker's versions of {job.endpoint!r} are not the client's: version "
        f"{'; version '.join(said)}; {_advice(app, job.endpoint, differences)}"
    )


def _differences(app: Flask, job: Job) -> list[tuple[str, str]]:
    """(where, version) for each version of the job's endpoint that differs between this
    worker and the client, in version order: "worker" or "client" for a version only one of
    them has, "files" for one whose model files differ."""
    from serving.model.folders import version_order

    versions = app.extensions["registry"].endpoint(job.endpoint)
    loaded = {version: dict(model.digests) for version, model in versions.items()}
    here, there = loaded.keys(), job.digests.keys()
    differences = [("worker", v) for v in sorted(here - there, key=version_order)]
    differences += [("client", v) for v in sorted(there - here, key=version_order)]
    differences += [
        ("files", v) for v in sorted(here & there, key=version_order) if loaded[v] != job.digests[v]
    ]
    return differences


def _advice(app: Flask, endpoint: str, differences: list[tuple[str, str]]) -> str:
    """What to do about the versions that differ: run again for a version published since the
    client loaded its models; restart the workers when their models folder changed since
    they loaded it (their copy in memory is old); otherwise give them the client's folder."""
    registry = app.extensions["registry"]
    published = [
        v for kind, v in differences if kind == "worker" and (endpoint, v) in registry.published
    ]
    if len(published) == len(differences):
        return (
            f"version {', '.join(published)} was published after the client loaded its models: "
            "run the same command again to go on with the new set"
        )
    loaded_at = _loaded_at[0] if _loaded_at else "start"
    if _folders_changed(app, endpoint):
        return (
            f"restart the workers: they loaded their models at {loaded_at}, and their models "
            "folder has changed since"
        )
    return (
        f"give the workers the same models folder as the client (they loaded theirs at {loaded_at})"
    )


def _folders_changed(app: Flask, endpoint: str) -> bool:
    """Whether this worker's folders of `endpoint` (the root folder too, for the default
    endpoint) are no longer the ones it loaded: one added, removed or with other files."""
    from serving.model import digests, folders

    settings = app.config["SETTINGS"]
    registry = app.extensions["registry"]
    on_disk = {v: path for _, v, path in folders.version_folders(settings.models_dir, [endpoint])}
    if endpoint == settings.default_endpoint:
        root = settings.root_model_dir
        on_disk[folders.root_version(folders.read_metadata(root))] = root
    skipped = {b["version"] for b in registry.broken if b["endpoint"] == endpoint}
    loaded = {
        version: model
        for version, model in registry.models.get(endpoint, {}).items()
        if (endpoint, version) not in registry.published
    }
    if on_disk.keys() - skipped != loaded.keys():
        return True
    return any(digests.folder_digests(on_disk[v]) != dict(m.digests) for v, m in loaded.items())


def _unchecked(job: Job, versions: dict[str, dict[str, str]]) -> str | None:
    """Why a prepared partition must not be stored: rows routed to a version the client did
    not check (one this worker loaded on demand, published or promoted during the run)."""
    for version, files in versions.items():
        if job.digests.get(version) != files:
            return (
                f"rows were routed to version {version} of {job.endpoint!r}, which the client "
                "did not check (published or promoted since the run began); nothing of this "
                "partition was stored: run the same command again to go on with the new set"
            )
    return None


def _database_failure(exc: Exception) -> str:
    """A sentence for a database that did not serve this worker, naming the worker."""
    from distributed import get_worker

    try:
        worker = f"worker {get_worker().address}"
    except ValueError:  # called outside a Dask worker
        worker = "this worker"
    return render.database_failure(exc, worker)


def score_partition(job: Job, partition: partitions.Partition) -> Outcome:
    """Read, score and store one partition on this worker; its answers as CSV lines.

    Runs the data plane's batch sequence (`prepare_many`, `commit`): the partition's scored
    rows are stored in one transaction, a row the database refuses fails alone, and an id
    stored before replays its stored answer. An error that concerns the whole partition (a
    column the model needs is missing, a record cannot be parsed) comes back as a sentence.
    """
    from serving import dataplane
    from serving.model.runtime import ModelLoadError
    from serving.store import database

    try:
        app = _worker_app()
    except ModelLoadError as exc:
        return Outcome(partition.index, error=f"the worker cannot load the models: {exc}")
    except (Unavailable, database.MaxConnectionsExceeded, *database.CONNECTION_ERRORS) as exc:
        # Migrating at start (a pool with no connection free raises its own error there).
        return Outcome(partition.index, failure=_database_failure(exc))
    with app.app_context():
        try:
            refusal = _refusal(app, job)
            if refusal is not None:
                return Outcome(partition.index, error=refusal)
            rows = partitions.read(partition, job.head, job.header, job.id_column)
            plane = replace(dataplane.OFFLINE, store=job.store)
            prepared = dataplane.prepare_many(
                app.extensions["services"],
                job.endpoint,
                rows,
                version=job.version,
                status=job.status,
                plane=plane,
            )
            # Routing may load on demand a version published or promoted since the check
            # above: the client never checked it, so nothing it answered may be stored.
            used = {g.route.model.version: dict(g.route.model.digests) for g in prepared.groups}
            unchecked = _unchecked(job, used)
            if unchecked is not None:
                return Outcome(partition.index, error=unchecked)
            results = prepared.commit()
        except Unavailable as exc:
            return Outcome(partition.index, failure=_database_failure(exc))
        except ServiceError as exc:
            return Outcome(partition.index, error=render.sentence(exc))
        finally:
            # A worker thread holds no connection between partitions (a pooled one goes back).
            database.release_connection()
        return Outcome(partition.index, render.csv_text(results, job.columns), results.counts())


# ---- on the client --------------------------------------------------------------------


def score_with_dask(
    app: Flask,
    source: Path,
    output: Path,
    scheduler: str | Client,
    endpoint: str | None = None,
    version: str | None = None,
    status: str | None = None,
    log: bool = True,
    id_column: str = ID_COLUMN,
    partition_rows: int = 10_000,
    restart: bool = False,
    progress: bool = True,
) -> Summary:
    """Score every row of `source` (CSV, Parquet file or folder of Parquet files) on the Dask
    cluster at `scheduler` (an address or a connected `distributed.Client`) into `output`,
    resuming an interrupted run into the same output unless `restart`.

    The app loads the endpoint here too: its columns make the output's header, and the
    digests of its model files are what every worker must have loaded.
    """
    import serving

    name = endpoint or app.config["SETTINGS"].default_endpoint
    with app.app_context():
        serving.load_models(app, [name])
        versions = app.extensions["registry"].endpoint(name)
        if version and version not in versions:
            # As `routing.choose` says it, before any worker is asked.
            app.extensions["registry"].version(name, version)
        columns = render.csv_columns(versions.values(), id_column)
        digests = {v: dict(model.digests) for v, model in versions.items()}
        url = app.config["SETTINGS"].database_url
    plan = partitions.plan(source, partition_rows)
    if id_column not in plan.header:
        raise Refused(f"{source} has no {id_column!r} column; name the id column with --id-column")
    job = Job(
        endpoint=name,
        version=version or None,
        status=status or None,
        store=log,
        id_column=id_column,
        columns=columns,
        header=plan.header,
        head=plan.head,
        digests=digests,
        database=database_identity(url) if log else None,
    )
    fresh = Checkpoint(
        input=str(source.resolve()),
        input_size=plan.size,
        header=plan.header,
        endpoint=name,
        id_column=id_column,
        log=log,
        columns=columns,
        input_offset=0,
        output_offset=0,
        line=0,
        engine="dask",
        partition_rows=partition_rows,
    )
    state = resumable(output, fresh, restart) or fresh
    summary = Summary(resumed_at=state.rows)
    began = time.monotonic()
    client, own = _client(scheduler)
    try:
        _run(client, job, plan, state, output, summary, progress)
    finally:
        if own:
            client.close()
    summary.seconds = time.monotonic() - began
    return summary


def _client(scheduler: str | Client) -> tuple[Client, bool]:
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler, False
    try:
        return Client(scheduler, timeout=30, set_as_default=False), True
    except OSError as exc:
        raise Refused(f"no Dask scheduler answers at {scheduler}: {exc}") from exc


def _run(
    client: Client,
    job: Job,
    plan: partitions.Plan,
    state: Checkpoint,
    output: Path,
    summary: Summary,
    progress: bool,
) -> None:
    """Submit the unwritten partitions, at most a window of them ahead of the output, and
    write each one's answers in input order as they come back."""
    from distributed import as_completed

    todo = iter(plan.partitions[state.partitions :])
    threads = sum(client.nthreads().values())
    # Enough in flight to keep every worker thread busy while the client writes; few enough
    # that answers waiting for an earlier partition stay a few partitions' worth of memory.
    window = max(2, 2 * threads)
    flying: dict[int, Future] = {}
    arrived: dict[int, Outcome] = {}
    bar = Progress(len(plan.partitions), state.partitions, enabled=progress)
    completed = as_completed(loop=client.loop)

    def submit() -> None:
        while len(flying) + len(arrived) < window:
            partition = next(todo, None)
            if partition is None:
                return
            future = client.submit(score_partition, job, partition, pure=False)
            flying[partition.index] = future
            completed.add(future)

    handle = None
    try:
        submit()
        if state.rows == 0 and not plan.partitions:
            handle = open_output(output, state, job.columns)
        for future in completed:
            index = next(i for i, f in flying.items() if f is future)
            try:
                outcome: Outcome = future.result()
            except Exception as exc:  # whatever the cluster raised: the run stops, resumable
                raise ClusterError(f"partition {index + 1} failed on the cluster: {exc}") from exc
            del flying[index]
            if outcome.failure is not None:
                raise ClusterError(f"partition {index + 1} failed: {outcome.failure}")
            if outcome.error is not None:
                raise PartitionRefused(f"partition {index + 1}: {outcome.error}")
            arrived[index] = outcome
            while state.partitions in arrived:
                # Opened once the first answers are in: a file the model cannot read leaves
                # no output behind.
                if handle is None:
                    handle = open_output(output, state, job.columns)
                _write(handle, arrived.pop(state.partitions), state, output, summary, bar)
            submit()
    finally:
        if flying:
            client.cancel(list(flying.values()))
        if handle is not None:
            handle.close()
    Checkpoint.path_for(output).unlink(missing_ok=True)
    bar.update(0, len(plan.partitions), final=True)


def _write(
    handle: Any,
    outcome: Outcome,
    state: Checkpoint,
    output: Path,
    summary: Summary,
    bar: Progress,
) -> None:
    """Append a partition's answers, then move the checkpoint past it."""
    handle.write(outcome.text.encode("utf-8"))
    handle.flush()
    os.fsync(handle.fileno())
    rows = outcome.counts.get("rows", 0)
    state.partitions += 1
    state.output_offset = handle.tell()
    state.rows += rows
    state.save(output)
    summary.add_counts(outcome.counts)
    bar.update(rows, state.partitions)
