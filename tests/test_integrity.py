"""Integrity under hostile input: nothing one client sends can fail another client's request.

Issue 14, item 1 (text that cannot be encoded, and one failing member of a group) and parts
of item 11 (updated_at in commit order, duplicate JSON keys).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from serving import dataplane
from serving.batch import rows
from serving.errors import BadRequest, InvalidInput
from serving.model.batching import MicroBatcher
from serving.protocol.payloads import parse_json
from serving.store import predictions
from serving.store.tables import Prediction
from tests.conftest import fit_tiny_model, fit_tiny_regression, make_app
from tests.live import gunicorn
from tests.samples import PASSENGER

TOKEN = "integrity-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
# A lone surrogate: json.loads accepts "\ud800", but no UTF-8 text can hold it.
BAD = "x\ud800"
SURROGATE = "contains a lone surrogate"


def _post(client, url: str, body: object, headers: dict | None = None):
    # json.dumps escapes the surrogate as \ud800, exactly as a hostile client would send it.
    return client.post(url, data=json.dumps(body), headers=headers or {})


def _problems(response) -> list[dict[str, str]]:
    return response.get_json()["details"]


@pytest.fixture
def admin_app(database_url: str, tmp_path: Path):
    root = tmp_path / "models"
    fit_tiny_model(root / "tiny" / "1", shift=0.5, version="1", initial_status="production")
    fit_tiny_model(root / "tiny" / "2", shift=1.5, version="2", initial_status="testing")
    fit_tiny_regression(root / "line" / "1", version="1", initial_status="production")
    application = make_app(database_url, root, admin_token=TOKEN)
    yield application
    from serving.store.database import close_all

    close_all()


# -- item 1: every client text that reaches SQL is checked as encodable ---------------------


@pytest.mark.parametrize("route", ["/predict", "/update"])
def test_an_id_with_a_lone_surrogate_is_422_naming_the_id(client, route):
    body = {"id": BAD, "observation": PASSENGER, "true_class": 1}
    response = _post(client, route, body)
    assert response.status_code == 422
    assert {"field": "id", "problem": SURROGATE} in _problems(response)
    # The service is unharmed: the next request is answered.
    assert _post(client, "/predict", {"id": "fine", "observation": PASSENGER}).status_code == 200


def test_a_string_value_or_true_class_with_a_lone_surrogate_is_422(client):
    observation = {**PASSENGER, "Cabin": "C\ud800"}
    response = _post(client, "/predict", {"id": 1, "observation": observation})
    assert response.status_code == 422
    assert {"field": "observation.Cabin", "problem": SURROGATE} in _problems(response)
    assert _post(client, "/predict", {"id": 1, "observation": PASSENGER}).status_code == 200
    response = _post(client, "/update", {"id": 1, "true_class": "\udfff"})
    assert response.status_code == 422
    assert {"field": "true_class", "problem": SURROGATE} in _problems(response)


def test_a_batch_with_one_bad_id_stores_the_other_99_rows(app, client):
    body = [{"id": f"row-{i}", "observation": PASSENGER} for i in range(100)]
    body[37]["id"] = BAD
    body[60]["observation"] = {**PASSENGER, "Embarked": "\ud800"}
    response = _post(client, "/predict/batch", body)
    assert response.status_code == 200
    answers = response.get_json()["results"]
    assert answers[37]["status"] == 422
    assert {"field": "id", "problem": SURROGATE} in answers[37]["details"]
    assert answers[60]["status"] == 422
    assert {"field": "observation.Embarked", "problem": SURROGATE} in answers[60]["details"]
    assert sum(1 for a in answers if a["status"] == 200) == 98
    with app.app_context():
        assert Prediction.select().count() == 98


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("post", "/api/v1/tiny/versions/2/status", {"status": "staging", "by": BAD}, "by"),
        ("post", "/api/v1/tiny/versions/2/status", {"status": "staging", "reason": BAD}, "reason"),
        (
            "post",
            "/api/v1/tiny/ab-tests",
            {"version_a": "1", "version_b": "2", "name": BAD},
            "name",
        ),
        ("post", "/api/v1/tiny/ab-tests", {"version_a": "1", "version_b": "2", "by": BAD}, "by"),
        ("put", "/api/v1/tiny/shadows/2", {"by": BAD}, "by"),
        ("put", "/api/v1/tiny/shadows/2", {"reason": BAD}, "reason"),
    ],
)
def test_admin_text_with_a_lone_surrogate_is_422_naming_the_field(
    admin_app, method, url, body, field
):
    client = admin_app.test_client()
    response = getattr(client, method)(url, data=json.dumps(body), headers=ADMIN)
    assert response.status_code == 422, response.get_json()
    assert {"field": field, "problem": SURROGATE} in _problems(response)


def test_the_two_admin_text_checks_share_one_rule(admin_app):
    # A status change and an A/B test refuse the same texts with the same words.
    client = admin_app.test_client()
    for text, problem in (("a\x00b", "contains NUL"), ("b" * 201, "longer than 200 characters")):
        status = _post(
            client, "/api/v1/tiny/versions/2/status", {"status": "staging", "by": text}, ADMIN
        )
        test = _post(
            client, "/api/v1/tiny/ab-tests", {"version_a": "1", "version_b": "2", "by": text}, ADMIN
        )
        assert status.status_code == test.status_code == 422
        assert {"field": "by", "problem": problem} in _problems(status)
        assert {"field": "by", "problem": problem} in _problems(test)


# -- item 1: a failure of one member never fails the others ---------------------------------


def _fails_on_bad(items: list[str]) -> list[str]:
    if any(item == "bad" for item in items):
        raise ValueError("bad item")
    return [item.upper() for item in items]


def test_a_failing_submission_fails_alone_and_the_others_get_their_results():
    calls: list[int] = []

    def process(items: list[str]) -> list[str]:
        calls.append(len(items))
        return _fails_on_bad(items)

    # max_wait gathers the five submissions into one group, which then fails.
    batcher: MicroBatcher[str, str] = MicroBatcher(process, max_batch=64, max_wait=0.3)
    submissions = [["a"], ["b", "c"], ["bad"], ["d"], ["e"]]
    barrier = threading.Barrier(len(submissions))

    def submit(items: list[str]) -> list[str] | str:
        barrier.wait()
        try:
            return batcher.submit(items)
        except ValueError as exc:
            return f"error: {exc}"

    with ThreadPoolExecutor(len(submissions)) as pool:
        answers = list(pool.map(submit, submissions))
    assert answers == [["A"], ["B", "C"], "error: bad item", ["D"], ["E"]]
    assert max(calls) > 1  # they did meet in one group


def test_an_error_declared_shared_reaches_every_member_without_retries():
    calls: list[int] = []

    def process(items: list[str]) -> list[str]:
        calls.append(len(items))
        raise ConnectionError("database down")

    batcher: MicroBatcher[str, str] = MicroBatcher(
        process, max_batch=64, max_wait=0.3, shared_errors=(ConnectionError,)
    )
    barrier = threading.Barrier(4)

    def submit(item: str) -> str:
        barrier.wait()
        try:
            batcher.submit([item])
        except ConnectionError as exc:
            return str(exc)
        return "answered"

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(submit, "abcd")) == ["database down"] * 4
    assert len(calls) < 4 or calls == [1, 1, 1, 1]


def test_group_commit_stores_the_good_rows_when_one_cannot_be_bound(app):
    # A row that slipped past validation fails alone: its neighbours in the group commit are
    # stored and answered.
    writer = predictions.Writer(max_batch=64, max_wait=0.3)
    ids = ["g1", "g2", BAD, "g3"]
    barrier = threading.Barrier(len(ids))

    def store(observation_id: str) -> str:
        item = predictions.NewPrediction(
            endpoint="default",
            model_version="1",
            observation_id=observation_id,
            observation=PASSENGER,
            proba=0.5,
            label=0,
        )
        with app.app_context():
            barrier.wait()
            try:
                [outcome] = writer.store([item])
            except Exception as exc:  # the culprit's own error, whatever it is
                return type(exc).__name__
            return "stored" if isinstance(outcome, Prediction) else "conflict"

    with ThreadPoolExecutor(len(ids)) as pool:
        answers = list(pool.map(store, ids))
    assert answers[:2] == ["stored", "stored"] and answers[3] == "stored"
    assert answers[2] != "stored"
    with app.app_context():
        stored = sorted(p.observation_id for p in Prediction.select())
    assert stored == ["g1", "g2", "g3"]


def test_a_batch_row_the_database_refuses_fails_alone(app):
    # Defence in depth behind validation: if one row of a batch still fails to store, the
    # other rows are stored and that row alone is answered with an error of its own.
    body = json.dumps([{"id": f"r{i}", "observation": PASSENGER} for i in range(100)])
    with app.app_context():
        batch = rows.from_json(body.encode(), 10_000)
        prepared = dataplane.prepare_many(app.extensions["services"], "default", batch)
        results = prepared.results
        assert results.new is not None
        results.new.observation_id[41] = BAD  # as if validation had missed it
        prepared.commit()
        assert Prediction.select().count() == 99
    assert results.status[41] in range(400, 500)
    assert [s for i, s in enumerate(results.status) if i != 41] == [200] * 99
    assert results.counts()["stored"] == 99


# -- item 11: updated_at follows commit order; duplicate keys are refused ---------------------


def test_concurrent_updates_leave_updated_at_matching_the_last_committed_truth(admin_app):
    # The regression endpoint takes any number as ground truth, so every update is distinct.
    client = admin_app.test_client()
    assert _post(client, "/api/v1/line/predict", {"id": 7, "observation": _TINY}).status_code == 200
    threads = 24
    for _round in range(3):
        barrier = threading.Barrier(threads)

        def update(value: int, barrier: threading.Barrier = barrier) -> tuple[str, float]:
            with admin_app.app_context():
                barrier.wait()
                row = predictions.record_truth("line", 7, float(value))
                return row.updated_at, json.loads(row.true_class)

        with ThreadPoolExecutor(threads) as pool:
            answers = list(pool.map(update, range(threads)))
        with admin_app.app_context():
            final = Prediction.get(Prediction.observation_id == "7")
        # The last commit holds the row: its updated_at is the latest any update was given.
        latest = max(answers, key=lambda answer: str(answer[0]))
        assert str(final.updated_at) == str(latest[0])
        assert json.loads(final.true_class) == latest[1]


_TINY = {"x": 0.1, "k": 2, "color": "red"}


def test_a_duplicate_key_is_400_naming_it(client):
    body = '{"id": 1, "id": 2, "observation": ' + json.dumps(PASSENGER) + "}"
    response = client.post("/predict", data=body)
    assert response.status_code == 400
    assert {"field": "id", "problem": "duplicate key"} in _problems(response)
    inner = json.dumps(PASSENGER)[:-1] + ', "Age": 99.0}'
    response = client.post("/predict", data='{"id": 1, "observation": ' + inner + "}")
    assert response.status_code == 400
    assert {"field": "Age", "problem": "duplicate key"} in _problems(response)
    response = client.post("/predict/batch", data='[{"id": 1, "id": 1, "observation": {}}]')
    assert response.status_code == 400
    assert (
        client.post("/predict", data=json.dumps({"id": 1, "observation": PASSENGER})).status_code
        == 200
    )


def test_parse_json_refuses_duplicates_anywhere_and_keeps_the_rest():
    assert parse_json(b'{"a": {"b": 1, "c": [{"d": 2}]}}') == {"a": {"b": 1, "c": [{"d": 2}]}}
    with pytest.raises(BadRequest) as caught:
        parse_json(b'[{"a": 1}, {"b": {"c": 1, "c": 1}}]')
    assert caught.value.details == [{"field": "c", "problem": "duplicate key"}]


def test_invalid_input_is_a_value_not_a_crash():
    # The id check itself: the same rule for every text.
    from serving.protocol.payloads import check_text

    assert check_text("fine", "by") == "fine"
    with pytest.raises(InvalidInput) as caught:
        check_text(BAD, "by")
    assert caught.value.details == [{"field": "by", "problem": SURROGATE}]


# -- item 1, end to end: poisoned traffic against a live gunicorn ----------------------------


@pytest.mark.e2e
def test_poisoned_traffic_gives_no_error_to_good_clients(database_url, tmp_path):
    clients, seconds = 24, 6.0
    good: list[int] = []
    bad: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def good_client(number: int, url: str) -> None:
        session = requests.Session()
        sent = 0
        while not stop.is_set():
            body = {"id": f"good-{number}-{sent}", "observation": PASSENGER}
            status = session.post(f"{url}/predict", data=json.dumps(body), timeout=30).status_code
            sent += 1
            with lock:
                good.append(status)

    def poisoner(url: str) -> None:
        session = requests.Session()
        sent = 0
        while not stop.is_set():
            body = {"id": f"{BAD}-{sent}", "observation": PASSENGER}
            status = session.post(f"{url}/predict", data=json.dumps(body), timeout=30).status_code
            sent += 1
            with lock:
                bad.append(status)
            stop.wait(0.05)

    with gunicorn(database_url, tmp_path, workers=2) as server:
        workers = [
            threading.Thread(target=good_client, args=(n, server.url)) for n in range(clients)
        ]
        workers.append(threading.Thread(target=poisoner, args=(server.url,)))
        for worker in workers:
            worker.start()
        time.sleep(seconds)
        stop.set()
        for worker in workers:
            worker.join(60)
    failed = sum(1 for status in good if status != 200)
    print(
        f"\npoisoned traffic: {failed} of {len(good)} good requests failed "
        f"({sum(1 for s in good if s == 500)} were 500); bad requests: "
        f"{sorted(set(bad))} x {len(bad)}"
    )
    assert len(bad) > 20
    assert failed == 0
    assert set(bad) == {422}
