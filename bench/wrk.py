"""Drive a server with wrk and bench/check.lua, and read wrk's report."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
from pathlib import Path

from bench.load import LoadFailed, LoadResult

CHECK_SCRIPT = Path(__file__).with_name("check.lua")
# Generous, so a slow baseline shows up as high latency rather than as dropped requests.
REQUEST_TIMEOUT = "30s"

_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([\d.]+)(us|ms|s|m|h)"
_REQUESTS = re.compile(r"^\s*(\d+) requests in " + _TIME, re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_P50 = re.compile(r"^\s+50(?:\.0+)?%\s+" + _TIME, re.MULTILINE)
_P99 = re.compile(r"^\s+99(?:\.0+)?%\s+" + _TIME, re.MULTILINE)
_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_CHECK = re.compile(r"^bench-check ok=(\d+) non2xx=(\d+) wrong=(\d+)", re.MULTILINE)


def command(url: str, rows_file: Path, concurrency: int, seconds: float, id_base: int) -> list[str]:
    """The wrk command line: one thread per connection, which check.lua relies on."""
    return [
        "wrk",
        f"--threads={concurrency}",
        f"--connections={concurrency}",
        f"--duration={max(1, math.ceil(seconds))}s",
        f"--timeout={REQUEST_TIMEOUT}",
        "--latency",
        f"--script={CHECK_SCRIPT}",
        f"{url}/predict",
        "--",
        str(rows_file),
        str(id_base),
    ]


def run(url: str, rows_file: Path, concurrency: int, seconds: float, id_base: int) -> LoadResult:
    """Run wrk for `seconds` at `concurrency` and return what it measured."""
    argv = command(url, rows_file, concurrency, seconds, id_base)
    # Its own session, so Ctrl-C reaches only the harness, which then stops wrk itself.
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired as exc:
        raise LoadFailed(f"wrk did not finish within {seconds + 60:.0f}s") from exc
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process.returncode != 0:
        raise LoadFailed(f"wrk exited with status {process.returncode}:\n{stdout}\n{stderr}")
    return parse(stdout)


def parse(report: str) -> LoadResult:
    """Read req/s, p50, p99, socket errors and check.lua's counts from wrk's output."""
    requests = _search(_REQUESTS, report, "the request count")
    rate = _search(_RATE, report, "Requests/sec")
    p50 = _search(_P50, report, "the 50% latency (was --latency given?)")
    p99 = _search(_P99, report, "the 99% latency (was --latency given?)")
    check = _search(_CHECK, report, "check.lua's bench-check line")
    socket = _SOCKET.search(report)
    return LoadResult(
        requests=int(requests.group(1)),
        seconds=_milliseconds(requests.group(2), requests.group(3)) / 1e3,
        requests_per_second=float(rate.group(1)),
        p50_ms=_milliseconds(p50.group(1), p50.group(2)),
        p99_ms=_milliseconds(p99.group(1), p99.group(2)),
        non2xx=int(check.group(2)),
        wrong=int(check.group(3)),
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
    )


def _search(pattern: re.Pattern[str], report: str, what: str) -> re.Match[str]:
    match = pattern.search(report)
    if match is None:
        raise LoadFailed(f"cannot find {what} in wrk's output:\n{report}")
    return match


def _milliseconds(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]
