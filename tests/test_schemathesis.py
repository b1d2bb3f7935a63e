"""Schemathesis against a live gunicorn server on 127.0.0.1: every operation of /openapi.json,
generated valid and invalid requests, admin operations with the admin token. No 5xx, every
answer conforms to the document, every status is documented, invalid input is refused.

It runs on a throwaway database (the suite's SQLite file or PostgreSQL test database): admin
operations change statuses, start and stop tests and shadows there, and nowhere else. The
bundled models are only read: a version the retrain route registers goes to the test's own
models folder. Schemathesis talks to the server the test started and nothing else: the
document has no `servers`, so every request goes to the URL it was loaded from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import using_postgres
from tests.live import gunicorn, linked_models

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
ADMIN_TOKEN = "schemathesis-admin-token"
# Per operation; with the coverage phase's own cases this is about 3,600 requests, under a
# minute on two cores.
MAX_EXAMPLES = 30
# The PostgreSQL pass repeats the run to find what PostgreSQL refuses and SQLite takes (NUL
# characters, integers past 64 bits, over-long text): the coverage phase's boundary values find
# those, with a dozen random cases per operation beside them; the full fuzz is the SQLite pass's.
MAX_EXAMPLES_POSTGRES = 12
SEED = 20261124
# The nine /v2 operations added about a fifth to the run; room for a busy machine.
TIMEOUT_SECONDS = 420

# Rules the document states in words but JSON Schema cannot express. Each exemption is one
# check on the operations it names; every other check still runs on them.
CONFIG = """\
# A valid body depends on the endpoint in the path ({endpoint}): the generic operations take
# any object as the observation. Each endpoint's own copy (/api/v1/income/predict...) has its
# model's exact schema and keeps the check. v2 infer takes any tensors in the document; the
# server wants exactly the model's columns.
[[operations]]
include-operation-id-regex = "^(predict|update|predict_batch|infer|infer_version)$"
checks.positive_data_acceptance.enabled = false

# A version's readiness is 503 {"ready": false} once it is archived (the protocol's answer, as
# KServe gives it), which the fuzzed status changes do; tests/test_v2.py checks those answers.
[[operations]]
include-operation-id-regex = "^(model_ready|version_ready)$"
checks.not_a_server_error.enabled = false

# Cross-field and range rules: version_a must differ from version_b (start_test); since must be
# before until (performance); the window is 1 to 100000 predictions or 1s to 366d (drift and the
# dashboard); a CSV upload needs a header with `id` and the model's columns (batches).
[[operations]]
include-operation-id-regex = "(start_test|performance|drift|dashboard_endpoint|predict_batch)"
checks.positive_data_acceptance.enabled = false

# A retrain needs min_labelled labelled rows (422 with how many there are), a holdout as a
# fraction or a count but not both, an A/B split between 0 and 1, since before until; its
# gate may refuse the candidate (409).
[[operations]]
include-operation-id-regex = "^retrain$"
checks.positive_data_acceptance.enabled = false

# A published version's files must be a model that loads, with model.json pinning the
# others' sha256: bytes no schema can describe (publish_version).
[[operations]]
include-operation-id-regex = "^publish_version$"
checks.positive_data_acceptance.enabled = false

# A batch answers a row the model refuses with that row's own error and status inside a 200
# (tests/test_openapi.py checks the per-row error); a batch over MAX_BATCH_ROWS rows is 413.
[[operations]]
include-operation-id-regex = "predict_batch"
checks.negative_data_rejection.enabled = false
"""


def run_schemathesis(url: str, workdir: Path, max_examples: int = MAX_EXAMPLES) -> dict:
    """Run the schemathesis CLI on the server's document; its JSON report."""
    # Every check runs: schemathesis enables all of them by default (`--checks` on the command
    # line would override the per-operation exemptions of CONFIG).
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    report = workdir / "schemathesis-report.json"
    argv = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(SEED),
        "--header",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        "--request-timeout",
        "30",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    result = subprocess.run(
        argv,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    (workdir / "schemathesis.out").write_text(result.stdout + result.stderr)
    assert report.exists(), f"schemathesis wrote no report:\n{result.stdout}\n{result.stderr}"
    return {**json.loads(report.read_text()), "output": result.stdout + result.stderr}


def test_schemathesis_finds_nothing(database_url: str, tmp_path: Path) -> None:
    # The retrain route may register a version: into a models folder of the test's own.
    models = linked_models(tmp_path / "models")
    env = {"ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "WARNING", "MODELS_DIR": str(models)}
    with gunicorn(database_url, tmp_path, workers=2, env=env) as server:
        document = requests.get(f"{server.url}/openapi.json", timeout=10).json()
        # Requests go where the document was loaded from, never to a `servers` entry.
        assert "servers" not in document
        examples = MAX_EXAMPLES_POSTGRES if using_postgres() else MAX_EXAMPLES
        report = run_schemathesis(server.url, tmp_path, examples)
        log = server.log()

    cases = report["test_cases"]
    summary = (
        f"schemathesis: {cases['generated']} cases, {len(report['failures'])} failures, "
        f"{len(report['errors'])} errors in {report['running_time']:.0f}s"
    )
    print(summary)
    output = report["output"][-20_000:]
    assert report["complete"], f"{summary}\n{output}"
    assert report["failures"] == [], f"{summary}\n{output}"
    assert report["errors"] == [], f"{summary}\n{output}"
    # Every operation was exercised, with enough cases to mean something.
    operations = sum(1 for path in document["paths"].values() for _ in path)
    assert cases["generated"] >= 10 * operations, summary
    assert "unhandled error" not in log, log[-5000:]
