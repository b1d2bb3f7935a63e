"""The tutorial contract on the default endpoint: /predict and /update as SPEC describes."""

from __future__ import annotations

import json

import pytest

from serving.store.tables import Prediction
from tests.samples import PASSENGER


def post(client, path: str, body, **kwargs):
    """POST a body as raw JSON text with no Content-Type, as a curl user would."""
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data=data, **kwargs)


def rows() -> int:
    return Prediction.select().count()


def test_predict_returns_probability_of_positive_class(client, app):
    response = post(client, "/predict", {"id": 0, "observation": PASSENGER})
    assert response.status_code == 200
    body = response.get_json()
    model = app.extensions["registry"].find("default", "1")
    expected = model.pipeline.predict_proba(model.frame([PASSENGER]))[0][1]
    assert body["proba"] == pytest.approx(expected, abs=1e-12)
    assert 0 < body["proba"] < 0.5
    assert body["prediction"] == 0
    assert body["observation_id"] == 0
    assert body["endpoint"] == "default"
    assert body["model_version"] == model.version
    assert body["warnings"] == []


def test_json_content_type_is_optional(client):
    plain = post(client, "/predict", {"id": 1, "observation": PASSENGER})
    typed = client.post("/predict", json={"id": 2, "observation": PASSENGER})
    form = post(
        client,
        "/predict",
        {"id": 3, "observation": PASSENGER},
        content_type="application/x-www-form-urlencoded",
    )
    assert plain.status_code == typed.status_code == form.status_code == 200
    assert plain.get_json()["proba"] == typed.get_json()["proba"] == form.get_json()["proba"]


def test_same_id_same_observation_replays_without_storing(client):
    first = post(client, "/predict", {"id": "abc", "observation": PASSENGER})
    again = post(client, "/predict", {"id": "abc", "observation": dict(PASSENGER)})
    assert first.status_code == again.status_code == 200
    assert again.get_json()["proba"] == first.get_json()["proba"]
    assert again.get_json()["id"] == first.get_json()["id"]
    assert rows() == 1


def test_replay_ignores_spelling_of_numbers_and_missing(client):
    first = post(client, "/predict", {"id": 5, "observation": PASSENGER})
    spelled = (
        '{"id": 5, "observation": {"Age": 22, "Cabin": NaN, "Embarked": "S", '
        '"Fare": 7.25, "Parch": 0, "Pclass": 3.0, "Sex": "male", "SibSp": 1}}'
    )
    again = post(client, "/predict", spelled)
    assert again.status_code == 200
    assert again.get_json()["proba"] == first.get_json()["proba"]
    assert rows() == 1


def test_same_id_different_observation_is_409_and_stores_nothing(client):
    post(client, "/predict", {"id": 7, "observation": PASSENGER})
    changed = {**PASSENGER, "Age": 40.0}
    response = post(client, "/predict", {"id": 7, "observation": changed})
    assert response.status_code == 409
    assert response.get_json()["details"][0]["field"] == "id"
    assert rows() == 1
    assert json.loads(Prediction.get().observation)["Age"] == 22.0


def test_integer_id_and_its_string_are_the_same_observation(client):
    post(client, "/predict", {"id": 8, "observation": PASSENGER})
    response = post(client, "/predict", {"id": "8", "observation": {**PASSENGER, "Age": 1.0}})
    assert response.status_code == 409


def test_update_stores_true_class_and_returns_the_row(client):
    predicted = post(client, "/predict", {"id": 0, "observation": PASSENGER}).get_json()
    response = post(client, "/update", {"id": 0, "true_class": 0})
    assert response.status_code == 200
    body = response.get_json()
    assert body["observation_id"] == 0
    assert body["true_class"] == 0
    assert body["proba"] == predicted["proba"]
    # With client authentication off, anyone may update any id: the stored observation is
    # not shown (tests/test_client_auth.py: an authenticated caller gets it).
    assert "observation" not in body
    assert body["id"] == predicted["id"]
    assert body["updated_at"] is not None


def test_second_update_overwrites_and_records_when(client):
    post(client, "/predict", {"id": 0, "observation": PASSENGER})
    first = post(client, "/update", {"id": 0, "true_class": 0}).get_json()
    second = post(client, "/update", {"id": 0, "true_class": 1}).get_json()
    assert second["true_class"] == 1
    assert second["updated_at"] >= first["updated_at"]
    assert json.loads(Prediction.get().true_class) == 1
    assert rows() == 1


def test_update_accepts_label_spelled_as_text(client):
    post(client, "/predict", {"id": 0, "observation": PASSENGER})
    assert post(client, "/update", {"id": 0, "true_class": "1"}).get_json()["true_class"] == 1


def test_update_of_unknown_id_is_404(client):
    response = post(client, "/update", {"id": 123, "true_class": 0})
    assert response.status_code == 404
    assert response.get_json()["details"] == [{"field": "id", "problem": "unknown observation id"}]


@pytest.mark.parametrize("true_class", [2, "yes", True, None, [0], {"a": 1}])
def test_update_with_unknown_class_is_422(client, true_class):
    post(client, "/predict", {"id": 0, "observation": PASSENGER})
    response = post(client, "/update", {"id": 0, "true_class": true_class})
    assert response.status_code == 422
    assert response.get_json()["details"][0]["field"] == "true_class"
    assert Prediction.get().true_class is None


@pytest.mark.parametrize("spelling", ["null", "NaN"])
def test_null_and_nan_mean_missing(client, spelling):
    text = json.dumps({"id": 1, "observation": {**PASSENGER, "Age": "__"}}).replace(
        '"__"', spelling
    )
    response = post(client, "/predict", text)
    assert response.status_code == 200
    assert response.get_json()["observation"]["Age"] is None


def test_missing_values_match_pandas_nan(client, app):
    model = app.extensions["registry"].find("default", "1")
    observation = {**PASSENGER, "Age": None, "Embarked": None}
    response = post(client, "/predict", {"id": 1, "observation": observation})
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame([{**observation, "Age": np.nan, "Embarked": np.nan}])
    frame = frame.astype(model.dtypes)
    assert response.get_json()["proba"] == pytest.approx(
        model.pipeline.predict_proba(frame)[0][1], abs=1e-12
    )


def test_unknown_fields_are_ignored_and_listed(client):
    response = post(
        client,
        "/predict",
        {"id": 1, "observation": {**PASSENGER, "Name": "Braund", "Ticket": "A/5"}},
    )
    assert response.status_code == 200
    assert response.get_json()["warnings"] == [
        {"field": "observation.Name", "problem": "unknown field, ignored"},
        {"field": "observation.Ticket", "problem": "unknown field, ignored"},
    ]
    assert "Name" not in json.loads(Prediction.get().observation)


@pytest.mark.parametrize(
    ("observation", "field", "problem"),
    [
        ({k: v for k, v in PASSENGER.items() if k != "Age"}, "observation.Age", "required"),
        ({**PASSENGER, "Age": "abc"}, "observation.Age", "expected a number, got 'abc'"),
        ({**PASSENGER, "Age": True}, "observation.Age", "expected a number"),
        ({**PASSENGER, "Pclass": 2.5}, "observation.Pclass", "expected an integer"),
        ({**PASSENGER, "Pclass": None}, "observation.Pclass", "got null"),
        ({**PASSENGER, "Sex": 1}, "observation.Sex", "expected a string"),
        ({**PASSENGER, "Sex": ["male"]}, "observation.Sex", "expected a string"),
    ],
)
def test_invalid_observation_is_422_naming_the_field(client, observation, field, problem):
    response = post(client, "/predict", {"id": 1, "observation": observation})
    assert response.status_code == 422
    body = response.get_json()
    assert field in body["error"]
    [found] = [d for d in body["details"] if d["field"] == field]
    assert problem in found["problem"]
    assert rows() == 0


@pytest.mark.parametrize("token", ["Infinity", "-Infinity", "1e999"])
def test_infinity_is_422(client, token):
    text = json.dumps({"id": 1, "observation": {**PASSENGER, "Fare": "__"}}).replace('"__"', token)
    response = post(client, "/predict", text)
    assert response.status_code == 422
    assert response.get_json()["details"][0]["field"] == "observation.Fare"
    assert rows() == 0


@pytest.mark.parametrize("bad_id", [1.5, True, None, [1], {"a": 1}, "", "x" * 256])
def test_bad_id_is_422(client, bad_id):
    response = post(client, "/predict", {"id": bad_id, "observation": PASSENGER})
    assert response.status_code == 422
    assert response.get_json()["details"][0]["field"] == "id"


def test_missing_id_or_observation_is_422(client):
    assert post(client, "/predict", {"observation": PASSENGER}).status_code == 422
    response = post(client, "/predict", {"id": 1})
    assert response.status_code == 422
    assert response.get_json()["details"][0]["field"] == "observation"
    response = post(client, "/predict", {"id": 1, "observation": [1, 2]})
    assert response.status_code == 422


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '"text"', "", "42", b"\xff\xfe{}"])
def test_malformed_or_non_object_body_is_400(client, body):
    response = post(client, "/predict", body)
    assert response.status_code == 400
    assert response.get_json()["error"]


def test_deeply_nested_json_is_400(client):
    response = post(client, "/predict", "[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400
    nested = '{"id": 1, "observation": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}"
    assert post(client, "/predict", nested).status_code in (400, 422)


def test_body_over_limit_is_413(client):
    huge = {"id": 1, "observation": {**PASSENGER, "Name": "x" * 1_100_000}}
    response = post(client, "/predict", huge)
    assert response.status_code == 413
    assert "limit" in response.get_json()["error"]


def test_body_limit_is_configurable(database_url):
    from serving import create_app

    app = create_app({"database_url": database_url, "max_body_bytes": 100})
    response = post(app.test_client(), "/predict", {"id": 1, "observation": PASSENGER})
    assert response.status_code == 413


def test_flask_404_and_405_use_the_json_error_shape(client):
    missing = client.get("/no/such/page")
    assert missing.status_code == 404
    assert set(missing.get_json()) == {"error", "details"}
    wrong = client.get("/predict")
    assert wrong.status_code == 405
    assert set(wrong.get_json()) == {"error", "details"}
    assert "POST" in wrong.headers["Allow"]


def test_errors_never_carry_a_stack_trace(client):
    for body in ["{", '{"id": 1, "observation": {"Age": {}}}', "[" * 50_000]:
        text = post(client, "/predict", body).get_data(as_text=True)
        assert "Traceback" not in text and 'File "' not in text
