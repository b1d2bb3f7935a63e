"""Does a worker's memory grow with the predictions it serves? A bench mode, not a test.

`python -m bench.memory [--predictions 1000000] [--minutes 5] [--database sqlite]`
trains the bundled logistic model into a temporary folder, starts the service as users run
it (`gunicorn -c gunicorn.conf.py app:app`, 2 workers, INFO logs, metrics on; see
bench/servers.py) on a fresh database, and sends `POST /predict` with unique ids through wrk
(`bench/check.lua`: every answer's probability checked) in runs of `--chunk-seconds`. After
the first 10,000 predictions and after every later run it reads each worker's resident memory
(VmRSS in /proc); it stops at `--predictions` or when `--minutes` of load are spent, whichever
comes first, and says how many it reached.

The verdict compares each worker's RSS at the end with its RSS after 10,000: growth of at most
10% passes. Exit status 1 when any request failed (non-2xx, a wrong probability, a socket
error) or a worker was replaced; a missed memory target is reported, and is status 1 only
with `--strict`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import load, models, workload, wrk
from bench.databases import DATABASES, DEFAULT_POSTGRES_URL, SQLITE, fresh, postgres_problem
from bench.servers import OURS, running

FIRST_CHECKPOINT = 10_000
# Growth allowed between the first checkpoint and the end.
GROWTH_LIMIT = 0.10
# Each wrk run gets its own id range: ids are base + thread * 1e9 + counter (check.lua).
_ID_STRIDE = 100_000_000_000


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--predictions", type=int, default=1_000_000, help="stop after this many")
    parser.add_argument("--minutes", type=float, default=5.0, help="or after this much load")
    parser.add_argument("--database", choices=DATABASES, default=SQLITE)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--chunk-seconds", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--strict", action="store_true", help="exit 1 when memory grew >10%%")
    return parser.parse_args(argv)


def worker_rss(master: int) -> dict[int, int]:
    """Resident memory in KiB of every child of the gunicorn master, by pid."""
    found: dict[int, int] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
        except OSError:  # the process ended while we looked
            continue
        if int(fields.get("PPid", "0").strip()) == master and "VmRSS" in fields:
            found[int(status.parent.name)] = int(fields["VmRSS"].split()[0])
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load, sample the workers' memory, print one line per sample and the verdict."""
    args = parse_args(argv)
    if args.database != SQLITE:
        problem = postgres_problem(args.postgres_url)
        if problem:
            print(f"cannot run on PostgreSQL: {problem}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        workdir = Path(tmp)
        folder = models.train(models.LOGREG, workdir / "models")
        rows_file = workload.write_lua_rows(
            workdir / "rows.lua", workload.load(models.load_pipeline(folder))
        )
        with (
            fresh(args.database, workdir, "memory", args.postgres_url) as url,
            running(OURS, folder, url, workdir) as server,
        ):
            return _drive(args, server.url, server.process.pid, rows_file)


def _drive(args: argparse.Namespace, url: str, master: int, rows_file: Path) -> int:
    served = failed = 0
    first: dict[int, int] | None = None
    last: dict[int, int] = {}
    began = time.monotonic()
    budget = args.minutes * 60
    chunk = 0
    print("predictions | seconds | RSS per worker (MiB) | req/s of the last run", flush=True)
    while served < args.predictions and time.monotonic() - began < budget:
        # Up to the first checkpoint in a short run, then full runs.
        seconds = args.chunk_seconds
        if first is None:
            seconds = min(seconds, 3.0)
        result = wrk.run(
            url, rows_file, args.concurrency, seconds, load.MEASURE_ID_BASE + chunk * _ID_STRIDE
        )
        chunk += 1
        served += result.requests
        failed += result.non2xx + result.wrong + result.socket_errors
        if first is None and served < FIRST_CHECKPOINT:
            continue
        last = worker_rss(master)
        if first is None:
            first = dict(last)
        shown = ", ".join(f"{kib / 1024:.1f}" for _pid, kib in sorted(last.items()))
        print(
            f"{served:,} | {time.monotonic() - began:.0f} | {shown} | "
            f"{result.requests_per_second:,.0f}",
            flush=True,
        )
    if first is None:
        print("FAIL: fewer than 10,000 predictions were served", flush=True)
        return 1
    replaced = set(first) != set(last)
    growth = max((last[pid] - first[pid]) / first[pid] for pid in first if pid in last)
    verdict = "PASS" if growth <= GROWTH_LIMIT and not replaced else "FAIL"
    print(
        f"{verdict}: {served:,} predictions in {time.monotonic() - began:.0f} s on "
        f"{args.database}; largest growth of a worker's RSS since {FIRST_CHECKPOINT:,}: "
        f"{growth:+.1%} (limit {GROWTH_LIMIT:+.0%}); failed requests {failed}"
        + ("; a worker was replaced" if replaced else ""),
        flush=True,
    )
    broken = failed > 0 or replaced
    return 1 if broken or (args.strict and verdict == "FAIL") else 0


if __name__ == "__main__":
    sys.exit(main())
