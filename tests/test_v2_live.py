"""The Open Inference Protocol against a live gunicorn with a real client, tritonclient[http]:
answers equal to the income pipeline's own predict_proba, and the rows in the prediction log.

KServe's InferenceRESTClient is not used: every kserve release that has it (0.13 to 0.21)
requires python-dateutil<3 and pandas<3 or numpy<2, and this project pins python-dateutil
4.0.0, pandas 3.1.1 and numpy 2.4.6."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from serving.runtime import LoadedModel
from tests.conftest import REPO_ROOT
from tests.live import gunicorn

pytestmark = pytest.mark.e2e

INCOME = REPO_ROOT / "models" / "income" / "1"
ROWS = 6


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return LoadedModel.load(INCOME, "income", "1", compile=False)


def holdout(model: LoadedModel, complete: bool = True) -> pd.DataFrame:
    """The first rows of the holdout set, the model's columns only; with `complete`, only
    rows without a missing value (tritonclient's JSON encoder sends a missing text as the
    text "None" or "nan", not as null)."""
    frame = pd.read_csv(REPO_ROOT / "data" / "adult_test.csv")[model.columns]
    return (frame.dropna() if complete else frame).head(ROWS).reset_index(drop=True)


def triton_inputs(frame: pd.DataFrame, binary: bool = False) -> list[triton.InferInput]:
    """One InferInput per column, as a tritonclient user builds them from a DataFrame."""
    inputs = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_integer_dtype(column):
            array, datatype = column.to_numpy(dtype=np.int64), "INT64"
        else:
            array, datatype = column.to_numpy(dtype=object), "BYTES"
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_tritonclient_infers_as_the_pipeline_and_the_rows_are_logged(
    database_url: str, tmp_path: Path, model: LoadedModel
):
    frame = holdout(model)
    expected = model.pipeline.predict_proba(model.columns_frame(frame.to_dict("list")))
    with gunicorn(database_url, tmp_path, workers=2) as server:
        client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("income")
        assert client.is_model_ready("income", "2")
        assert client.get_server_metadata()["name"] == "sklearn-serving"
        metadata = client.get_model_metadata("income")
        assert [i["name"] for i in metadata["inputs"]] == model.columns

        outputs = [
            triton.InferRequestedOutput(name, binary_data=False)
            for name in ("probabilities", "prediction", "observation_id")
        ]
        result = client.infer("income", triton_inputs(frame), request_id="live", outputs=outputs)
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (ROWS, 2)
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-9)
        classes = result.get_output("probabilities")["parameters"]["classes"]
        assert classes == [str(c) for c in model.pipeline.classes_]
        labels = [str(v) for v in result.as_numpy("prediction")]
        assert labels == [classes[k] for k in expected.argmax(axis=1)]
        ids = [str(v) for v in result.as_numpy("observation_id")]
        assert ids == [f"live-{i}" for i in range(ROWS)]
        assert result.get_response()["id"] == "live"

        # Without requested outputs tritonclient asks for binary ones; JSON comes back, and
        # it reads it all the same. One row: the request id is the observation id.
        single = client.infer("income", triton_inputs(frame.head(1)), request_id="live-one")
        np.testing.assert_allclose(single.as_numpy("probabilities"), expected[:1], atol=1e-9)
        assert single.get_response()["model_version"] == "1"

        # Every row is in the prediction log: /update finds it, with what was answered.
        for i, observation_id in enumerate([*ids, "live-one"]):
            response = requests.post(
                f"{server.url}/api/v1/income/update",
                data=json.dumps({"id": observation_id, "true_class": ">50K"}),
                timeout=30,
            )
            assert response.status_code == 200, response.text
            stored = response.json()
            assert stored["model_version"] == "1"
            assert stored["proba"] == pytest.approx(expected[i % ROWS][1], abs=1e-9)

        # The same request again replays the stored answers; binary tensors are refused
        # with the way out.
        again = client.infer("income", triton_inputs(frame), request_id="live", outputs=outputs)
        np.testing.assert_array_equal(again.as_numpy("probabilities"), probabilities)
        with pytest.raises(InferenceServerException, match="binary_data=False"):
            client.infer("income", triton_inputs(frame, binary=True), request_id="bin")
        with pytest.raises(InferenceServerException, match="no endpoint named 'nope'"):
            client.get_model_metadata("nope")

        # Missing values are JSON nulls, as in /predict: the holdout's rows with gaps too.
        gaps = holdout(model, complete=False)
        assert gaps.isna().any().any()
        body = {
            "id": "gaps",
            "inputs": [
                {
                    "name": name,
                    "datatype": "INT64" if pd.api.types.is_integer_dtype(gaps[name]) else "BYTES",
                    "shape": [ROWS],
                    "data": gaps[name].astype(object).where(gaps[name].notna(), None).tolist(),
                }
                for name in gaps.columns
            ],
        }
        answer = requests.post(f"{server.url}/v2/models/income/infer", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        found = {o["name"]: o for o in answer.json()["outputs"]}["probabilities"]
        wanted = model.pipeline.predict_proba(model.columns_frame(gaps.to_dict("list")))
        np.testing.assert_allclose(
            np.reshape(found["data"], found["shape"]), wanted, rtol=0, atol=1e-9
        )
