"""Reports from hourly rollups plus the newest rows give the figures of a full scan of the log,
with ground truth that arrives after its hour was rolled up, rows of the current hour, time
windows cut inside hours, and several folders at once; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.reports import quality, rollups
from serving.reports.traffic import traffic
from serving.store.dialect import rows as sql_rows
from serving.store.tables import Prediction, utcnow
from tests.conftest import fit_tiny_model, fit_tiny_regression, make_app

# The brief's bar: rollups plus raw rows agree with a full scan within 1e-9 (sums taken in
# another order differ in the last bits only).
TOLERANCE = 1e-9


@pytest.fixture
def app(database_url: str, tmp_path: Path):
    root = tmp_path / "models"
    fit_tiny_model(root / "tiny" / "1", version="1", initial_status="production")
    fit_tiny_regression(root / "line" / "1", initial_status="production")
    application = make_app(database_url, root)
    yield application
    from serving.store.database import close_all

    close_all()


def _model(app, endpoint: str):
    return app.extensions["registry"].endpoint(endpoint)["1"]


def _log(now: dt.datetime, hours: int = 30, per_hour: int = 40, seed: int = 3) -> None:
    """Predictions of both endpoints spread over the last `hours` hours, up to `now` (so the
    current hour has some), about four in five labelled."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(hours * per_hour):
        created = now - dt.timedelta(seconds=float(rng.uniform(0, hours * 3600)))
        p = float(rng.random())
        labelled = rng.random() < 0.8
        rows.append(
            {
                "endpoint": "tiny",
                "model_version": "1",
                "observation_id": f"t{i}",
                "observation": "{}",
                "proba": p,
                "value": None,
                "prediction": "1" if p >= 0.5 else "0",
                "true_class": (str(int(rng.random() < p)) if labelled else None),
                "created_at": created,
            }
        )
        value = float(rng.normal(10, 3))
        rows.append(
            {
                "endpoint": "line",
                "model_version": "1",
                "observation_id": f"l{i}",
                "observation": "{}",
                "proba": None,
                "value": value,
                "prediction": json.dumps(value),
                "true_class": (json.dumps(value + float(rng.normal())) if labelled else None),
                "created_at": created,
            }
        )
    for start in range(0, len(rows), 500):
        Prediction.insert_many(rows[start : start + 500]).execute()
    # Written around the store, so their keys too: /update finds a row through its key.
    Prediction._meta.database.execute_sql(
        "INSERT INTO prediction_key (id, endpoint, observation_id, created_at) "
        "SELECT id, endpoint, observation_id, created_at FROM prediction "
        "WHERE id NOT IN (SELECT id FROM prediction_key)"
    )


def _close(ours: Any, reference: Any, where: str = "") -> None:
    """The same JSON, numbers within TOLERANCE."""
    if isinstance(reference, dict):
        assert isinstance(ours, dict) and ours.keys() == reference.keys(), where
        for key in reference:
            _close(ours[key], reference[key], f"{where}.{key}")
    elif isinstance(reference, list):
        assert isinstance(ours, list) and len(ours) == len(reference), where
        for i, (a, b) in enumerate(zip(ours, reference, strict=True)):
            _close(a, b, f"{where}[{i}]")
    elif isinstance(reference, float) and not isinstance(ours, bool):
        assert ours == pytest.approx(reference, abs=TOLERANCE), where
    else:
        assert ours == reference, where


def _agree(app, endpoint: str, since=None, until=None) -> dict:
    """The report from rollups equals the full scan's; the full scan's, for more checks."""
    model = _model(app, endpoint)
    full = quality.measure(model, quality.logged(endpoint, "1", since, until)).to_json()
    ours = rollups.measure_logged(model, endpoint, since, until).to_json()
    _close(ours, full, endpoint)
    return full


def _rolled_labelled(endpoint: str, hour: int) -> int:
    found = sql_rows(
        "SELECT labelled FROM rollup_count WHERE endpoint = ? AND model_version = '1' AND hour = ?",
        (endpoint, hour),
    )
    return int(found[0][0]) if found else 0


@pytest.mark.parametrize("exact_rows", [10, quality.EXACT_ROWS], ids=["bucketed", "exact"])
def test_reports_from_rollups_equal_a_full_scan(app, monkeypatch, exact_rows):
    monkeypatch.setattr(quality, "EXACT_ROWS", exact_rows)
    now = utcnow()
    _log(now, hours=60)
    # Before any fold everything is raw; after, all but the newest hours are rolled up, and
    # every whole day (at least one of 60 hours) is summed per day too.
    for endpoint in ("tiny", "line"):
        _agree(app, endpoint)
    folded = rollups.fold(now)
    assert folded.sealed >= 58 and folded.sealed_hour is not None
    assert folded.sealed_hour <= rollups.hour_of(now)
    assert sql_rows("SELECT COUNT(DISTINCT day) FROM rollup_binary_daily", ())[0][0] >= 1
    for endpoint in ("tiny", "line"):
        full = _agree(app, endpoint)
        assert full["labelled"] > 0 and full["predictions"] == 2400
    # Windows cut inside hours, partly in the rolled-up hours and partly not.
    since = now - dt.timedelta(hours=50, minutes=17, seconds=3)
    until = now - dt.timedelta(hours=2, minutes=41)
    for endpoint in ("tiny", "line"):
        _agree(app, endpoint, since, until)
        _agree(app, endpoint, since=since)
        _agree(app, endpoint, until=until)
        _agree(app, endpoint, since, since + dt.timedelta(minutes=20))  # inside one hour


def test_a_late_label_counts_at_once_and_changes_its_hours_rollup(app, monkeypatch):
    monkeypatch.setattr(quality, "EXACT_ROWS", 10)
    client = app.test_client()
    now = utcnow()
    _log(now, hours=60)
    rollups.fold(now)
    # Yesterday: a whole day, rolled up per hour and per day.
    today = dt.datetime(now.year, now.month, now.day)
    unlabelled = (
        Prediction.select()
        .where(
            Prediction.true_class.is_null()
            & (Prediction.created_at >= today - dt.timedelta(days=1))
            & (Prediction.created_at < today)
        )
        .order_by(Prediction.id)
    )
    late = {row.endpoint: row for row in unlabelled}  # one old unlabelled row per endpoint
    assert late.keys() == {"tiny", "line"}
    before = {
        e: _rolled_labelled(e, rollups.hour_of(_moment(r.created_at))) for e, r in late.items()
    }
    for endpoint, row in late.items():
        truth = 1 if endpoint == "tiny" else 12.5
        answer = client.post(
            f"/api/v1/{endpoint}/update",
            data=json.dumps({"id": row.observation_id, "true_class": truth}),
        )
        assert answer.status_code == 200, answer.get_json()
    # Before the next fold: the relabelled hour is read raw, so the label counts already.
    for endpoint in ("tiny", "line"):
        _agree(app, endpoint)
    folded = rollups.fold(utcnow())
    assert folded.relabelled >= 1  # hours, of every endpoint
    for endpoint, row in late.items():
        hour = rollups.hour_of(_moment(row.created_at))
        assert _rolled_labelled(endpoint, hour) == before[endpoint] + 1
        _agree(app, endpoint)
    # A label changed again (a second /update overwrites) is followed too.
    row = late["tiny"]
    client.post("/api/v1/tiny/update", data=json.dumps({"id": row.observation_id, "true_class": 0}))
    _agree(app, "tiny")
    rollups.fold(utcnow())
    _agree(app, "tiny")


def test_new_predictions_in_the_current_hour_count_at_once(app, monkeypatch):
    monkeypatch.setattr(quality, "EXACT_ROWS", 10)
    client = app.test_client()
    now = utcnow()
    _log(now, hours=6)
    rollups.fold(now)
    for i in range(20):
        observation = {"x": 0.1 * i, "k": i % 5, "color": "red"}
        answer = client.post(
            "/api/v1/tiny/predict", data=json.dumps({"id": f"new-{i}", "observation": observation})
        )
        assert answer.status_code == 200
        client.post("/api/v1/tiny/update", data=json.dumps({"id": f"new-{i}", "true_class": 1}))
    full = _agree(app, "tiny")
    assert full["predictions"] == 6 * 40 + 20
    answer = client.get("/api/v1/tiny/performance").get_json()["versions"][0]
    _close(answer, {"version": "1", **full}, "http")
    # The widest window there is, and one at the end of time: answers, not 500s.
    widest = "since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59Z"
    answer = client.get(f"/api/v1/tiny/performance?{widest}").get_json()["versions"][0]
    _close(answer, {"version": "1", **full}, "widest")
    late = client.get("/api/v1/tiny/performance?since=9999-12-31T23:30:00Z")
    assert late.status_code == 200 and late.get_json()["versions"][0]["predictions"] == 0


def test_traffic_from_rollups_counts_as_the_log(app):
    now = utcnow()
    _log(now, hours=60, per_hour=10)
    pairs = [("tiny", "1"), ("line", "1")]
    scanned = traffic(pairs, now=now)
    assert scanned.width % rollups.HOUR == 0  # wide enough for whole hours
    rollups.fold(now)
    assert traffic(pairs, now=now) == scanned
    assert sum(scanned.series("tiny", "1")) == 600


def test_folders_at_once_take_turns_and_agree(app, monkeypatch):
    monkeypatch.setattr(quality, "EXACT_ROWS", 10)
    now = utcnow()
    _log(now, hours=50, per_hour=20)
    failures: list[BaseException] = []

    def folding() -> None:
        try:
            rollups.fold(now)
        except BaseException as exc:  # reported below, with the thread's error
            failures.append(exc)

    threads = [threading.Thread(target=folding) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    # Each hour rolled up once: no duplicate groups, whichever folder did it.
    [(groups, distinct)] = sql_rows(
        "SELECT COUNT(*), COUNT(DISTINCT endpoint || '/' || model_version || '/' || "
        "CAST(hour AS TEXT)) FROM rollup_count",
        (),
    )
    assert groups == distinct > 40
    for endpoint in ("tiny", "line"):
        _agree(app, endpoint)
    assert rollups.fold(now).sealed == 0


def test_a_periodic_fold_does_not_queue_behind_a_running_one(app, database_url):
    # The service's folds (wait=False) leave the work to a fold already running instead of
    # holding a pooled connection on its lock; `flask rollups` (wait=True) takes its turn.
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite's write transaction is the turn; there is no lock to try")
    import psycopg2

    now = utcnow()
    _log(now, hours=5, per_hour=5)
    other = psycopg2.connect(database_url)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (rollups._LOCK_KEY,))
            folded = rollups.fold(now, wait=False)
        assert folded.busy and folded.sealed == 0
        assert "another fold is running" in folded.describe()
        assert sql_rows("SELECT COUNT(*) FROM rollup_count", ()) == [(0,)]
    finally:
        other.rollback()
        other.close()
    folded = rollups.fold(now, wait=False)
    assert not folded.busy and folded.sealed > 0
    _agree(app, "tiny")


def test_a_log_that_begins_long_ago_is_folded_to_the_same_figures(app, monkeypatch):
    # One stray row years before the rest: the empty years between are sealed at once,
    # and the reports still agree with a full scan.
    monkeypatch.setattr(quality, "EXACT_ROWS", 10)
    now = utcnow()
    _log(now, hours=5, per_hour=5)
    Prediction.create(
        endpoint="tiny",
        model_version="1",
        observation_id="stray",
        observation="{}",
        proba=0.75,
        prediction="1",
        true_class="0",
        created_at=dt.datetime(2019, 5, 15, 12, 30),
    )
    folded = rollups.fold(now)
    assert folded.sealed > 24 * 365 * 6
    _agree(app, "tiny")
    assert rollups.fold(now).sealed == 0


def test_the_command_folds_and_rebuilds(app):
    now = utcnow()
    _log(now, hours=5, per_hour=5)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["rollups"])
    assert result.exit_code == 0, result.output
    assert "rolled up" in result.output and "new hour(s)" in result.output
    result = runner.invoke(args=["rollups", "--rebuild"])
    assert result.exit_code == 0, result.output
    _agree(app, "tiny")
    _agree(app, "line")


def _moment(value: Any) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
