"""A pure-Python load generator, used only when wrk is missing.

Same requests and checks as bench/check.lua: one keep-alive connection per thread, unique ids,
every answer compared with the expected probability. Its own CPU use (and the GIL) caps the
rate it can show, so the ratios it reports understate a fast server.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.load import LoadResult
from bench.workload import TOLERANCE, Workload

TIMEOUT_SECONDS = 30
HEADERS = {"Content-Type": "application/json"}


@dataclass
class _Tally:
    """One thread's counts, merged after the run."""

    latencies_ms: list[float] = field(default_factory=list)
    non2xx: int = 0
    wrong: int = 0
    socket_errors: int = 0


def run(url: str, workload: Workload, concurrency: int, seconds: float, id_base: int) -> LoadResult:
    """Send requests from `concurrency` threads for `seconds` and return what they measured."""
    bodies = workload.bodies
    tallies = [_Tally() for _ in range(concurrency)]
    start = time.perf_counter()
    deadline = start + seconds
    threads = [
        threading.Thread(
            target=_drive,
            args=(url, bodies, workload.expected, number, id_base, deadline, tallies[number - 1]),
            daemon=True,
        )
        for number in range(1, concurrency + 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    latencies = sorted(ms for tally in tallies for ms in tally.latencies_ms)
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        requests_per_second=len(latencies) / elapsed if elapsed else 0.0,
        p50_ms=_percentile(latencies, 50),
        p99_ms=_percentile(latencies, 99),
        non2xx=sum(t.non2xx for t in tallies),
        wrong=sum(t.wrong for t in tallies),
        socket_errors=sum(t.socket_errors for t in tallies),
    )


def _drive(url, bodies, expected, number, id_base, deadline, tally: _Tally) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_SECONDS)
    sent = 0
    try:
        while time.perf_counter() < deadline:
            sent += 1
            row = (number * 101 + sent) % len(bodies)
            body = f'{{"id":{id_base + number * 10**9 + sent},"observation":{bodies[row]}}}'
            began = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, HEADERS)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                tally.socket_errors += 1
                conn.close()  # the next request reconnects
                continue
            tally.latencies_ms.append((time.perf_counter() - began) * 1e3)
            if not 200 <= response.status <= 299:
                tally.non2xx += 1
            elif not _right(payload, expected[row]):
                tally.wrong += 1
    finally:
        conn.close()


def _right(payload: bytes, expected: float) -> bool:
    try:
        proba = json.loads(payload)["proba"]
        return abs(float(proba) - expected) <= TOLERANCE
    except (ValueError, KeyError, TypeError):
        return False


def _percentile(sorted_values: list[float], percent: float) -> float:
    if not sorted_values:
        return math.nan
    # Nearest rank, as wrk reports it.
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]
