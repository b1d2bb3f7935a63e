"""POST /api/v1/<endpoint>/predict/batch: JSON or CSV in, JSON or CSV out, every row logged."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from serving.decisions.experiments import assign
from serving.store.predictions import to_json
from serving.store.tables import Prediction
from tests.conftest import REPO_ROOT, fit_tiny_model, fit_tiny_multiclass, make_app
from tests.live import gunicorn
from tests.samples import PASSENGER

TOKEN = "batch-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
URL = "/api/v1/default/predict/batch"
CSV = {"Content-Type": "text/csv"}
TITANIC = REPO_ROOT / "data" / "titanic.csv"


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    fit_tiny_model(root / "tiny" / "1", shift=0.5, version="1", initial_status="production")
    fit_tiny_model(root / "tiny" / "2", shift=1.5, version="2", initial_status="staging")
    fit_tiny_multiclass(root / "tiers" / "1", version="1", initial_status="production")
    return root


@pytest.fixture
def app(database_url: str, models_dir: Path):
    application = make_app(database_url, models_dir, admin_token=TOKEN, http_batch_max_rows=1000)
    yield application
    from serving.store.database import close_all

    close_all()


def post(client, rows, url=URL, **kwargs):
    return client.post(url, data=json.dumps(rows), **kwargs)


def titanic_csv(rows: int | None = None) -> str:
    """data/titanic.csv with PassengerId as the id column (and the columns no model reads)."""
    frame = pd.read_csv(TITANIC).rename(columns={"PassengerId": "id"})
    return frame.head(rows).to_csv(index=False) if rows else frame.to_csv(index=False)


def stored_count() -> int:
    return Prediction.select().count()


def test_mixed_rows_are_answered_one_by_one_and_valid_ones_stored(app, client):
    rows = [
        {"id": 1, "observation": PASSENGER},
        {"id": 2, "observation": {**PASSENGER, "Age": "abc", "Pclass": None}},
        {"observation": PASSENGER},
        "not a row",
        {"id": 3},
        {"id": 4, "observation": [1, 2]},
        {"id": "five", "observation": {**PASSENGER, "Extra": 1, "Fare": 900.0}},
        {"id": 6.5, "observation": PASSENGER},
        {"id": "nul\u0000", "observation": PASSENGER},
    ]
    answer = post(client, rows)
    assert answer.status_code == 200
    body = answer.get_json()
    results = body["results"]
    assert [r["status"] for r in results] == [200, 422, 422, 422, 422, 422, 200, 422, 422]
    assert [r["observation_id"] for r in results] == [1, 2, None, None, 3, 4, "five", 6.5, "nul\0"]
    assert results[1]["details"] == [
        {"field": "observation.Age", "problem": "expected a number, got 'abc'"},
        {"field": "observation.Pclass", "problem": "expected an integer, got null"},
    ]
    assert results[2]["details"] == [{"field": "id", "problem": "required: an integer or a string"}]
    assert results[3]["details"][0]["field"] == "row"
    assert results[4]["details"] == [{"field": "observation", "problem": "required: an object"}]
    assert results[5]["error"] == "'observation' must be an object."
    assert results[6]["warnings"] == [
        {"field": "observation.Extra", "problem": "unknown field, ignored"},
        {
            "field": "observation.Fare",
            "problem": "900.0 is outside the training range [0.0, 512.3292]",
        },
    ]
    assert results[8]["details"] == [{"field": "id", "problem": "contains NUL"}]
    assert body["counts"] == {
        "rows": 9,
        "answered": 2,
        "stored": 2,
        "replayed": 0,
        "invalid": 7,
        "conflicts": 0,
    }
    with app.app_context():
        assert stored_count() == 2


def test_a_row_answer_is_the_single_answer_of_the_stored_row(app, client):
    single = client.post("/predict", data=json.dumps({"id": "s", "observation": PASSENGER}))
    [row] = post(client, [{"id": "b", "observation": PASSENGER}]).get_json()["results"]
    assert set(row) == set(single.get_json()) | {"status"}
    with app.app_context():
        stored = Prediction.get(Prediction.observation_id == "b")
        assert row == {**to_json(stored, "b"), "warnings": [], "status": 200}
    assert row["proba"] == pytest.approx(single.get_json()["proba"], abs=1e-12)


def test_ids_repeat_inside_a_batch_and_against_earlier_rows(app, client):
    client.post("/predict", data=json.dumps({"id": 7, "observation": PASSENGER}))
    other = {**PASSENGER, "Age": 40.0}
    rows = [
        {"id": "7", "observation": PASSENGER},  # stored before: replay
        {"id": 7, "observation": other},  # stored before, another observation: 409
        {"id": "n", "observation": PASSENGER},  # new
        {"id": "n", "observation": PASSENGER},  # again in this batch: replay
        {"id": "n", "observation": other},  # again, another observation: 409
        {"id": "bad", "observation": {**PASSENGER, "Age": "x"}},  # invalid, not stored
        {"id": "bad", "observation": PASSENGER},  # so this one is stored
    ]
    body = post(client, rows).get_json()
    results = body["results"]
    assert [r["status"] for r in results] == [200, 409, 200, 200, 409, 422, 200]
    with app.app_context():
        earlier = Prediction.get(Prediction.observation_id == "7")
        assert results[0]["id"] == earlier.id and results[0]["observation_id"] == "7"
    assert results[2]["id"] == results[3]["id"]
    assert results[1]["details"] == [
        {"field": "id", "problem": "already stored with a different observation"}
    ]
    assert body["counts"]["stored"] == 2 and body["counts"]["replayed"] == 2
    assert body["counts"]["conflicts"] == 2
    # The same rows again: everything answered before replays, nothing new is stored.
    again = post(client, rows).get_json()
    assert [r["status"] for r in again["results"]] == [200, 409, 200, 200, 409, 422, 200]
    assert [r.get("id") for r in again["results"]] == [r.get("id") for r in results]
    with app.app_context():
        assert stored_count() == 3


def test_results_equal_predict_proba_on_the_same_frame(app, client):
    text = titanic_csv()
    answer = client.post(URL, data=text, headers=CSV)
    assert answer.status_code == 200
    results = answer.get_json()["results"]
    frame = pd.read_csv(io.StringIO(text))
    model = app.extensions["registry"].find("default", "1")
    expected = model.pipeline.predict_proba(frame[model.columns].astype(model.dtypes))[:, 1]
    assert [r["status"] for r in results] == [200] * len(frame)
    assert [r["observation_id"] for r in results] == [str(i) for i in frame["id"]]
    np.testing.assert_allclose([r["proba"] for r in results], expected, rtol=0, atol=1e-12)
    # The same rows as JSON are the same observations: sent again, they replay.
    observations = [
        {k: None if pd.isna(v) else v for k, v in row.items()}
        for row in frame[model.columns].to_dict("records")
    ]
    rows = [
        {"id": str(i), "observation": o} for i, o in zip(frame["id"], observations, strict=True)
    ]
    replayed = post(client, rows).get_json()
    assert replayed["counts"]["replayed"] == len(frame)
    assert [r["id"] for r in replayed["results"]] == [r["id"] for r in results]


def test_csv_in_and_out_and_json_in_csv_out(client):
    text = titanic_csv(5) + "x,0,3,n,female,abc,1,0,t,7.0,,S\n"
    answer = client.post(URL, data=text, headers={**CSV, "Accept": "text/csv"})
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    assert answer.headers["X-Batch-Rows"] == "6" and answer.headers["X-Batch-Invalid"] == "1"
    assert "Name: unknown column, ignored" in answer.headers["X-Batch-Warnings"]
    lines = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert list(lines[0]) == [
        "id",
        "status",
        "model_version",
        "proba",
        "prediction",
        "warnings",
        "error",
        "details",
    ]
    assert [line["id"] for line in lines] == ["1", "2", "3", "4", "5", "x"]
    assert lines[0]["status"] == "200" and float(lines[0]["proba"]) < 0.5
    assert lines[0]["prediction"] == "0" and lines[0]["model_version"] == "1"
    assert lines[5]["status"] == "422"
    assert lines[5]["details"] == "observation.Age: expected a number, got 'abc'"
    as_json = client.post(URL, data=text, headers=CSV).get_json()
    assert as_json["warnings"] == [
        {"field": name, "problem": "unknown column, ignored"}
        for name in ("Survived", "Name", "Ticket")
    ]
    rows = [{"id": "j", "observation": PASSENGER}]
    back = post(client, rows, headers={"Accept": "text/csv"})
    assert (
        back.mimetype == "text/csv" and back.get_data(as_text=True).splitlines()[1][:6] == "j,200,"
    )


def test_csv_numbers_are_read_as_json_reads_them_and_a_bom_is_no_header(client):
    body = (
        "\ufeffid,Age,Cabin,Embarked,Fare,Parch,Pclass,Sex,SibSp\n"
        # Python's float() and int() read "2_2" as 22; a CSV cell, like JSON, does not.
        "u1,2_2,,S,7.25,0,1_0,male,1\n"
        "2,22,,S,7.25,0,3,male,1\n"
        "3,38,C85,C,71.28,0,1,female,1\n"
    )
    answer = client.post(URL, data=body.encode("utf-8"), headers=CSV).get_json()
    assert [r["observation_id"] for r in answer["results"]] == ["u1", "2", "3"]
    refused = answer["results"][0]
    assert refused["status"] == 422
    fields = {d["field"] for d in refused["details"]}
    assert fields == {"observation.Age", "observation.Pclass"}
    assert [r["status"] for r in answer["results"][1:]] == [200, 200]


def test_a_multipart_upload_is_read_as_csv_or_json(client):
    upload = {"file": (io.BytesIO(titanic_csv(3).encode()), "passengers.csv")}
    answer = client.post(URL, data=upload, content_type="multipart/form-data")
    assert answer.status_code == 200 and answer.get_json()["counts"]["stored"] == 3
    rows = json.dumps([{"id": "m", "observation": PASSENGER}]).encode()
    upload = {"file": (io.BytesIO(rows), "rows.json")}
    answer = client.post(URL, data=upload, content_type="multipart/form-data")
    assert answer.get_json()["results"][0]["observation_id"] == "m"
    empty = client.post(URL, data={"note": "x"}, content_type="multipart/form-data")
    assert empty.status_code == 400 and "field 'file'" in empty.get_json()["error"]


def test_multiclass_csv_answers_every_class(client):
    text = "id,x,k,color\n1,-2.0,1,red\n2,2.0,1,blue\n"
    answer = client.post(
        "/api/v1/tiers/predict/batch", data=text, headers={**CSV, "Accept": "text/csv"}
    )
    lines = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert [line["prediction"] for line in lines] == ["low", "high"]
    for line in lines:
        total = sum(float(line[f"proba_{c}"]) for c in ("high", "low", "mid"))
        assert total == pytest.approx(1.0)
    as_json = client.post("/api/v1/tiers/predict/batch", data=text, headers=CSV).get_json()
    assert set(as_json["results"][0]["probabilities"]) == {"high", "low", "mid"}


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        ("[]", {}, 400, "empty"),
        ('{"id": 1, "observation": {}}', {}, 400, "JSON array"),
        ("id,Age\n1,2\n", {}, 400, "Content-Type: text/csv"),
        ("[{", {}, 400, "not valid JSON"),
        ("", CSV, 400, "empty"),
        ("id,Age,Cabin,Embarked,Fare,Parch,Pclass,Sex,SibSp\n", CSV, 400, "empty"),
        ("id,x\n1,2\n2,3,4\n", CSV, 400, "line 3"),
        ("Age,Cabin\n1,\n", CSV, 422, "'id' column"),
        ("id,Age\n1,2\n", CSV, 422, "'Cabin'"),
        ("id,Age,Age\n1,2,3\n", CSV, 422, "name of its own"),
        (b"id,Sex\n1,\xff\n", CSV, 400, "UTF-8"),
        ('id,Age\n1,"abc\n', CSV, 400, "CSV"),
        ("id,,Age\n1,2,3\n", CSV, 422, "no name"),
    ],
)
def test_malformed_batches_are_clear_4xx(client, body, headers, status, words):
    answer = client.post(URL, data=body, headers=headers)
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert words in answer.get_json()["error"] + json.dumps(answer.get_json()["details"])


def test_more_rows_than_max_batch_rows_is_413(app, client):
    rows = [{"id": i, "observation": PASSENGER} for i in range(1001)]
    answer = post(client, rows)
    assert answer.status_code == 413
    assert answer.get_json()["details"] == [{"field": "rows", "problem": "at most 1000"}]
    text = titanic_csv()
    twice = text + text[text.index("\n") + 1 :]
    assert client.post(URL, data=twice, headers=CSV).status_code == 413
    assert post(client, rows[:1000]).status_code == 200
    with app.app_context():
        assert stored_count() == 1000


def test_a_body_over_the_batch_limit_is_413_naming_the_limit(database_url, models_dir):
    client = make_app(
        database_url, models_dir, max_batch_body_bytes=5000, max_body_bytes=1000
    ).test_client()
    rows = [{"id": i, "observation": PASSENGER} for i in range(60)]
    answer = post(client, rows)
    assert answer.status_code == 413
    assert "5000 bytes (MAX_BATCH_BODY_BYTES)" in answer.get_json()["error"]
    upload = {"file": (io.BytesIO(b"x" * 6000), "big.csv")}
    answer = client.post(URL, data=upload, content_type="multipart/form-data")
    assert answer.status_code == 413 and "MAX_BATCH_BODY_BYTES" in answer.get_json()["error"]
    # The batch limit is not the single predict's: a batch may be larger than MAX_BODY_BYTES.
    assert post(client, rows[:20]).status_code == 200


def test_batch_rows_take_updates_and_count_in_quality(app, client):
    text = titanic_csv(100)
    client.post(URL, data=text, headers=CSV)
    frame = pd.read_csv(io.StringIO(text))
    for passenger, survived in zip(frame["id"], frame["Survived"], strict=True):
        update = {"id": int(passenger), "true_class": int(survived)}
        update = client.post("/update", data=json.dumps(update))
        assert update.status_code == 200
        assert update.get_json()["true_class"] == survived
    report = client.get("/api/v1/default/performance").get_json()["versions"][0]
    assert report["predictions"] == 100 and report["labelled"] == 100
    assert 0.6 < report["metrics"]["accuracy"] <= 1.0


def test_version_and_status_choose_the_model_as_for_one_prediction(client):
    rows = [{"id": i, "observation": {"x": 0.0, "k": 1, "color": "green"}} for i in range(3)]
    url = "/api/v1/tiny/predict/batch"
    production = post(client, rows, url=url).get_json()["results"]
    staging = post(client, rows, url=url + "?status=staging").get_json()["results"]
    assert {r["model_version"] for r in production} == {"1"}
    # Stored by version 1 already: the stored answers replay, whichever version is asked.
    assert [r["proba"] for r in staging] == [r["proba"] for r in production]
    fresh = [{"id": f"v{i}", "observation": row["observation"]} for i, row in enumerate(rows)]
    versioned = post(client, fresh, url=url + "?version=2").get_json()["results"]
    assert {r["model_version"] for r in versioned} == {"2"}
    assert post(client, rows, url=url + "?version=9").status_code == 404
    assert post(client, rows, url="/api/v1/nope/predict/batch").status_code == 404
    assert post(client, rows, url=url + "?status=archived").status_code == 404


def test_an_ab_test_routes_each_row_by_its_id(app, client):
    started = client.post(
        "/api/v1/tiny/ab-tests",
        headers=ADMIN,
        data=json.dumps({"version_a": "1", "version_b": "2", "split": 0.5}),
    ).get_json()
    rows = [{"id": i, "observation": {"x": 0.2, "k": 1, "color": "red"}} for i in range(40)]
    results = post(client, rows, url="/api/v1/tiny/predict/batch").get_json()["results"]
    arms = [assign(started["id"], i, 0.5) for i in range(40)]
    assert [r["arm"] for r in results] == arms
    assert [r["model_version"] for r in results] == ["1" if a == "A" else "2" for a in arms]
    with app.app_context():
        stored = {p.observation_id: (p.ab_test, p.arm) for p in Prediction.select()}
    assert stored == {str(i): (started["id"], arm) for i, arm in enumerate(arms)}
    shown = client.get(f"/api/v1/tiny/ab-tests/{started['id']}").get_json()
    assert shown["arms"]["B"]["requests"] == arms.count("B")


@pytest.mark.e2e
def test_a_csv_upload_through_gunicorn(database_url, tmp_path: Path):
    env = {"MAX_BATCH_BODY_BYTES": "50000", "MODELS_DIR": str(tmp_path / "none")}
    with gunicorn(database_url, tmp_path, workers=1, env=env) as server:
        text = titanic_csv(300)
        answer = requests.post(
            f"{server.url}/predict/batch",
            files={"file": ("passengers.csv", text)},
            headers={"Accept": "text/csv"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Batch-Stored"] == "300"
        assert len(answer.text.splitlines()) == 301
        too_big = requests.post(
            f"{server.url}/predict/batch", data=titanic_csv(), headers=CSV, timeout=30
        )
        assert too_big.status_code == 413
        assert "MAX_BATCH_BODY_BYTES" in too_big.json()["error"]
