"""Batch building blocks: column-wise validation, CSV cells, canonical JSON, column scoring and
bulk storage each agree with their one-row counterparts."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pandas as pd
import pytest
from pandas._libs.parsers import STR_NA_VALUES

from serving.batch import cells
from serving.errors import InvalidInput
from serving.model.runtime import LoadedModel
from serving.model.schema import InputSchema
from serving.protocol.payloads import NonFinite
from serving.store import predictions
from serving.store.predictions import NewPredictions, canonical_json, save
from serving.store.tables import Prediction, utcnow
from tests.conftest import REPO_ROOT, fit_tiny_multiclass, fit_tiny_regression
from tests.samples import PASSENGER

# Values of every JSON type, the awkward ones included.
AWKWARD = [
    None,
    0,
    3,
    -2,
    2.5,
    22.0,
    1e300,
    10**20,
    10**400,
    True,
    False,
    "",
    "S",
    "male",
    "C85",
    "abc",
    'é"\\\n',
    [],
    {},
    NonFinite(float("inf")),
    NonFinite(float("-inf")),
]


@pytest.fixture(scope="module")
def titanic() -> LoadedModel:
    return LoadedModel.load(REPO_ROOT, "default")


def _outcome(schema: InputSchema, observation, reject: bool = False):
    try:
        return schema.validate(observation, reject_surprises=reject)
    except InvalidInput as error:
        return error.to_dict()


def test_validate_many_says_exactly_what_validate_says(titanic):
    schema = titanic.schema
    rng = random.Random(7)
    observations = []
    for _ in range(3000):
        observation = {name: rng.choice(AWKWARD) for name in schema.by_name if rng.random() > 0.1}
        if rng.random() < 0.5:
            # Mostly plausible rows, so that valid ones and surprises are common too.
            observation.update({k: v for k, v in PASSENGER.items() if rng.random() < 0.7})
        if rng.random() < 0.1:
            observation["Extra"] = 1
        observations.append(observation)
    observations += [None, [], "x", 5, dict(PASSENGER)]
    for reject in (False, True):
        checked = schema.validate_many(observations, reject_surprises=reject)
        for i, observation in enumerate(observations):
            expected = _outcome(schema, observation, reject)
            if i in checked.errors:
                assert checked.errors[i].to_dict() == expected, observation
            else:
                clean = {name: checked.columns[name][i] for name in schema.by_name}
                assert (clean, checked.warnings[i]) == expected, observation
                # Normalised exactly alike: same types, so the same stored text.
                assert canonical_json(clean) == canonical_json(expected[0])


def test_numbers_too_large_for_the_column_are_422_not_500(client):
    for field, value in (("Age", 10**400), ("Parch", 10**20), ("Parch", -(2**63) - 1)):
        observation = {**PASSENGER, field: value}
        answer = client.post("/predict", data=json.dumps({"id": field, "observation": observation}))
        assert answer.status_code == 422
        assert answer.get_json()["details"][0]["field"] == f"observation.{field}"


def test_missing_cells_are_pandas_default_markers():
    assert frozenset(STR_NA_VALUES) == cells.MISSING_CELLS
    read = pd.read_csv(io.StringIO("a\n" + "\n".join(f'"{t}"' for t in sorted(STR_NA_VALUES))))
    assert read["a"].isna().all()


def test_csv_cells_become_the_json_values_they_spell(titanic):
    fields = titanic.schema.by_name
    assert cells.values(fields["Age"], ["22", "", "NA", "7.5", "abc", "inf", "+nan", "1e999"]) == [
        22.0,
        None,
        None,
        7.5,
        "abc",
        NonFinite(float("inf")),
        None,
        NonFinite(float("inf")),
    ]
    assert cells.values(fields["Pclass"], ["3", "3.0", "3.5", "", " 2 ", float("nan")]) == [
        3,
        3.0,
        3.5,
        None,
        2,
        None,
    ]
    assert cells.values(fields["Sex"], ["male", "", "null", " x "]) == ["male", None, None, " x "]


def test_canonical_json_in_bulk_spells_every_row_as_canonical_json():
    rng = random.Random(3)
    plain = [None, 0, -7, 2**70, 0.1, 1e-7, 1e22, -0.0, 22.0, True, False, "", "a,b", 'q"\\é\x00']
    rows = [{k: rng.choice(plain) for k in ("b", "a", "%s", 'k"')} for _ in range(2000)]
    columns = {k: [row[k] for row in rows] for k in rows[0]}
    assert predictions.canonical_json_rows(columns, len(rows)) == [canonical_json(r) for r in rows]
    for k, column in columns.items():
        assert predictions.canonical_json_each(column) == [canonical_json(v) for v in column], k
    numbers = [1.5, None, 3, True]
    assert predictions.canonical_json_each(numbers) == ["1.5", "null", "3", "true"]
    with pytest.raises(ValueError):
        predictions.canonical_json_each([1.0, float("nan")])
    assert predictions.canonical_json_rows({}, 2) == ["{}", "{}"]


def test_column_scoring_equals_predict_proba_on_the_same_frame(titanic):
    frame = pd.read_csv(REPO_ROOT / "data" / "titanic.csv")[titanic.columns]
    observations = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]
    checked = titanic.schema.validate_many(observations)
    assert not checked.errors
    scores = titanic.predict_columns(checked.columns)
    expected = titanic.pipeline.predict_proba(frame.astype(titanic.dtypes))[:, 1]
    np.testing.assert_allclose(scores.proba, expected, rtol=0, atol=1e-12)
    assert scores.labels == [int(p > 0.5) for p in expected]
    # The single-prediction path (compiled when exact) scores the same rows the same way.
    singles = titanic.predict([titanic.schema.validate(o)[0] for o in observations])
    assert [s.proba for s in scores.rows()] == pytest.approx([s.proba for s in singles], abs=1e-12)


def test_column_scoring_of_multiclass_and_regression(tmp_path):
    tiers = LoadedModel.load(fit_tiny_multiclass(tmp_path / "tiers"), "tiers", "1")
    line = LoadedModel.load(fit_tiny_regression(tmp_path / "line"), "line", "1")
    rows = [{"x": x, "k": 1, "color": "red"} for x in (-2.0, 0.0, 2.0)]
    columns = {name: [row[name] for row in rows] for name in ("x", "k", "color")}
    for model in (tiers, line):
        bulk, single = model.predict_columns(columns).rows(), model.predict(rows)
        assert [s.label for s in bulk] == [s.label for s in single]
        assert [s.proba for s in bulk] == pytest.approx([s.proba for s in single], abs=1e-9)
        assert [s.value for s in bulk] == pytest.approx([s.value for s in single], abs=1e-9)
        if model is tiers:
            assert list(bulk[0].probabilities) == ["high", "low", "mid"]


def _batch(ids, observation='{"x":1}') -> NewPredictions:
    n = len(ids)
    observations = [observation(i) if callable(observation) else observation for i in ids]
    return NewPredictions(
        endpoint=["default"] * n,
        model_version=["1"] * n,
        observation_id=[str(i) for i in ids],
        observation=observations,
        proba=[0.25] * n,
        prediction=["0"] * n,
        probabilities=[None] * n,
        value=[None] * n,
        ab_test=[None] * n,
        arm=[None] * n,
        created_at=[utcnow()] * n,
    )


def test_save_answers_ids_replays_and_conflicts(app):
    with app.app_context():
        first = save(_batch(["a", "b", "a", "a"], lambda i: '{"x":1}'))
        assert isinstance(first[0], int) and first[2] == first[0]
        assert isinstance(first[1], int) and first[1] != first[0]
        assert first[3] == first[0]
        mixed = save(_batch(["a", "c", "a"], lambda i: '{"x":2}'))
        assert mixed[0] is None and mixed[2] is None  # stored earlier, another observation
        again = save(_batch(["b"]))
        assert isinstance(again[0], Prediction) and again[0].id == first[1]
        assert Prediction.select().count() == 3


def test_save_in_bulk_stores_each_id_once_and_replays_a_repeated_file(app):
    """Large enough for PostgreSQL's COPY path; the second file overlaps the first."""
    text = 'tab\there, "quote", back\\slash, new\nline, é'
    observation = predictions.canonical_json({"t": text})
    with app.app_context():
        ids = list(range(2500))
        first = save(_batch(ids, observation))
        assert all(isinstance(o, int) for o in first) and len(set(first)) == 2500
        stored = Prediction.get(Prediction.observation_id == "17")
        assert stored.observation == observation and stored.id == first[17]
        overlap = list(range(2000, 4500))
        second = save(_batch(overlap, lambda i: observation if i < 2400 else '{"t":"other"}'))
        replays = second[:500]
        assert [o.id for o in replays[:400]] == first[2000:2400]
        assert replays[400:] == [None] * 100
        assert all(isinstance(o, int) for o in second[500:])
        assert Prediction.select().count() == 4500
        ids_in_db = [p.observation_id for p in Prediction.select(Prediction.observation_id)]
        assert sorted(ids_in_db) == sorted(str(i) for i in range(4500))
        # Every id stored already: all replays, nothing new.
        again = save(_batch(ids, observation))
        assert [o.id for o in again] == first
        assert Prediction.select().count() == 4500


def test_store_keeps_its_contract_on_top_of_save(app):
    with app.app_context():
        item = predictions.NewPrediction("default", "1", 7, {"x": 1.0}, 0.5, 1)
        [stored] = predictions.store([item])
        assert isinstance(stored, Prediction) and stored.observation_id == "7"
        replay, clash = predictions.store(
            [item, predictions.NewPrediction("default", "1", "7", {"x": 2.0}, 0.5, 1)]
        )
        assert replay.id == stored.id
        assert clash.status == 409 and "7" in clash.message
