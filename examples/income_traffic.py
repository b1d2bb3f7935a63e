"""Play rows of data/adult_test.csv to the income endpoint as live traffic, then send their
true incomes as ground truth arriving later.

    .venv/bin/python examples/income_traffic.py --first 0 --rows 3000

Row n of the file is sent with the id `adult-test-<n>` (n counts data rows from 0), so a run
is repeatable: the same ids land on the same A/B arms, and a second run replays the stored
answers. Only the standard library: it runs with any Python 3.11.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

DATA = Path(__file__).resolve().parent.parent / "data" / "adult_test.csv"
TARGET = "income"
PER_REQUEST = 500


def read_rows(first: int, count: int) -> list[tuple[str, dict, str]]:
    """(id, observation, true income) for `count` data rows starting at row `first`."""
    rows = []
    with DATA.open(newline="") as handle:
        for n, record in enumerate(csv.DictReader(handle)):
            if n < first:
                continue
            if len(rows) == count:
                break
            truth = record.pop(TARGET)
            observation = {k: int(v) if v.lstrip("-").isdigit() else v for k, v in record.items()}
            rows.append((f"adult-test-{n}", observation, truth))
    return rows


def post(connection: http.client.HTTPConnection, path: str, body: object) -> dict | list:
    """POST JSON on the kept-alive connection; exit with the server's answer on an error."""
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status >= 400:
        sys.exit(f"{path} answered {response.status}: {answer}")
    return answer


def main() -> None:
    """Send the predictions in batches of 500, then one update per row; print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--first", type=int, default=0, help="first data row (from 0)")
    parser.add_argument("--rows", type=int, default=3000, help="how many rows")
    # The service `make run` started: it listens on PORT, 5000 unless PORT says otherwise.
    default_url = f"http://localhost:{os.environ.get('PORT') or 5000}"
    parser.add_argument("--url", default=default_url, help=f"the service ({default_url})")
    parser.add_argument("--endpoint", default="income")
    args = parser.parse_args()

    rows = read_rows(args.first, args.rows)
    url = urlsplit(args.url)
    connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=60)
    base = f"/api/v1/{args.endpoint}"
    arms: Counter[str] = Counter()
    for start in range(0, len(rows), PER_REQUEST):
        chunk = rows[start : start + PER_REQUEST]
        answer = post(
            connection, f"{base}/predict/batch", [{"id": i, "observation": o} for i, o, _ in chunk]
        )
        for result in answer["results"]:
            if result["status"] != 200:
                sys.exit(f"row {result.get('id')} was refused: {result}")
            arms[result.get("arm") or f"version {result['model_version']}"] += 1
    for observation_id, _, truth in rows:
        post(connection, f"{base}/update", {"id": observation_id, "true_class": truth})
    connection.close()
    spread = ", ".join(f"{name}: {n}" for name, n in sorted(arms.items()))
    print(f"{len(rows)} predictions ({spread}) and {len(rows)} true incomes sent")


if __name__ == "__main__":
    main()
