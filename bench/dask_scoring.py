"""Dask throughput beside `flask score`, on the same file, in the same run.

`python -m bench.dask_scoring [--rows 200000] [--databases sqlite,postgres] [--workers 2]
[--threads 1] [--partition-rows 10000]` writes a CSV of Titanic rows drawn with replacement
(unique ids), then for each database, each on a fresh database of its own:

- `flask score` (one process: read, check, score, store, write);
- `flask score --engine dask` against a `dask scheduler` and `--workers` `dask worker`
  processes started on 127.0.0.1 for the measurement. The workers are warmed first by a
  small file of other ids (on a real cluster they stay up between runs, and the first
  partition on each loads the models), so what is timed is the steady rate.

Both are timed as the command reports it (its own `scored N rows in S s`, without the
process's start-up) and as the wall time of the whole command. Each run is checked: every
row answered 200, stored once, and the two outputs' probabilities within 1e-9.

On one machine the workers share its cores with each other and with the client: this
measures the overhead and the scaling of the engine, not what a cluster of machines gives.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from bench.databases import DATABASES, DEFAULT_POSTGRES_URL, POSTGRES, fresh, postgres_problem
from training import titanic

REPO_ROOT = Path(__file__).resolve().parent.parent
DASK = Path(sys.executable).with_name("dask")
SCORED = re.compile(r"scored ([\d,]+) rows in ([\d.]+) s")


def _rows(n: int, prefix: str) -> pd.DataFrame:
    frame, _ = titanic.load()
    picked = frame.sample(n=n, replace=True, random_state=11).reset_index(drop=True)
    picked.insert(0, "id", [f"{prefix}{i}" for i in range(n)])
    return picked


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env(url: str) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "DATABASE_URL": url,
        "ROOT_MODEL_DIR": str(REPO_ROOT),
        "MODELS_DIR": str(REPO_ROOT / "bench" / "no-models"),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO_ROOT),
    }


@contextmanager
def _cluster(url: str, workers: int, threads: int, logs: Path) -> Iterator[str]:
    """A scheduler and `workers` workers on 127.0.0.1, stopped (by their own ids) after."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{_free_port()}"
    env = _env(url)
    processes: list[subprocess.Popen] = []

    def start(name: str, *argv: str) -> None:
        with (logs / f"{name}.log").open("wb") as log:
            processes.append(subprocess.Popen([str(DASK), *argv], env=env, stdout=log, stderr=log))

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", address.split(":")[-1])
        for i in range(workers):
            start(
                f"worker{i}",
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                str(threads),
                "--no-dashboard",
            )
        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _score(url: str, source: Path, output: Path, *extra: str) -> tuple[int, float, float]:
    """Run `flask score`; rows and seconds as it reports them, and the command's wall time."""
    argv = [sys.executable, "-m", "flask", "--app", "app", "score", str(source), str(output)]
    began = time.monotonic()
    done = subprocess.run(
        [*argv, "--quiet", "--restart", *extra],
        cwd=REPO_ROOT,
        env={k: v for k, v in _env(url).items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"flask score {' '.join(extra)} failed: {done.stderr[-2000:]}")
    found = SCORED.search(done.stdout)
    if found is None:
        raise SystemExit(f"no summary in: {done.stdout}")
    return int(found.group(1).replace(",", "")), float(found.group(2)), wall


def _stored(url: str) -> tuple[int, int]:
    """(rows, distinct ids) in the prediction table."""
    from serving import create_app
    from serving.store.database import close_all, db

    app = create_app(
        {
            "database_url": url,
            "root_model_dir": REPO_ROOT,
            "models_dir": REPO_ROOT / "bench" / "no-models",
            "compile_models": False,
        },
        load=False,
    )
    with app.app_context():
        rows, distinct = db.execute_sql(
            "SELECT COUNT(*), COUNT(DISTINCT observation_id) FROM prediction"
        ).fetchone()
    close_all()
    return int(rows), int(distinct)


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--databases", default=",".join(DATABASES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--partition-rows", type=int, default=10_000)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    chunk = ["--chunk-rows", str(args.partition_rows)]
    lines = [
        f"{args.rows:,} rows, {args.partition_rows:,} per chunk/partition, "
        f"{args.workers} workers x {args.threads} thread(s), on this machine",
        "",
        "| database | engine | rows/s (as reported) | seconds | wall s (whole command) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as folder:
        work = Path(folder)
        source, warm = work / "rows.csv", work / "warm.csv"
        _rows(args.rows, "r").to_csv(source, index=False)
        _rows(max(args.workers * args.threads * 200, 400), "warm").to_csv(warm, index=False)
        for kind in args.databases.split(","):
            if kind == POSTGRES and (problem := postgres_problem(args.postgres_url)):
                lines.append(f"| {kind} | skipped: {problem} | | | |")
                continue
            outputs = {}
            with fresh(kind, work, "local", args.postgres_url) as url:
                n, seconds, wall = _score(url, source, work / "local.csv", *chunk)
                assert _stored(url) == (args.rows, args.rows), "flask score stored a row twice"
                outputs["local"] = work / "local.csv"
                lines.append(
                    f"| {kind} | flask score | {n / seconds:,.0f} | {seconds:.1f} | {wall:.1f} |"
                )
                print(lines[-1], file=sys.stderr)
            with fresh(kind, work, "dask", args.postgres_url) as url:
                with _cluster(url, args.workers, args.threads, work) as address:
                    dask = ["--engine", "dask", "--scheduler", address, *chunk]
                    _score(url, warm, work / "warm-out.csv", "--chunk-rows", "200", *dask[:4])
                    n, seconds, wall = _score(url, source, work / "dask.csv", *dask)
                    rows, distinct = _stored(url)
                    assert rows == distinct == args.rows + len(pd.read_csv(warm)), "stored twice"
                outputs["dask"] = work / "dask.csv"
                lines.append(
                    f"| {kind} | --engine dask | {n / seconds:,.0f} | {seconds:.1f} | {wall:.1f} |"
                )
                print(lines[-1], file=sys.stderr)
            local, dask_out = (pd.read_csv(outputs[k]) for k in ("local", "dask"))
            assert (local["status"] == 200).all() and (dask_out["status"] == 200).all()
            assert list(local["id"]) == list(dask_out["id"])
            gap = float(np.abs(local["proba"].to_numpy() - dask_out["proba"].to_numpy()).max())
            assert gap <= 1e-9, gap
    print("\n".join(lines))


if __name__ == "__main__":
    main()
