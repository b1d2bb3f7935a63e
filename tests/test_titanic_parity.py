"""Over HTTP, every Titanic row gets exactly the probability the pipeline gives the CSV frame."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import requests

from serving.model.runtime import LoadedModel
from tests.live import REPO_ROOT, gunicorn

# The model's answers, row for row: the database is incidental.
pytestmark = [pytest.mark.e2e, pytest.mark.any_database]


def test_all_891_rows_match_predict_proba_on_the_csv_frame(database_url, tmp_path):
    model = LoadedModel.load(REPO_ROOT, "default")
    frame = pd.read_csv(REPO_ROOT / "data" / "titanic.csv")
    expected = model.pipeline.predict_proba(frame[model.columns])[:, 1]
    # NaN is written as the tutorial wrote it; json.dumps spells a float NaN that way.
    bodies = [
        json.dumps({"id": int(pid), "observation": obs})
        for pid, obs in zip(
            frame["PassengerId"], frame[model.columns].to_dict("records"), strict=True
        )
    ]
    assert len(bodies) == 891
    with gunicorn(database_url, tmp_path, workers=2) as server:
        session = requests.Session()
        answers = [session.post(f"{server.url}/predict", data=b, timeout=30) for b in bodies]
    assert [a.status_code for a in answers] == [200] * 891
    mismatched = [
        (i, a.json()["proba"], expected[i])
        for i, a in enumerate(answers)
        if abs(a.json()["proba"] - expected[i]) > 1e-12
    ]
    assert mismatched == []
