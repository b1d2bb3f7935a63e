"""gunicorn --preload with 4 workers: no answer carries another request's result."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import requests

from serving.model.runtime import LoadedModel
from tests.live import REPO_ROOT, gunicorn

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COLUMNS = ["Age", "Cabin", "Embarked", "Fare", "Parch", "Pclass", "Sex", "SibSp"]


def passengers() -> list[dict]:
    frame = pd.read_csv(REPO_ROOT / "data" / "titanic.csv")[COLUMNS]
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [
        {k: (float(v) if k in ("Age", "Fare") and v is not None else v) for k, v in r.items()}
        for r in records
    ]


def test_2000_concurrent_requests_under_preload_get_their_own_answers(database_url, tmp_path):
    rows = passengers()
    model = LoadedModel.load(REPO_ROOT, "default")
    expected = [s.proba for s in model.predict(rows)]
    jobs = [(f"fork-{i}", i % len(rows)) for i in range(2000)]
    with gunicorn(database_url, tmp_path, workers=4, extra_args=["--preload"]) as server:
        session = requests.Session()

        def send(job: tuple[str, int]) -> tuple[str, int, dict]:
            observation_id, row = job
            body = {"id": observation_id, "observation": rows[row]}
            response = session.post(f"{server.url}/predict", data=json.dumps(body), timeout=60)
            return observation_id, row, response.json() | {"_status": response.status_code}

        with ThreadPoolExecutor(max_workers=64) as pool:
            results = list(pool.map(send, jobs))

        # Updates read rows back from the database: a crossed connection would show here.
        def update(job: tuple[str, int]) -> tuple[str, int, dict]:
            observation_id, row = job
            response = session.post(
                f"{server.url}/update",
                data=json.dumps({"id": observation_id, "true_class": 1}),
                timeout=60,
            )
            return observation_id, row, response.json() | {"_status": response.status_code}

        with ThreadPoolExecutor(max_workers=64) as pool:
            updates = list(pool.map(update, jobs[:500]))

    wrong = [
        (oid, body)
        for oid, row, body in results + updates
        if body["_status"] != 200
        or body["observation_id"] != oid
        or not math.isclose(body["proba"], expected[row], abs_tol=1e-12)
        # /update answers carry no observation while client authentication is off.
        or body.get("observation", rows[row]) != rows[row]
    ]
    assert wrong == []
