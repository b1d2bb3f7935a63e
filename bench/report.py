"""The markdown report: the command, the machine, the results table and the targets."""

from __future__ import annotations

import math
import os
import platform
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from importlib import metadata
from itertools import pairwise
from pathlib import Path

from bench import revision
from bench.batch import BatchResult
from bench.load import LoadResult
from bench.models import FOREST, LOGREG
from bench.servers import BASELINE, FLOOR, OURS

PACKAGES = ("flask", "peewee", "scikit-learn", "pandas", "numpy", "gunicorn", "psycopg2-binary")

# Issue 17 (second round) in the default configuration: minimum ours/baseline req/s at
# concurrency 32 (was 10x and 20x); maximum p50 at concurrency 1.
RATIO_TARGETS = {LOGREG: 15.0, FOREST: 25.0}
RATIO_CONCURRENCY = 32
P50_TARGETS_MS = {LOGREG: 2.0, FOREST: 3.0}
P50_CONCURRENCY = 1
# Against the floor (Flask + the same gunicorn, a constant answer): at least this share of its
# req/s at RATIO_CONCURRENCY, and a p50 at P50_CONCURRENCY at most this multiple of its p50.
FLOOR_THROUGHPUT_SHARE = 0.6
FLOOR_P50_MULTIPLE = 1.5


@dataclass(frozen=True)
class Cell:
    """One measured (or failed) run: a server with a model and a database at a concurrency."""

    model: str
    database: str
    server: str
    concurrency: int
    result: LoadResult | None = None
    error: str | None = None
    # The server's last log lines, kept when it answered non-2xx or wrong.
    server_log: str | None = None
    # revision.fingerprint() of the served files when the cell started.
    code: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        """What a baseline and an ours cell share when they are compared."""
        return (self.model, self.database, self.concurrency)

    @property
    def clean(self) -> bool:
        """Measured, with every request answered 2xx and right."""
        r = self.result
        return r is not None and r.non2xx == 0 and r.wrong == 0 and r.socket_errors == 0


def ratio(cell: Cell, cells: list[Cell], against: str = BASELINE) -> float | None:
    """Ours over the baseline's (or the floor's) req/s at the same concurrency: the same
    model and database for the baseline; the floor has neither, so any of its cells."""
    if cell.server != OURS or cell.result is None:
        return None
    other = _counterpart(cell, cells, against)
    if other is None or other.result is None:
        return None
    base = other.result.requests_per_second
    return cell.result.requests_per_second / base if base else math.inf


def _counterpart(cell: Cell, cells: list[Cell], server: str) -> Cell | None:
    for other in cells:
        if other.server != server or other.result is None:
            continue
        if other.concurrency == cell.concurrency and (server == FLOOR or other.key == cell.key):
            return other
    return None


def results_table(cells: list[Cell]) -> str:
    """The main table, one row per cell, in the order they ran."""
    header = [
        "model",
        "database",
        "server",
        "concurrency",
        "req/s",
        "p50 ms",
        "p99 ms",
        "non-2xx",
        "wrong",
        "ratio to baseline",
        "share of floor",
    ]
    rows = []
    for cell in cells:
        r = cell.result
        if r is None:
            measured = ["failed", "-", "-", "-", "-", "-"]
        else:
            times = ratio(cell, cells)
            share = ratio(cell, cells, FLOOR)
            measured = [
                f"{r.requests_per_second:,.0f}",
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                str(r.non2xx),
                "unchecked" if cell.server == FLOOR else str(r.wrong),
                "-" if times is None else f"{times:.1f}x",
                "-" if share is None else f"{share:.0%}",
            ]
        rows.append([cell.model, cell.database, cell.server, str(cell.concurrency), *measured])
    return _markdown(header, rows)


def batch_table(results: dict[str, BatchResult]) -> str:
    """Rows per second of in-process batch scoring, one row per model."""
    header = ["model", "rows", "pipeline.predict_proba rows/s", "ours rows/s", "ratio", "agree"]
    rows = [
        [
            model,
            f"{b.rows:,}",
            f"{b.vectorised_rows_per_second:,.0f}",
            f"{b.ours_rows_per_second:,.0f}",
            f"{b.ratio:.2f}x",
            "yes" if b.agrees else f"NO (max diff {b.max_abs_difference:.2e})",
        ]
        for model, b in results.items()
    ]
    return _markdown(header, rows)


def targets(cells: list[Cell], models: list[str], databases: list[str]) -> list[str]:
    """One line per target: PASS, FAIL or NOT MEASURED, with the number behind it."""
    lines = []
    for model in models:
        for database in databases:
            want = RATIO_TARGETS[model]
            ours = _find(cells, model, database, OURS, RATIO_CONCURRENCY)
            got = ratio(ours, cells) if ours else None
            lines.append(
                _verdict(
                    f"{model}, {database}, concurrency {RATIO_CONCURRENCY}: "
                    f"ours >= {want:g}x baseline req/s",
                    None if got is None else got >= want,
                    None if got is None else f"{got:.1f}x",
                )
            )
            want_ms = P50_TARGETS_MS[model]
            ours = _find(cells, model, database, OURS, P50_CONCURRENCY)
            p50 = ours.result.p50_ms if ours and ours.result else None
            lines.append(
                _verdict(
                    f"{model}, {database}, concurrency {P50_CONCURRENCY}: "
                    f"ours p50 <= {want_ms:g} ms",
                    None if p50 is None else p50 <= want_ms,
                    None if p50 is None else f"{p50:.2f} ms",
                )
            )
            lines.extend(_floor_targets(cells, model, database))
    ours_cells = [c for c in cells if c.server == OURS]
    unclean = [c for c in ours_cells if not c.clean]
    lines.append(
        _verdict(
            "ours: 0 non-2xx, 0 wrong, 0 socket errors in every cell",
            None if not ours_cells else not unclean,
            f"{len(ours_cells) - len(unclean)}/{len(ours_cells)} cells clean",
        )
    )
    return lines


def _floor_targets(cells: list[Cell], model: str, database: str) -> list[str]:
    ours = _find(cells, model, database, OURS, RATIO_CONCURRENCY)
    share = ratio(ours, cells, FLOOR) if ours else None
    lines = [
        _verdict(
            f"{model}, {database}, concurrency {RATIO_CONCURRENCY}: "
            f"ours >= {FLOOR_THROUGHPUT_SHARE:.0%} of the floor's req/s",
            None if share is None else share >= FLOOR_THROUGHPUT_SHARE,
            None if share is None else f"{share:.0%}",
        )
    ]
    ours = _find(cells, model, database, OURS, P50_CONCURRENCY)
    floor = _counterpart(ours, cells, FLOOR) if ours else None
    multiple = None
    if ours and ours.result and floor and floor.result and floor.result.p50_ms:
        multiple = ours.result.p50_ms / floor.result.p50_ms
    lines.append(
        _verdict(
            f"{model}, {database}, concurrency {P50_CONCURRENCY}: "
            f"ours p50 <= {FLOOR_P50_MULTIPLE:g}x the floor's",
            None if multiple is None else multiple <= FLOOR_P50_MULTIPLE,
            None if multiple is None else f"{multiple:.2f}x",
        )
    )
    return lines


def problems(cells: list[Cell]) -> list[str]:
    """Failed cells and cells with errors, spelled out (these never pass silently)."""
    lines = []
    for cell in cells:
        name = _name(cell)
        if cell.error:
            lines.append(f"{name}: FAILED: {cell.error}")
        elif cell.result and cell.result.socket_errors:
            lines.append(
                f"{name}: {cell.result.socket_errors} socket errors (connect, read, write or "
                f"timeout: requests that got no status at all)"
            )
    return lines


def code_changes(cells: list[Cell]) -> list[str]:
    """A warning per change of the served code between cells, since their numbers differ."""
    lines = []
    for before, after in pairwise(cells):
        if before.code and after.code and before.code != after.code:
            lines.append(
                f"WARNING: the served code changed during the run ({before.code} -> "
                f"{after.code}) between {_name(before)} and {_name(after)}; compare only cells "
                f"measured on the same code"
            )
    return lines


def server_logs(cells: list[Cell]) -> str:
    """The log tails kept from servers that answered errors, as fenced blocks."""
    blocks = [f"{_name(cell)}:\n\n```\n{cell.server_log}\n```" for cell in cells if cell.server_log]
    return "\n\n".join(blocks)


def machine_info(generator: str, postgres_version: str | None) -> list[str]:
    """Where and with what the numbers were measured."""
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    return [
        f"nproc: {_nproc()} (os.cpu_count {os.cpu_count()}); cpu: {_cpu_model()}",
        f"memory: {_memory()}; os: {platform.platform()}",
        f"python: {platform.python_version()} ({platform.python_implementation()})",
        f"packages: {versions}",
        f"sqlite: {sqlite3.sqlite_version}; postgresql server: {postgres_version or 'not used'}",
        f"load generator: {generator} ({_wrk_version() if generator == 'wrk' else 'stdlib'})",
        f"code: {revision.git_revision()}, served files {revision.fingerprint()}",
    ]


def _name(cell: Cell) -> str:
    return f"{cell.model} {cell.database} {cell.server} c={cell.concurrency}"


def _find(cells: list[Cell], model: str, database: str, server: str, conc: int) -> Cell | None:
    for cell in cells:
        if (cell.model, cell.database, cell.server, cell.concurrency) == (
            model,
            database,
            server,
            conc,
        ):
            return cell
    return None


def _verdict(what: str, passed: bool | None, measured: str | None) -> str:
    status = "NOT MEASURED" if passed is None else "PASS" if passed else "FAIL"
    return f"- {status}: {what}" + (f" (measured {measured})" if measured else "")


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    separator = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(header), separator, *(line(r) for r in rows)])


def _nproc() -> int:
    # The CPUs this process may run on, which is what `nproc` prints.
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _wrk_version() -> str:
    if shutil.which("wrk") is None:
        return "not installed"
    # `wrk -v` prints its version line and exits non-zero; only the first line matters.
    completed = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (completed.stdout or completed.stderr).strip().splitlines()
    return first[0] if first else "unknown version"
