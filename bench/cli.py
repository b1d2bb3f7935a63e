"""`python -m bench`: train both models, time batch scoring, drive every cell, write the report."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench import (
    batch,
    databases,
    load,
    models,
    pyload,
    report,
    revision,
    servers,
    workload,
    wrk,
)
from bench.report import Cell

T = TypeVar("T")

RESULTS_DIR = Path(__file__).with_name("results")
# Rough per-cell cost beyond warm-up and measurement: start, readiness, stop, database.
CELL_OVERHEAD_SECONDS = 4


@dataclass(frozen=True)
class Prepared:
    """One trained model, ready to be served and checked."""

    name: str
    folder: Path
    workload: workload.Workload
    rows_file: Path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Read the command line; --quick only changes the defaults of the timing options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the service against a naive Flask baseline (see bench/README.md).",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 s cells, 1 s warm-up")
    parser.add_argument("--duration", type=float, help="measured seconds per cell (10; quick 5)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (2; quick 1)")
    parser.add_argument(
        "--models", type=_names(models.MODELS), default=list(models.MODELS), help="logreg,forest"
    )
    parser.add_argument(
        "--databases",
        type=_names(databases.DATABASES),
        default=list(databases.DATABASES),
        help="sqlite,postgres",
    )
    parser.add_argument(
        "--servers",
        type=_names(servers.SERVERS),
        default=list(servers.SERVERS),
        help="baseline,ours,floor",
    )
    parser.add_argument("--concurrency", type=_counts, default=[1, 8, 32], help="1,8,32")
    parser.add_argument(
        "--postgres-url",
        default=databases.DEFAULT_POSTGRES_URL,
        help="a server where a throwaway database is created per cell (default %(default)s)",
    )
    parser.add_argument(
        "--generator",
        choices=["auto", load.WRK, load.PYTHON],
        default="auto",
        help="load generator: wrk, or the slower Python fallback (auto: wrk when installed)",
    )
    parser.add_argument("--batch-rows", type=int, default=10_000, help="rows per batch score")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a performance target is missed too, not only on errors",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 5.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    args.batch_repeats = 3 if args.quick else 5
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every request was answered right, 1 otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C does, through the blocks that stop servers and drop databases.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return run(args, shlex.join(["python", "-m", "bench", *argv]))
    except KeyboardInterrupt:
        _progress("interrupted: the servers it started are stopped and its databases dropped")
        return 128 + signal.SIGINT
    except Terminated:
        _progress("terminated: the servers it started are stopped and its databases dropped")
        return 128 + signal.SIGTERM
    except load.LoadFailed as exc:
        # Only the choice of generator fails the whole run; a cell's failure is in its row.
        _progress(f"cannot run: {exc}")
        return 2


def run(args: argparse.Namespace, command_line: str) -> int:
    """The whole benchmark; prints the report and writes it under bench/results/."""
    began = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    generator, generator_note = load.choose(args.generator)
    notes = [generator_note] if generator_note else []
    database_names = list(args.databases)
    postgres_version = None
    if databases.POSTGRES in database_names:
        problem = databases.postgres_problem(args.postgres_url)
        if problem:
            database_names.remove(databases.POSTGRES)
            notes.append(f"PostgreSQL cells SKIPPED: {problem}")
            _progress(notes[-1])
        else:
            postgres_version = databases.postgres_version(args.postgres_url)
    plan = [
        (model, database, concurrency, server)
        for model in args.models
        for database in database_names
        for concurrency in args.concurrency
        # Baseline, ours and the floor back to back, so a drifting machine affects all alike.
        # The floor has no model and no database: it runs beside the first pair only.
        for server in args.servers
        if server != servers.FLOOR or (model, database) == (args.models[0], database_names[0])
    ]
    estimate = len(plan) * (args.duration + args.warmup + CELL_OVERHEAD_SECONDS)
    _progress(f"{command_line}: {len(plan)} cells, about {estimate / 60:.1f} min of load")

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        prepared = _timed(timings, "training", lambda: _prepare(args.models, workdir))
        batches = _timed(
            timings,
            "batch scoring",
            lambda: {
                p.name: batch.measure(p.folder, p.workload, args.batch_rows, args.batch_repeats)
                for p in prepared.values()
            },
        )
        for name, result in batches.items():
            _progress(
                f"batch {name}: predict_proba {result.vectorised_rows_per_second:,.0f} rows/s, "
                f"ours {result.ours_rows_per_second:,.0f} rows/s ({result.ratio:.2f}x)"
            )
        cells = _timed(
            timings,
            "load cells",
            lambda: [
                _cell(args, generator, prepared[model], database, server, concurrency, workdir, n)
                for n, (model, database, concurrency, server) in enumerate(plan, start=1)
            ],
        )
    timings["total"] = time.monotonic() - began

    text = _render(
        args, command_line, stamp, generator, postgres_version, database_names, cells, batches
    )
    text += _footer(notes, cells, timings)
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"{stamp}.md"
    path.write_text(text, encoding="utf-8")
    _progress(f"report written to {path}")

    broken = any(c.error or (c.server == servers.OURS and not c.clean) for c in cells)
    broken = broken or any(not b.agrees for b in batches.values())
    missed = any(line.startswith("- FAIL") for line in _targets(args, database_names, cells))
    return 1 if broken or (args.strict and missed) else 0


def _prepare(names: list[str], workdir: Path) -> dict[str, Prepared]:
    prepared = {}
    for name in names:
        began = time.monotonic()
        folder = models.train(name, workdir / "models")
        work = workload.load(models.load_pipeline(folder))
        rows_file = workload.write_lua_rows(workdir / f"{name}-rows.lua", work)
        prepared[name] = Prepared(name, folder, work, rows_file)
        _progress(f"trained {name} into {folder} ({time.monotonic() - began:.1f} s)")
    return prepared


def _cell(
    args: argparse.Namespace,
    generator: str,
    model: Prepared,
    database: str,
    server: str,
    concurrency: int,
    workdir: Path,
    number: int,
) -> Cell:
    """Fresh database, fresh server, warm-up, then the measured run."""
    began = time.monotonic()
    code = revision.fingerprint()
    name = f"{model.name} {database} {server} c={concurrency}"
    label = f"{model.name}_{database}_{server}_c{concurrency}"
    try:
        with (
            databases.fresh(database, workdir, label, args.postgres_url) as database_url,
            servers.running(server, model.folder, database_url, workdir) as live,
        ):
            if args.warmup > 0:
                _drive(generator, live.url, model, concurrency, args.warmup, load.WARMUP_ID_BASE)
            result = _drive(
                generator, live.url, model, concurrency, args.duration, load.MEASURE_ID_BASE
            )
            # Read before the server stops: its log explains errors the counts only report.
            # The floor answers a constant: its answers are never right, and need not be.
            wrong = result.wrong if server != servers.FLOOR else 0
            log = live.log_tail() if result.non2xx or wrong else None
    except (servers.ServerFailed, load.LoadFailed, databases.DatabaseFailed, OSError) as exc:
        _progress(f"[{number}] {name}: FAILED after {time.monotonic() - began:.1f} s: {exc}")
        return Cell(model.name, database, server, concurrency, error=str(exc), code=code)
    _progress(
        f"[{number}] {name}: {result.requests_per_second:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, non-2xx {result.non2xx}, wrong {result.wrong}, "
        f"socket errors {result.socket_errors} ({time.monotonic() - began:.1f} s)"
    )
    if log:
        _progress(f"server log tail:\n{log}")
    return Cell(model.name, database, server, concurrency, result=result, server_log=log, code=code)


def _drive(
    generator: str, url: str, model: Prepared, concurrency: int, seconds: float, id_base: int
) -> load.LoadResult:
    if generator == load.WRK:
        return wrk.run(url, model.rows_file, concurrency, seconds, id_base)
    return pyload.run(url, model.workload, concurrency, seconds, id_base)


def _targets(args: argparse.Namespace, database_names: list[str], cells: list[Cell]) -> list[str]:
    return report.targets(cells, list(args.models), database_names)


def _render(
    args: argparse.Namespace,
    command_line: str,
    stamp: str,
    generator: str,
    postgres_version: str | None,
    database_names: list[str],
    cells: list[Cell],
    batches: dict[str, batch.BatchResult],
) -> str:
    machine = "\n".join(f"- {line}" for line in report.machine_info(generator, postgres_version))
    return (
        f"# Benchmark {stamp}\n\n"
        f"Command: `{command_line}`\n\n"
        f"## Machine\n\n{machine}\n\n"
        f"## Requests: POST /predict, {args.duration:g} s per cell after {args.warmup:g} s "
        f"of warm-up, fresh database and server per cell\n\n"
        f"{report.results_table(cells)}\n\n"
        f"## Batch scoring in process: {args.batch_rows:,} rows, median of "
        f"{args.batch_repeats}\n\n"
        f"{report.batch_table(batches)}\n\n"
        f"## Targets\n\n" + "\n".join(_targets(args, database_names, cells)) + "\n"
    )


def _footer(notes: list[str], cells: list[Cell], timings: dict[str, float]) -> str:
    lines = [*report.code_changes(cells), *notes, *report.problems(cells)]
    text = ""
    if lines:
        text += "\n## Notes\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"
    logs = report.server_logs(cells)
    if logs:
        text += f"\n## Server logs of cells with errors\n\n{logs}\n"
    spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
    return text + f"\nTimings: {spent}.\n"


def _timed(timings: dict[str, float], name: str, step: Callable[[], T]) -> T:
    began = time.monotonic()
    try:
        return step()
    finally:
        timings[name] = time.monotonic() - began


def _names(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated subset of {','.join(allowed)}, got {text!r}"
            )
        return names

    return parse


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected integers like 1,8,32, got {text!r}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels must be >= 1, got {text!r}")
    return counts


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every cleanup block runs."""


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def _progress(message: str) -> None:
    # Progress goes to stderr so stdout carries only the report.
    print(message, file=sys.stderr, flush=True)
