"""Rows the schema accepts but the model's own pipeline cannot score: a 422 naming the field,
never a 500, and in a batch only the refused rows fail."""

from __future__ import annotations

import csv
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from serving.store.tables import Prediction
from tests.conftest import _tiny_frame, make_app, write_model

PREDICT = "/api/v1/raw/predict"
GOOD = {"x": 0.3, "k": 2, "color": "red"}
# x is a float column, so the schema takes null for it; the pipeline has no imputer.
BAD = {"x": None, "k": 2, "color": "red"}


def fit_binary(
    folder: Path, numbers: Any = "passthrough", colors: str = "ignore", nullable: bool = False
) -> Path:
    """A binary model of x, k and color: `numbers` is what x and k go through, `colors` what
    the color encoder does with a color it never saw. With `nullable`, k is pandas' Int64,
    whose nulls reach the pipeline as pandas.NA."""
    frame = _tiny_frame()
    if nullable:
        frame["k"] = frame["k"].astype("Int64")
    target = (frame["x"] > 0.2).astype(int)
    pipeline = make_pipeline(
        ColumnTransformer(
            [
                ("num", numbers, ["x", "k"]),
                ("cat", OneHotEncoder(handle_unknown=colors), ["color"]),
            ]
        ),
        LogisticRegression(),
    ).fit(frame, target)
    metadata = {"name": folder.parent.name, "version": "1", "initial_status": "production"}
    return write_model(folder, pipeline, frame, metadata)


def fit_without_imputer(folder: Path, nullable: bool = False) -> Path:
    """Numeric columns straight to the estimator: NaN is an error."""
    return fit_binary(folder, nullable=nullable)


@pytest.fixture
def app(database_url: str, tmp_path: Path):
    root = tmp_path / "models"
    fit_without_imputer(root / "raw" / "1")
    fit_without_imputer(root / "nullable" / "1", nullable=True)
    # A wait long enough that concurrent requests meet in one micro-batch.
    application = make_app(database_url, root, micro_batch_max_wait_ms=200.0)
    yield application
    from serving.store.database import close_all

    close_all()


def stored_ids() -> list[str]:
    return sorted(p.observation_id for p in Prediction.select())


def test_a_null_the_pipeline_cannot_take_is_a_422_naming_the_field(app, client, caplog):
    with caplog.at_level(logging.WARNING, logger="serving.model.runtime"):
        response = client.post(
            PREDICT, json={"id": "bad", "observation": BAD}, headers={"X-Request-ID": "req-7"}
        )
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert [d["field"] for d in body["details"]] == ["observation.x"]
    assert "Input X contains NaN" in body["details"][0]["problem"]
    assert "observation.x" in body["error"] and "Traceback" not in body["error"]
    # The pipeline's advice to whoever trains the model is trimmed away.
    assert len(body["error"]) < 300
    warned = [r for r in caplog.records if "refused an observation" in r.getMessage()]
    assert warned and warned[0].levelno == logging.WARNING
    with app.app_context():
        assert stored_ids() == []
    # The same model still answers a complete observation.
    assert client.post(PREDICT, json={"id": "good", "observation": GOOD}).status_code == 200


def test_a_null_in_a_nullable_integer_column_is_a_422_naming_it(app, client):
    observation = {"x": 0.3, "k": None, "color": "red"}
    response = client.post("/api/v1/nullable/predict", json={"id": 1, "observation": observation})
    assert response.status_code == 422, response.get_data(as_text=True)
    [problem] = response.get_json()["details"]
    assert problem["field"] == "observation.k" and "pandas.NA" in problem["problem"]
    with app.app_context():
        assert stored_ids() == []


def test_v2_infer_answers_a_refused_row_as_an_invalid_input(app, client):
    response = client.post(
        "/v2/models/raw/infer",
        json={
            "inputs": [
                {"name": name, "datatype": datatype, "shape": [1], "data": [BAD[name]]}
                for name, datatype in (("x", "FP64"), ("k", "INT64"), ("color", "BYTES"))
            ]
        },
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "'x', row 0" in response.get_json()["error"]


def test_a_refused_row_of_a_batch_fails_alone(app, client):
    rows = [{"id": f"r{i}", "observation": GOOD} for i in range(6)]
    rows[3] = {"id": "r3", "observation": BAD}
    response = client.post("/api/v1/raw/predict/batch", json=rows)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    statuses = [r["status"] for r in answer["results"]]
    assert statuses == [200, 200, 200, 422, 200, 200]
    refused = answer["results"][3]
    assert refused["observation_id"] == "r3"
    assert [d["field"] for d in refused["details"]] == ["observation.x"]
    assert answer["counts"]["invalid"] == 1 and answer["counts"]["stored"] == 5
    with app.app_context():
        assert stored_ids() == ["r0", "r1", "r2", "r4", "r5"]
    # Each good row got the answer it gets alone.
    alone = client.post(PREDICT, json={"id": "alone", "observation": GOOD}).get_json()
    assert answer["results"][5]["proba"] == pytest.approx(alone["proba"], abs=1e-12)


def test_a_batch_of_rows_all_refused_is_one_422_per_row(app, client):
    rows = [{"id": f"r{i}", "observation": BAD} for i in range(5)]
    answer = client.post("/api/v1/raw/predict/batch", json=rows).get_json()
    assert [r["status"] for r in answer["results"]] == [422] * 5
    with app.app_context():
        assert stored_ids() == []


def test_a_refused_request_in_a_micro_batch_fails_alone(app, client):
    gate = threading.Barrier(8)

    def call(i: int):
        observation = BAD if i == 5 else GOOD
        gate.wait()
        return app.test_client().post(PREDICT, json={"id": f"c{i}", "observation": observation})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(call, range(8)))
    assert [r.status_code for r in responses] == [200] * 5 + [422] + [200] * 2
    assert responses[5].get_json()["details"][0]["field"] == "observation.x"
    scorer = app.extensions["scorer"]
    batcher = next(iter(scorer._batchers.values()))
    # Met others in a batch at least once (else this test proves nothing about isolation).
    assert batcher.batches < 8
    with app.app_context():
        assert stored_ids() == [f"c{i}" for i in range(8) if i != 5]


def test_flask_score_answers_a_refused_row_in_the_output(app, tmp_path):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("id,x,k,color\na,0.3,2,red\nb,,2,red\nc,-1.5,1,blue\n")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["score", str(source), str(output), "--endpoint", "raw"])
    assert result.exit_code == 0, result.output
    with output.open(newline="", encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))
    assert [(line["id"], line["status"]) for line in lines] == [
        ("a", "200"),
        ("b", "422"),
        ("c", "200"),
    ]
    assert lines[1]["details"].startswith("observation.x: null, which this model cannot take")
    assert "2 answered (2 stored, 0 replayed), 1 invalid" in result.output
    with app.app_context():
        assert stored_ids() == ["a", "c"]


def test_a_model_broken_for_every_input_is_still_a_server_error(app, client):
    """An AttributeError (a pipeline pickled by another scikit-learn, say) is not the
    observation's fault: it stays a 500, and is not blamed on a field."""
    model = app.extensions["registry"].find("raw", "1")

    def broken(frame):
        raise AttributeError("'LogisticRegression' object has no attribute 'multi_class'")

    model.pipeline.predict_proba = broken
    response = client.post(PREDICT, json={"id": "g", "observation": GOOD})
    assert response.status_code == 500
    assert json.dumps(response.get_json()).count("multi_class") == 0


def fit_strict_categories(folder: Path) -> Path:
    """Numbers imputed, but a color never seen refused (a string column: the schema takes
    any text)."""
    from sklearn.impute import SimpleImputer

    return fit_binary(folder, numbers=SimpleImputer(), colors="error")


@pytest.fixture
def budgeted(database_url: str, tmp_path: Path):
    """Both models behind a CPU budget of half a second per batch."""
    root = tmp_path / "models"
    fit_without_imputer(root / "raw" / "1")
    fit_strict_categories(root / "strict" / "1")
    application = make_app(database_url, root, batch_cpu_seconds=0.5)
    yield application
    from serving.store.database import close_all

    close_all()


def test_a_batch_whose_every_row_holds_the_refused_null_is_answered_row_by_row(app):
    """Rows holding nulls in the same columns are refused together, in a few calls to the
    pipeline, not split 2n - 1 times (counted, not timed: no CPU budget to outrun)."""
    model = app.extensions["registry"].find("raw", "1")
    calls: list[int] = []
    original = model.pipeline.predict_proba

    def counted(frame):
        calls.append(len(frame))
        return original(frame)

    model.pipeline.predict_proba = counted
    rows = [{"id": f"r{i}", "observation": BAD} for i in range(2000)]
    rows[7] = {"id": "r7", "observation": GOOD}
    response = app.test_client().post("/api/v1/raw/predict/batch", json=rows)
    # The whole batch, a typical row once, the null group, the same rows with the typical
    # value in place of the null, the one good row; splitting would take about 4,000.
    assert len(calls) <= 6, calls
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    answer = response.get_json()
    assert [r["status"] for r in answer["results"]].count(422) == 1999
    assert answer["results"][7]["status"] == 200
    assert {d["field"] for r in answer["results"] if r["status"] == 422 for d in r["details"]} == {
        "observation.x"
    }
    with app.app_context():
        assert stored_ids() == ["r7"]


def test_finding_the_refused_rows_of_a_hostile_batch_stops_at_the_cpu_budget(budgeted):
    """Rows refused for something other than a null are found by splitting, 2n - 1 calls
    when all are: BATCH_CPU_SECONDS bounds them (413, nothing stored)."""
    rows = [
        {"id": f"r{i}", "observation": {"x": 0.1, "k": 1, "color": f"mauve-{i}"}}
        for i in range(2000)
    ]
    response = budgeted.test_client().post("/api/v1/strict/predict/batch", json=rows)
    assert response.status_code == 413, response.get_data(as_text=True)[:300]
    assert "finding the rows version 1 refuses" in json.dumps(response.get_json())
    with budgeted.app_context():
        assert stored_ids() == []


def test_a_null_is_not_blamed_for_a_refusal_about_something_else(budgeted):
    # The pipeline imputes x; it refuses the color. Its message mentions neither NaN nor
    # missing values, so the observation is named, not the null field.
    client = budgeted.test_client()
    response = client.post(
        "/api/v1/strict/predict",
        json={"id": "u", "observation": {"x": None, "k": 1, "color": "banana"}},
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert [d["field"] for d in response.get_json()["details"]] == ["observation"]
    assert "banana" in response.get_json()["details"][0]["problem"]
    assert (
        client.post(
            "/api/v1/strict/predict",
            json={"id": "n", "observation": {"x": None, "k": 1, "color": "red"}},
        ).status_code
        == 200
    )


# Switched on once the pipeline below is fitted: from then on it raises ValueError for every
# input, as a pipeline does whose own state is broken (a file it reads gone, say).
_BROKEN = {"on": False}


def _breaks_when_switched_on(frame):
    if _BROKEN["on"]:
        raise ValueError("could not convert the lookup table: it is empty")
    return frame


def test_a_model_that_refuses_every_input_answers_500(database_url, tmp_path, caplog):
    """A pipeline raising ValueError for any input, its typical training row included, is
    broken, not refusing the client's observation: 500 and an ERROR line, never a 422."""
    from sklearn.preprocessing import FunctionTransformer

    from serving.model.profile import profile_frame

    frame = _tiny_frame()
    pipeline = make_pipeline(
        FunctionTransformer(_breaks_when_switched_on, check_inverse=False),
        ColumnTransformer(
            [
                ("num", "passthrough", ["x", "k"]),
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["color"]),
            ]
        ),
        LogisticRegression(),
    ).fit(frame, (frame["x"] > 0.2).astype(int))
    root = tmp_path / "models"
    metadata = {
        "name": "broken",
        "version": "1",
        "initial_status": "production",
        "profile": profile_frame(frame),
    }
    write_model(root / "broken" / "1", pipeline, frame, metadata)
    app = make_app(database_url, root)
    _BROKEN["on"] = True
    try:
        with caplog.at_level(logging.ERROR, logger="serving.model.runtime"):
            response = app.test_client().post(
                "/api/v1/broken/predict", json={"id": "m", "observation": GOOD}
            )
        assert response.status_code == 500, response.get_data(as_text=True)
        assert any("broken for every input" in r.getMessage() for r in caplog.records)
        with app.app_context():
            assert stored_ids() == []
    finally:
        _BROKEN["on"] = False
        from serving.store.database import close_all

        close_all()


def test_a_shadow_skips_the_rows_its_pipeline_refuses_without_searching_them(
    database_url, tmp_path
):
    """The answering version imputes x, its shadow cannot take a null there: a batch of such
    rows is answered and stored, and the shadow skips them in a call or two per group of
    rows (its scores are optional), not 2n - 1 calls spent after the answer."""
    from tests.conftest import fit_tiny_model

    root = tmp_path / "models"
    fit_tiny_model(root / "mixed" / "1", version="1", initial_status="production")
    folder = fit_without_imputer(root / "mixed" / "2")
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(
        json.dumps({**meta, "version": "2", "initial_status": "testing"})
    )
    app = make_app(database_url, root, admin_token="t")
    try:
        client = app.test_client()
        admin = {"Authorization": "Bearer t"}
        assert client.put("/api/v1/mixed/shadows/2", headers=admin).status_code == 200
        shadow = app.extensions["registry"].find("mixed", "2")
        calls = []
        original = shadow.pipeline.predict_proba

        def counted(frame):
            calls.append(len(frame))
            return original(frame)

        shadow.pipeline.predict_proba = counted
        rows = [{"id": f"s{i}", "observation": BAD} for i in range(300)]
        rows[10] = {"id": "s10", "observation": GOOD}
        response = client.post("/api/v1/mixed/predict/batch", json=rows)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        assert {r["status"] for r in response.get_json()["results"]} == {200}
        # The whole batch, a typical row once (the model's first refusal: is it broken for
        # every input?), then one call per group of rows with the same nulls.
        assert sorted(calls) == [1, 1, 299, 300], calls
        with app.app_context():
            from serving.store.tables import ShadowScore

            scored = [s.prediction_id for s in ShadowScore.select()]
            ids = {p.id: p.observation_id for p in Prediction.select()}
        assert [ids[i] for i in scored] == ["s10"]
    finally:
        from serving.store.database import close_all

        close_all()
