"""KServe's own client, InferenceRESTClient, against a live gunicorn on the income model:
answers within 1e-9 of the pipeline's predict_proba, and every row in the prediction log.

The client cannot be installed beside the project (every kserve release that has it needs
python-dateutil<3 and pandas<3 or numpy<2), so it runs from its own virtualenv,
built by tools/kserve-client/build-venv from pinned requirements into the user's cache and
reused while they do not change (.ci/run builds it before the tests). When it cannot be
built (no package index), the test is skipped with the reason, except under CI (CI=true),
where that is a failure."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from serving.model.runtime import LoadedModel
from tests.conftest import REPO_ROOT
from tests.live import gunicorn
from tests.test_v2_live import INCOME, ROWS, holdout

pytestmark = pytest.mark.e2e

TOOL = REPO_ROOT / "tools" / "kserve-client"


@pytest.fixture(scope="module")
def kserve_python() -> Path:
    """The kserve venv's python, built (or reused) from tools/kserve-client/requirements.txt."""
    try:
        built = subprocess.run(
            [str(TOOL / "build-venv")], capture_output=True, text=True, timeout=1200
        )
        problem = None if built.returncode == 0 else built.stderr.strip()[-1500:]
    except subprocess.TimeoutExpired:
        problem = "building it took more than 20 minutes"
    if problem is not None:
        reason = f"KServe's client venv could not be built (tools/kserve-client): {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return LoadedModel.load(INCOME, "income", "1", compile=False)


def kserve_infer(
    python: Path, url: str, rows: list[dict[str, Any]], request_id: str, *flags: str
) -> dict[str, Any]:
    """The client script's answer: it scores `rows` with InferenceRESTClient."""
    done = subprocess.run(
        [str(python), str(TOOL / "infer.py"), url, "income", "-", "--id", request_id, *flags],
        input=json.dumps(rows),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_kserve_client_infers_as_the_pipeline_and_the_rows_are_logged(
    kserve_python: Path, database_url: str, tmp_path: Path, model: LoadedModel
):
    frame = holdout(model)
    expected = model.pipeline.predict_proba(model.columns_frame(frame.to_dict("list")))
    classes = [str(c) for c in model.pipeline.classes_]
    # JSON values, as a user's rows would be (ints, not numpy ints).
    rows = json.loads(frame.to_json(orient="records"))
    with gunicorn(database_url, tmp_path, workers=2) as server:
        # Its defaults: binary tensor data in, JSON out.
        answer = kserve_infer(kserve_python, server.url, rows, "kserve")
        assert answer["content_type"] == "application/json"
        # Binary outputs asked (binary_data_output): read from the binary framing.
        binary = kserve_infer(kserve_python, server.url, rows, "kserve-bin", "--binary-outputs")
        assert binary["content_type"] == "application/octet-stream"

        for got, name in ((answer, "kserve"), (binary, "kserve-bin")):
            assert got["id"] == name
            outputs = got["outputs"]
            np.testing.assert_allclose(outputs["probabilities"], expected, rtol=0, atol=1e-9)
            np.testing.assert_allclose(outputs["proba"], expected[:, 1], rtol=0, atol=1e-9)
            assert outputs["prediction"] == [classes[k] for k in expected.argmax(axis=1)]
            assert outputs["observation_id"] == [f"{name}-{i}" for i in range(ROWS)]
            assert outputs["model_version"] == ["1"] * ROWS

        # Every row is in the prediction log: /update finds it, with what was answered.
        for name in ("kserve", "kserve-bin"):
            for i in range(ROWS):
                response = requests.post(
                    f"{server.url}/api/v1/income/update",
                    json={"id": f"{name}-{i}", "true_class": ">50K"},
                    timeout=30,
                )
                assert response.status_code == 200, response.text
                stored = response.json()
                assert stored["model_version"] == "1"
                assert stored["proba"] == pytest.approx(expected[i][1], abs=1e-9)
