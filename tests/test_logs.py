"""Log lines: one JSON object per line on stdout, whole even when threads write at once."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

from serving.logs import StdoutHandler


def test_concurrent_short_and_long_lines_stay_whole(capfd):
    logger = logging.getLogger("tests.logs")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = StdoutHandler()
    logger.addHandler(handler)
    try:

        def write(i: int) -> None:
            text = "x" * (20_000 if i % 10 == 0 else 10)
            logger.info("line %s", i, extra={"payload": text, "observation_id": i})

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(write, range(400)))
    finally:
        logger.removeHandler(handler)
    lines = capfd.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["observation_id"] for r in records) == list(range(400))
    assert all(r["message"] == f"line {r['observation_id']}" for r in records)
    assert {len(r["payload"]) for r in records} == {10, 20_000}
