"""How the reports scale with the prediction log: a full scan against hourly rollups.

`python -m bench.rollups --rows 1000000,10000000 [--hours 720]` fills one throwaway
PostgreSQL database (created and dropped here) with logged predictions of the bundled
Titanic model, made by the database itself (generate_series): spread uniformly over the last
`--hours` hours up to now, four in five labelled. At each size it times, through the app's
Flask test client in this process (so HTTP parsing and JSON included, no network):

- `GET /api/v1/default/performance`, `GET /api/v1/default/drift` (the default window),
  `GET /dashboard/default` (every panel), and `serving.reports.traffic.traffic` called directly;
- first with no rollups (every report scans the log, as before them), then after
  `serving.reports.rollups.fold` (the time the fold took is printed too).

It checks that both give the same answers (performance within 1e-9, traffic equal) and
prints one line per size and report. Sizes grow in the same database: each adds rows to the
last. The generating statements run at the lowest CPU priority (the server process serving
them is reniced to 19), as the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.batch import median_time
from bench.databases import POSTGRES, fresh, postgres_problem
from serving import create_app
from serving.reports import rollups
from serving.reports.traffic import traffic
from serving.store.database import close_all, db, run_with_retry

ENDPOINT = "default"
# One Titanic passenger: what drift parses per row (its cost does not depend on the values).
OBSERVATION = json.dumps(
    {
        "Age": 22.0,
        "Cabin": None,
        "Embarked": "S",
        "Fare": 7.25,
        "Name": "Braund, Mr. Owen Harris",
        "Parch": 0,
        "PassengerId": 1,
        "Pclass": 3,
        "Sex": "male",
        "SibSp": 1,
        "Ticket": "A/5 21171",
    },
    sort_keys=True,
)
CHUNK_ROWS = 1_000_000
# Rollups plus raw rows must give the full scan's performance figures within this.
TOLERANCE = 1e-9
AGREE = " (agree)"


@contextlib.contextmanager
def _low_priority() -> Iterator[None]:
    """The database server process of this connection at nice 19 while the block runs."""
    (pid,) = db.execute_sql("SELECT pg_backend_pid()").fetchone()
    try:
        before = os.getpriority(os.PRIO_PROCESS, pid)
        os.setpriority(os.PRIO_PROCESS, pid, 19)
    except OSError:  # not allowed here: generate at the server's own priority
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, before)


def _fill(first: int, last: int, hours: int) -> None:
    """Predictions first..last-1 (ids), made by the database: a uniform probability, the
    label it implies, a truth drawn so the model is calibrated (none for one in five), times
    evenly spread over the last `hours` hours.

    Each chunk of a million covers the whole window in time order, as a live service
    writes (its ids and times rise together), so index inserts sweep forward instead of
    landing at random; a progress line per chunk goes to stderr."""
    began = time.perf_counter()
    for start in range(first, last, CHUNK_ROWS):
        end = min(last, start + CHUNK_ROWS)

        def chunk(start: int = start, end: int = end) -> None:
            with _low_priority():
                db.execute_sql(
                    "INSERT INTO prediction (endpoint, model_version, observation_id, "
                    "observation, proba, prediction, true_class, created_at) "
                    f"SELECT '{ENDPOINT}', '1', CAST(i AS TEXT), %s, p, "
                    "CASE WHEN p >= 0.5 THEN '1' ELSE '0' END, "
                    "CASE WHEN l < 0.2 THEN NULL WHEN u < p THEN '1' ELSE '0' END, "
                    "(now() AT TIME ZONE 'utc') - make_interval(secs => %s * (%s - i) / %s) "
                    "FROM (SELECT i, random() AS p, random() AS u, random() AS l "
                    "FROM generate_series(%s, %s) AS i) generated",
                    (OBSERVATION, float(hours * 3600), end, end - start, start, end - 1),
                )

        # One transaction per chunk, without a statement limit (DB_LONG_STATEMENT_TIMEOUT_MS=0).
        run_with_retry(chunk, long_running=True)
        rate = (end - first) / (time.perf_counter() - began)
        print(f"  filled {end - 1:,} rows ({rate:,.0f} rows/s)", file=sys.stderr, flush=True)
    run_with_retry(lambda: db.execute_sql("ANALYZE prediction"), long_running=True)


def _close(ours: Any, reference: Any) -> float:
    """The largest difference between two JSON answers' numbers (inf if they differ
    otherwise)."""
    if isinstance(reference, dict):
        if not isinstance(ours, dict) or ours.keys() != reference.keys():
            return float("inf")
        return max((_close(ours[k], reference[k]) for k in reference), default=0.0)
    if isinstance(reference, list):
        if not isinstance(ours, list) or len(ours) != len(reference):
            return float("inf")
        return max((_close(a, b) for a, b in zip(ours, reference, strict=True)), default=0.0)
    if isinstance(reference, float) and isinstance(ours, float):
        return abs(ours - reference)
    return 0.0 if ours == reference else float("inf")


def _timings(client: Any, repeats: int) -> dict[str, tuple[Any, float]]:
    pairs = [(ENDPOINT, "1")]

    def get(path: str) -> Any:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.get_data()[:300])
        return answer.get_json() if answer.is_json else len(answer.get_data())

    return {
        "performance": median_time(lambda: get(f"/api/v1/{ENDPOINT}/performance"), repeats),
        "drift": median_time(lambda: get(f"/api/v1/{ENDPOINT}/drift"), repeats),
        "traffic": median_time(lambda: traffic(pairs), repeats),
        "dashboard": median_time(lambda: get(f"/dashboard/{ENDPOINT}"), repeats),
    }


def _log_size() -> int:
    """Bytes on disk of the prediction log: every partition with its indexes and TOAST."""
    (size,) = db.execute_sql(
        "SELECT COALESCE(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
        "WHERE inhparent = 'prediction'::regclass"
    ).fetchone()
    return int(size)


def run(
    sizes: Sequence[int],
    hours: int,
    repeats: int,
    postgres_url: str,
    scan_repeats: int | None = None,
) -> list[str]:
    """Fill one throwaway database size by size; time every report with and without
    rollups at each (`scan_repeats` timed full scans, `repeats` from rollups); one line per
    size and report."""
    lines = []
    with (
        tempfile.TemporaryDirectory() as workdir,
        fresh(POSTGRES, Path(workdir), "rollups", postgres_url) as url,
    ):
        app = create_app(
            {
                "database_url": url,
                "models_dir": Path(workdir) / "no-more-models",
                "compile_models": False,
                "rollup_seconds": 0,
                "db_long_statement_timeout_ms": 0,
            }
        )
        client = app.test_client()
        client.get("/health")  # loads the model and migrates
        try:
            done = 0
            for size in sizes:
                began = time.perf_counter()
                _fill(done + 1, size + 1, hours)
                fill = time.perf_counter() - began
                done = size
                rollups.forget()  # no rollups: every report reads the whole log
                scanned = _timings(client, repeats if scan_repeats is None else scan_repeats)
                began = time.perf_counter()
                folded = rollups.fold()
                fold = time.perf_counter() - began
                rolled = _timings(client, repeats)
                difference = _close(rolled["performance"][0], scanned["performance"][0])
                same_traffic = rolled["traffic"][0] == scanned["traffic"][0]
                lines.append(
                    f"{size:,} rows over {hours} hours ({_log_size() / 2**30:.1f} GiB with "
                    f"indexes): generated in {fill:.0f} s; "
                    f"fold {fold:.1f} s ({folded.sealed} hours); performance agrees within "
                    f"{difference:.1e}, traffic {'equal' if same_traffic else 'DIFFERS'}"
                    f"{AGREE if difference <= TOLERANCE and same_traffic else ' (DISAGREE)'}; "
                    f"medians of {scan_repeats or repeats} scans and {repeats} rollup reads"
                )
                for name in scanned:
                    lines.append(
                        f"  {name:<12} full scan {scanned[name][1] * 1000:>9,.0f} ms   "
                        f"rollups {rolled[name][1] * 1000:>7,.0f} ms"
                    )
                print("\n".join(lines[-5:]), flush=True)
        finally:
            close_all()
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(prog="python -m bench.rollups", description=__doc__)
    parser.add_argument("--rows", default="1000000,10000000", help="sizes, comma-separated")
    parser.add_argument("--hours", type=int, default=720)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--scan-repeats",
        type=int,
        help="timed full scans per report (default: --repeats); each is a minute at 50M rows",
    )
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)
    sizes = sorted(int(s.replace("_", "")) for s in args.rows.split(",") if s.strip())
    if problem := postgres_problem(args.postgres_url):
        print(f"postgres: skipped, {problem}")
        return 1
    lines = run(sizes, args.hours, args.repeats, args.postgres_url, args.scan_repeats)
    # Exit 1 when the rollups' answers are not the full scan's (a smoke in .ci/run relies on it).
    return 0 if all(AGREE in line for line in lines if " rows over " in line) else 1


if __name__ == "__main__":
    raise SystemExit(main())
