"""How fast batch scoring is end to end, against the model alone on the same rows.

`python -m bench.batch_scoring [--rows 100000] [--databases sqlite,postgres] [--memory-gb 0]`
draws Titanic rows with replacement (unique ids), writes them as one CSV file, and times on
the same rows, in the same run:

- model alone: `pipeline.predict_proba` on the rows already in a DataFrame (the ceiling:
  no parsing, no checking, no storing);
- `flask score` (in process): read the CSV in chunks, check every cell, score, store every
  row in the database and write the answers, on a fresh database;
- HTTP: gunicorn on 127.0.0.1, the same rows posted as `text/csv` bodies of MAX_BATCH_ROWS
  rows to `/predict/batch`, one after another, on a fresh database.

Each run checks that every row was stored once and that the answers equal predict_proba.

First, in process (`--in-process-rows`, default 1,000, 10,000 and 100,000; empty to skip),
for both bench models (`--models`, the bundled logistic pipeline and a 100-tree forest,
trained into a temporary folder): `pipeline.predict_proba` on a DataFrame against the
service's own scoring, `LoadedModel.predict` on validated dicts and `predict_columns` on the
same values column by column (what /predict/batch and `flask score` call), timed in turns,
with the path the fast path took (compiled, or estimator: the forest's own predict_proba on
the compiled matrix) and how far the answers are from predict_proba.

With `--memory-gb N` it also writes an N GB CSV and runs `flask score --no-log` on it in a
child process, sampling the child's resident memory: it should stay flat however large the
file is.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from bench import batch, workload
from bench.batch import median_time
from bench.databases import DATABASES, DEFAULT_POSTGRES_URL, POSTGRES, fresh, postgres_problem
from bench.models import MODELS, load_pipeline, train
from bench.servers import OURS, running
from bench.workload import POSITIVE_CLASS, TOLERANCE
from serving import create_app
from serving.model.runtime import LoadedModel
from serving.store.database import close_all, db
from training import titanic

REPO_ROOT = Path(__file__).resolve().parent.parent
HTTP_CHUNK = 10_000


def _rows(n: int) -> pd.DataFrame:
    """n Titanic rows drawn with replacement, each with a unique id."""
    frame, _ = titanic.load()
    picked = frame.sample(n=n, replace=True, random_state=7).reset_index(drop=True)
    picked.insert(0, "id", [f"r{i}" for i in range(n)])
    return picked


def _expected(pipeline, frame: pd.DataFrame) -> np.ndarray:
    positive = list(pipeline.classes_).index(POSITIVE_CLASS)
    return pipeline.predict_proba(frame)[:, positive]


def _check_output(path: Path, expected: np.ndarray) -> float:
    """The largest difference between the answers in `path` and predict_proba."""
    answers = pd.read_csv(path)
    if len(answers) != len(expected) or (answers["status"] != 200).any():
        raise SystemExit(f"{path}: {len(answers)} rows, not all answered 200")
    return float(np.abs(answers["proba"].to_numpy() - expected).max())


def _stored() -> int:
    return int(db.execute_sql("SELECT COUNT(*) FROM prediction").fetchone()[0])


def _cli(kind: str, source: Path, workdir: Path, postgres_url: str, expected) -> dict:
    with fresh(kind, workdir, "batch_cli", postgres_url) as url:
        app = create_app({"database_url": url, "log_level": "WARNING"})
        output = workdir / f"cli-{kind}.csv"
        try:
            runner = app.test_cli_runner()
            start = time.perf_counter()
            result = runner.invoke(args=["score", str(source), str(output), "--quiet"])
            seconds = time.perf_counter() - start
            if result.exit_code != 0:
                raise SystemExit(f"flask score failed: {result.output}{result.exception!r}")
            with app.app_context():
                stored = _stored()
        finally:
            close_all()
    return {"seconds": seconds, "stored": stored, "difference": _check_output(output, expected)}


def _http(kind: str, source: Path, workdir: Path, postgres_url: str, expected) -> dict:
    text = source.read_text()
    header, *lines = text.splitlines(keepends=True)
    bodies = [header + "".join(lines[i : i + HTTP_CHUNK]) for i in range(0, len(lines), HTTP_CHUNK)]
    with fresh(kind, workdir, "batch_http", postgres_url) as url:
        with running(OURS, REPO_ROOT, url, workdir) as server:
            session = requests.Session()
            answers = []
            start = time.perf_counter()
            for body in bodies:
                reply = session.post(
                    f"{server.url}/predict/batch",
                    data=body.encode(),
                    headers={"Content-Type": "text/csv", "Accept": "text/csv"},
                    timeout=300,
                )
                if reply.status_code != 200:
                    raise SystemExit(f"HTTP batch answered {reply.status_code}: {reply.text[:300]}")
                answers.append(reply.text)
            seconds = time.perf_counter() - start
        app = create_app({"database_url": url, "log_level": "WARNING", "migrate_on_start": False})
        with app.app_context():
            stored = _stored()
        close_all()
    output = workdir / f"http-{kind}.csv"
    first, *rest = answers
    output.write_text(first + "".join(a.split("\n", 1)[1] for a in rest))
    return {"seconds": seconds, "stored": stored, "difference": _check_output(output, expected)}


def _stages(kind: str, source: Path, workdir: Path, postgres_url: str) -> list[tuple[str, float]]:
    """Seconds of each stage of one batch of every row of `source` through the data plane, in
    process, on a fresh database: what `flask score` does to each chunk, in one chunk."""
    from serving import dataplane, load_models
    from serving.batch import rows as batch_rows

    with fresh(kind, workdir, "batch_stages", postgres_url) as url:
        app = create_app({"database_url": url, "log_level": "WARNING"})
        try:
            with app.app_context():
                endpoint = app.config["SETTINGS"].default_endpoint
                registry = load_models(app, [endpoint])
                columns = {c for m in registry.endpoint(endpoint).values() for c in m.columns}
                raw = source.read_bytes()
                marks = [("start", time.perf_counter())]

                def mark(stage: str) -> None:
                    marks.append((stage, time.perf_counter()))

                rows = batch_rows.from_csv(raw, raw.count(b"\n") + 1, keep=columns, check=mark)
                mark("ids and columns kept")
                services = dataplane.Services.of(app.extensions)
                prepared = dataplane.prepare_many(
                    services, endpoint, rows, plane=dataplane.OFFLINE, check=mark
                )
                mark("the rest of preparing (rows to store)")
                results = prepared.commit()
                mark("storing (one transaction)")
                if results.counts()["stored"] != len(rows):
                    raise SystemExit(f"stages: {results.counts()} of {len(rows)} rows")
        finally:
            close_all()
    return [(stage, end - marks[i][1]) for i, (stage, end) in enumerate(marks[1:])]


def _write_big(source: Path, target: Path, gigabytes: float) -> int:
    """Repeat the rows of `source` with fresh ids until `target` holds `gigabytes` GB."""
    with source.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        body = list(reader)
    goal, rows = gigabytes * 1e9, 0
    with target.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        while out.tell() < goal:
            for row in body:
                writer.writerow([f"m{rows}", *row[1:]])
                rows += 1
    return rows


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _memory(source: Path, workdir: Path, gigabytes: float) -> dict:
    big = workdir / "big.csv"
    rows = _write_big(source, big, gigabytes)
    size = big.stat().st_size
    output = workdir / "big-out.csv"
    command = [sys.executable, "-m", "flask", "--app", "app", "score", str(big), str(output)]
    env_url = f"sqlite:///{workdir / 'memory.db'}"
    samples: list[tuple[float, float]] = []
    start = time.perf_counter()
    child = subprocess.Popen(
        [*command, "--no-log", "--quiet"],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": env_url, "LOG_LEVEL": "WARNING"},
    )

    def sample() -> None:
        while child.poll() is None:
            rss = _rss_mb(child.pid)
            if rss is not None:
                samples.append((time.perf_counter() - start, rss))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = child.wait()
    sampler.join()
    seconds = time.perf_counter() - start
    big.unlink()
    output.unlink(missing_ok=True)
    if code != 0:
        raise SystemExit(f"flask score on the big file exited {code}")
    # After the first tenth of the run the models are loaded and the pipeline is full.
    settled = [rss for t, rss in samples if t > seconds / 10]
    return {
        "bytes": size,
        "rows": rows,
        "seconds": seconds,
        "rss_at_tenth": settled[0] if settled else float("nan"),
        "rss_max": max(rss for _, rss in samples),
        "rss_last": samples[-1][1],
    }


def _in_process(models: Sequence[str], sizes: Sequence[int], repeats: int) -> bool:
    """Print one line per model and batch size; False when some answers disagree."""
    agree = True
    with tempfile.TemporaryDirectory() as name:
        for model_name in models:
            folder = train(model_name, Path(name))
            model = LoadedModel.load(folder, "bench")
            load = workload.load(load_pipeline(folder))
            for size in sizes:
                result = batch.measure(folder, load, size, repeats, model)
                agree &= result.agrees
                print(
                    f"in process: {model_name}, {size:,} rows: predict_proba "
                    f"{result.vectorised_rows_per_second:,.0f} rows/s; LoadedModel.predict "
                    f"{result.ours_rows_per_second:,.0f} rows/s ({result.ratio:.2f}x); "
                    f"predict_columns {result.columns_rows_per_second:,.0f} rows/s "
                    f"({result.columns_ratio:.2f}x); path {result.path}; answers within "
                    f"{result.max_abs_difference:.1e} of predict_proba",
                    flush=True,
                )
    return agree


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print one line per figure."""
    parser = argparse.ArgumentParser(prog="python -m bench.batch_scoring", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--memory-gb", type=float, default=0.0)
    parser.add_argument("--in-process-rows", default="1000,10000,100000")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--stages",
        action="store_true",
        help="also time the stages of one batch of all the rows, in process, per database",
    )
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.in_process_rows.split(",") if n.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown := [m for m in models if m not in MODELS]:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    if unknown := [k for k in kinds if k not in DATABASES]:
        parser.error(f"unknown databases {unknown}; choose from {list(DATABASES)}")

    failed = bool(sizes) and not _in_process(models, sizes, args.repeats)
    if not kinds and not args.memory_gb:
        return 1 if failed else 0
    pipeline = load_pipeline(REPO_ROOT)
    rows = _rows(args.rows)
    features = rows.drop(columns=["id"])
    expected = _expected(pipeline, features)
    _, alone = median_time(lambda: pipeline.predict_proba(features), args.repeats)
    n = args.rows
    print(f"model alone: predict_proba on {n:,} rows in a DataFrame {n / alone:,.0f} rows/s")
    with tempfile.TemporaryDirectory() as name:
        workdir = Path(name)
        source = workdir / "rows.csv"
        rows.to_csv(source, index=False)
        for kind in kinds:
            if kind == POSTGRES and (problem := postgres_problem(args.postgres_url)):
                print(f"{kind}: skipped, {problem}")
                continue
            for label, measure in (("flask score", _cli), ("HTTP /predict/batch", _http)):
                figures = measure(kind, source, workdir, args.postgres_url, expected)
                rate = n / figures["seconds"]
                ok = figures["stored"] == n and figures["difference"] <= TOLERANCE
                failed |= not ok
                print(
                    f"{kind}: {label}: {n:,} rows parsed, checked, scored and stored in "
                    f"{figures['seconds']:.2f} s = {rate:,.0f} rows/s "
                    f"({figures['seconds'] / alone:.1f}x the model alone's time); "
                    f"stored {figures['stored']:,}, "
                    f"answers within {figures['difference']:.1e} of predict_proba"
                )
            if args.stages:
                stages = _stages(kind, source, workdir, args.postgres_url)
                total = sum(seconds for _stage, seconds in stages)
                shown = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in stages)
                print(
                    f"{kind}: stages of one {n:,}-row batch in process ({total:.2f} s, "
                    f"{n / total:,.0f} rows/s): {shown}"
                )
        if args.memory_gb > 0:
            figures = _memory(source, workdir, args.memory_gb)
            print(
                f"memory: flask score --no-log on {figures['bytes'] / 1e9:.2f} GB "
                f"({figures['rows']:,} rows) in {figures['seconds']:.0f} s "
                f"({figures['rows'] / figures['seconds']:,.0f} rows/s); resident memory "
                f"{figures['rss_at_tenth']:.0f} MB a tenth of the way in, "
                f"{figures['rss_max']:.0f} MB at most, {figures['rss_last']:.0f} MB at the end"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
