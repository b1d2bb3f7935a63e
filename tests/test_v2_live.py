"""The Open Inference Protocol against a live gunicorn with a real client, tritonclient[http],
used with its defaults (binary tensor data in, binary outputs asked) and in JSON: answers
equal to the income pipeline's own predict_proba, and the rows in the prediction log.

KServe's InferenceRESTClient runs from its own virtualenv: tests/test_v2_kserve.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from serving.model.runtime import LoadedModel
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


def triton_inputs(frame: pd.DataFrame, binary: bool = True) -> list[triton.InferInput]:
    """One InferInput per column, as a tritonclient user builds them from a DataFrame
    (binary tensor data unless `binary` is False)."""
    inputs = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_integer_dtype(column):
            array, datatype = column.to_numpy(dtype=np.int64), "INT64"
        else:
            array, datatype = column.to_numpy(dtype=object), "BYTES"
        tensor = triton.InferInput(name, list(array.shape), datatype)
        if binary:
            tensor.set_data_from_numpy(array)  # tritonclient's default: binary_data=True
        else:
            tensor.set_data_from_numpy(array, binary_data=False)
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
        server_metadata = client.get_server_metadata()
        assert server_metadata["name"] == "sklearn-serving"
        assert server_metadata["extensions"] == ["binary_tensor_data"]
        metadata = client.get_model_metadata("income")
        assert [i["name"] for i in metadata["inputs"]] == model.columns

        # tritonclient's defaults: binary inputs, and each requested output in binary.
        names = ("probabilities", "prediction", "observation_id")
        outputs = [triton.InferRequestedOutput(name) for name in names]
        result = client.infer("income", triton_inputs(frame), request_id="live", outputs=outputs)
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (ROWS, 2)
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-9)
        binary = result.get_output("probabilities")["parameters"]
        assert binary["binary_data_size"] == ROWS * 2 * 8
        classes = binary["classes"]
        assert classes == [str(c) for c in model.pipeline.classes_]
        labels = [v.decode() for v in result.as_numpy("prediction")]
        assert labels == [classes[k] for k in expected.argmax(axis=1)]
        ids = [v.decode() for v in result.as_numpy("observation_id")]
        assert ids == [f"live-{i}" for i in range(ROWS)]
        assert result.get_response()["id"] == "live"

        # Without requested outputs tritonclient asks for all in binary (binary_data_output).
        # One row: the request id is the observation id.
        single = client.infer("income", triton_inputs(frame.head(1)), request_id="live-one")
        np.testing.assert_allclose(single.as_numpy("probabilities"), expected[:1], atol=1e-9)
        assert single.as_numpy("model_version").tolist() == [b"1"]
        assert all("data" not in o for o in single.get_response()["outputs"])
        assert single.get_response()["model_version"] == "1"

        # All JSON (binary_data=False both ways): the same answers, as JSON tensors.
        json_outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in names]
        plain = client.infer(
            "income", triton_inputs(frame, binary=False), request_id="live", outputs=json_outputs
        )
        assert "binary_data_size" not in plain.get_output("probabilities")["parameters"]
        np.testing.assert_array_equal(plain.as_numpy("probabilities"), probabilities)

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

        # The same request again replays the stored answers; a model that is not served is
        # the server's sentence.
        again = client.infer("income", triton_inputs(frame), request_id="live", outputs=outputs)
        np.testing.assert_array_equal(again.as_numpy("probabilities"), probabilities)
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
