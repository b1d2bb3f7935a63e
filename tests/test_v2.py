"""The Open Inference Protocol (v2 REST) through the Flask client: metadata, readiness, infer
stored and replayed as /predict, and every error a clear 4xx `{"error": ...}` naming the input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.model.schema import InputSchema
from serving.protocol.inference_v2 import decode
from serving.store.tables import Prediction
from tests.conftest import REPO_ROOT, make_app
from tests.samples import PASSENGER

TOKEN = "v2-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
INFER = "/v2/models/default/infer"
DATATYPES = {
    "Age": "FP64",
    "Cabin": "BYTES",
    "Embarked": "BYTES",
    "Fare": "FP64",
    "Parch": "INT64",
    "Pclass": "INT64",
    "Sex": "BYTES",
    "SibSp": "INT64",
}
SECOND = {**PASSENGER, "Age": 38.0, "Cabin": "C85", "Fare": 71.28, "Pclass": 1, "Sex": "female"}


@pytest.fixture
def app(database_url: str):
    application = make_app(
        database_url, REPO_ROOT / "models", admin_token=TOKEN, http_batch_max_rows=5
    )
    yield application
    from serving.store.database import close_all

    close_all()


def tensors(rows: list[dict], shape_n1: bool = False) -> list[dict]:
    """One input per column, as a pandas-codec client sends them."""
    return [
        {
            "name": name,
            "datatype": datatype,
            "shape": [len(rows), 1] if shape_n1 else [len(rows)],
            "data": [row[name] for row in rows],
        }
        for name, datatype in DATATYPES.items()
    ]


def infer(client, body, url: str = INFER, **kwargs):
    return client.post(url, data=json.dumps(body) if not isinstance(body, str) else body, **kwargs)


def outputs(answer: dict) -> dict[str, list]:
    return {o["name"]: o["data"] for o in answer["outputs"]}


def error_of(response, status: int) -> str:
    """The error sentence of a v2 error answer, which has that key and no other."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert list(body) == ["error"], body
    return body["error"]


def test_server_metadata_live_and_ready(client):
    assert client.get("/v2").get_json() == {
        "name": "sklearn-serving",
        "version": "1",
        "extensions": ["binary_tensor_data"],
    }
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}


def test_model_metadata_has_one_input_per_column_with_its_datatype(client):
    answer = client.get("/v2/models/income").get_json()
    assert answer["name"] == "income"
    assert answer["versions"] == ["1", "2"]
    assert answer["platform"] == "sklearn"
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in answer["inputs"]}
    assert inputs["age"] == ("INT64", [-1])
    assert inputs["workclass"] == ("BYTES", [-1])
    assert len(inputs) == 14
    assert [o["name"] for o in answer["outputs"]] == [
        "prediction",
        "proba",
        "probabilities",
        "observation_id",
        "model_version",
    ]
    assert answer["outputs"][0]["datatype"] == "BYTES"
    assert answer["parameters"]["version"] == "1"
    assert answer["parameters"]["classes"] == ["<=50K", ">50K"]
    pinned = client.get("/v2/models/income/versions/2").get_json()
    assert pinned["parameters"]["version"] == "2"
    assert pinned["parameters"]["status"] == "testing"
    regression = client.get("/v2/models/heights").get_json()
    assert [o["name"] for o in regression["outputs"]] == [
        "prediction",
        "observation_id",
        "model_version",
    ]
    assert regression["outputs"][0]["datatype"] == "FP64"


def test_unknown_models_and_versions_are_404_in_the_protocols_shape(client):
    assert "'nope'" in error_of(client.get("/v2/models/nope"), 404)
    assert "'9'" in error_of(client.get("/v2/models/income/versions/9"), 404)
    assert "'nope'" in error_of(client.get("/v2/models/nope/ready"), 404)
    assert "'nope'" in error_of(infer(client, {"inputs": []}, "/v2/models/nope/infer"), 404)
    assert "'9'" in error_of(infer(client, {}, "/v2/models/income/versions/9/infer"), 404)


def test_ready_means_the_version_answers(client):
    assert client.get("/v2/models/income/ready").get_json() == {"name": "income", "ready": True}
    assert client.get("/v2/models/income/versions/2/ready").status_code == 200
    # Promoting 2 archives 1: loaded, but no longer answering when named.
    changed = client.put(
        "/api/v1/income/versions/2/status", headers=ADMIN, data='{"status": "production"}'
    )
    assert changed.status_code == 200
    archived = client.get("/v2/models/income/versions/1/ready")
    assert archived.status_code == 503
    assert archived.get_json() == {"name": "income", "ready": False, "version": "1"}
    assert "archived" in error_of(infer(client, {}, "/v2/models/income/versions/1/infer"), 409)


def test_one_row_is_stored_under_the_request_id_and_replays_like_predict(client):
    first = infer(client, {"id": "v2-1", "inputs": tensors([PASSENGER])})
    assert first.status_code == 200, first.get_data(as_text=True)
    answer = first.get_json()
    predicted = client.post(
        "/predict", data=json.dumps({"id": "p-1", "observation": PASSENGER})
    ).get_json()
    assert answer["model_name"] == "default"
    assert answer["model_version"] == "1"
    assert answer["id"] == "v2-1"
    out = outputs(answer)
    assert out["prediction"] == [predicted["prediction"]]
    assert out["proba"] == pytest.approx([predicted["proba"]], abs=1e-12)
    assert out["probabilities"] == pytest.approx(
        [1 - predicted["proba"], predicted["proba"]], abs=1e-12
    )
    assert out["observation_id"] == ["v2-1"]
    stored = Prediction.get(Prediction.observation_id == "v2-1")
    assert json.loads(stored.observation) == PASSENGER
    # The same id and row: the stored answer, nothing new; another row under it: 409.
    assert infer(client, {"id": "v2-1", "inputs": tensors([PASSENGER])}).get_json() == answer
    assert Prediction.select().count() == 2
    conflict = infer(client, {"id": "v2-1", "inputs": tensors([SECOND])})
    assert "'v2-1'" in error_of(conflict, 409)
    # /update finds the row by its id.
    updated = client.post("/update", data=json.dumps({"id": "v2-1", "true_class": 1}))
    assert updated.status_code == 200
    assert updated.get_json()["proba"] == pytest.approx(out["proba"][0], abs=1e-12)


def test_many_rows_answer_as_predict_and_are_stored_under_derived_ids(client):
    rows = [PASSENGER, SECOND, {**PASSENGER, "Age": None}]
    response = infer(client, {"id": "batch", "inputs": tensors(rows, shape_n1=True)})
    assert response.status_code == 200, response.get_data(as_text=True)
    out = outputs(response.get_json())
    assert out["observation_id"] == ["batch-0", "batch-1", "batch-2"]
    assert out["model_version"] == ["1", "1", "1"]
    for i, row in enumerate(rows):
        single = client.post(
            "/predict", data=json.dumps({"id": f"single-{i}", "observation": row})
        ).get_json()
        assert out["prediction"][i] == single["prediction"]
        assert out["proba"][i] == pytest.approx(single["proba"], abs=1e-9)
    shape = {o["name"]: o["shape"] for o in response.get_json()["outputs"]}
    assert shape["probabilities"] == [3, 2]
    assert Prediction.select().where(Prediction.observation_id.startswith("batch-")).count() == 3
    # Named ids instead, and only the outputs asked for, in the order asked.
    named = infer(
        client,
        {
            "inputs": tensors(rows[:2]),
            "parameters": {"content_type": "pd", "observation_ids": ["x", 7]},
            "outputs": [{"name": "observation_id"}, {"name": "prediction"}],
        },
    ).get_json()
    assert [o["name"] for o in named["outputs"]] == ["observation_id", "prediction"]
    assert outputs(named)["observation_id"] == ["x", "7"]
    assert len(named["id"]) == 32  # generated
    assert Prediction.select().where(Prediction.observation_id.in_(["x", "7"])).count() == 2


def test_the_version_route_pins_the_version_and_strings_come_as_bytes(client):
    row = json.loads((REPO_ROOT / "examples" / "income-observation.json").read_text())
    observation = row["observation"]
    body = {
        "id": "income-v2",
        "inputs": [
            {
                "name": name,
                "datatype": "BYTES" if isinstance(value, str) else "INT64",
                "shape": [1],
                "data": [value],
            }
            for name, value in observation.items()
        ],
    }
    answer = infer(client, body, "/v2/models/income/versions/2/infer").get_json()
    assert answer["model_version"] == "2"
    assert outputs(answer)["prediction"][0] in ("<=50K", ">50K")
    assert Prediction.get(Prediction.observation_id == "income-v2").model_version == "2"


def test_infer_is_counted_in_the_metrics_like_predict(client):
    def count() -> float:
        text = client.get("/metrics").get_data(as_text=True)
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "serving_predictions"
            for sample in family.samples
            if sample.name == "serving_predictions_total"
            and sample.labels.get("endpoint") == "default"
        )

    before = count()
    assert infer(client, {"inputs": tensors([PASSENGER, SECOND])}).status_code == 200
    assert infer(client, {"inputs": tensors([PASSENGER])}).status_code == 200
    assert count() == before + 3


@pytest.mark.parametrize(
    ("change", "status", "named"),
    [
        # Structure: 400.
        (lambda b: b.update(inputs="x"), 400, "'inputs'"),
        (lambda b: b["inputs"][0].update(datatype="FLOAT"), 400, "'Age'"),
        (lambda b: b["inputs"][0].update(datatype={}), 400, "'Age'"),
        (lambda b: b["inputs"][0].update(shape=[2, 2]), 400, "'Age'"),
        (lambda b: b["inputs"][0].update(shape=[3]), 400, "'Age'"),
        (lambda b: b["inputs"][1].update(data=[None, 5]), 400, "'Cabin'"),
        (lambda b: b["inputs"][2].update(shape=[1], data=["S"]), 400, "'Embarked'"),
        (lambda b: b["inputs"].append(dict(b["inputs"][0])), 400, "'Age'"),
        (lambda b: b.update(parameters={"content_type": "np"}), 400, "'pd'"),
        (lambda b: b.update(outputs=[{"name": "logits"}]), 400, "'logits'"),
        # The model's columns: 422.
        (lambda b: b["inputs"].pop(3), 422, "'Fare'"),
        (lambda b: b["inputs"].append({**b["inputs"][0], "name": "Deck"}), 422, "'Deck'"),
        (lambda b: b["inputs"][5].update(datatype="BYTES", data=["3", "1"]), 422, "'Pclass'"),
        (lambda b: b["inputs"][4].update(data=[0, None]), 422, "'Parch'"),
        (lambda b: b.update(id=" "), 422, "'id'"),
        (lambda b: b.update(parameters={"observation_ids": ["a"]}), 422, "observation_ids"),
    ],
)
def test_bad_requests_are_4xx_naming_the_input_and_store_nothing(client, change, status, named):
    body = {"id": "bad", "inputs": tensors([PASSENGER, SECOND])}
    change(body)
    message = error_of(infer(client, body), status)
    assert named in message
    assert Prediction.select().count() == 0


def test_bad_json_too_many_rows_and_a_regressions_probabilities(client):
    assert "not valid JSON" in error_of(infer(client, "{"), 400)
    assert "is not valid JSON" not in error_of(infer(client, "[1]"), 400)
    too_many = error_of(infer(client, {"inputs": tensors([PASSENGER] * 6)}), 413)
    assert "MAX_BATCH_ROWS" in too_many
    no_probabilities = {
        "inputs": [{"name": "height", "datatype": "INT64", "shape": [1], "data": [65]}],
        "outputs": [{"name": "probabilities"}],
    }
    message = error_of(infer(client, no_probabilities, "/v2/models/heights/infer"), 400)
    assert "'probabilities'" in message
    assert Prediction.select().count() == 0


def test_client_authentication_covers_infer_not_metadata(database_url: str, tmp_path: Path):
    app = make_app(
        database_url, tmp_path / "none", predict_auth=True, predict_token="client-secret"
    )
    client = app.test_client()
    assert client.get("/v2/models/default").status_code == 200
    assert client.get("/v2/models/default/ready").status_code == 200
    refused = infer(client, {"inputs": tensors([PASSENGER])})
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert list(refused.get_json()) == ["error"]
    allowed = infer(
        client,
        {"inputs": tensors([PASSENGER])},
        headers={"Authorization": "Bearer client-secret"},
    )
    assert allowed.status_code == 200


def test_the_codec_reads_nested_and_flat_columns_alike():
    schema = InputSchema.from_columns(["x"], {"x": "float64"})
    flat = decode(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2.5]}]}, schema, 9
    )
    nested = decode(
        {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, 1], "data": [[1], [2.5]]}]},
        schema,
        9,
    )
    assert flat.observations == nested.observations == [{"x": 1}, {"x": 2.5}]
    assert flat.observation_ids[0] == f"{flat.id}-0"
