"""Quality stays valid JSON whatever finite values arrive (issue 14, item 9).

A regression's ground truth of 1e308 used to overflow PostgreSQL's sums (a 500 on
/performance and the dashboard) and give `"rmse": Infinity` on SQLite, which is not JSON.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from serving.store.tables import Prediction
from tests.conftest import REPO_ROOT, fit_tiny_regression, make_app

HEIGHT = {"height": 65}


def _strict(text: str) -> object:
    """Parse JSON as the standard says: Infinity and NaN are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def app(database_url: str, tmp_path: Path):
    root = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "models" / "heights", root / "heights")
    fit_tiny_regression(
        root / "ranged" / "1",
        initial_status="production",
        target_range={"min": -5.0, "max": 10.0},
    )
    application = make_app(database_url, root)
    yield application
    from serving.store.database import close_all

    close_all()


@pytest.fixture
def client(app):
    return app.test_client()


def _predict(client, endpoint: str, observation_id: str, observation: dict) -> None:
    answer = client.post(
        f"/api/v1/{endpoint}/predict",
        data=json.dumps({"id": observation_id, "observation": observation}),
    )
    assert answer.status_code == 200, answer.get_json()


def _update(client, endpoint: str, observation_id: str, truth: object):
    return client.post(
        f"/api/v1/{endpoint}/update",
        data=json.dumps({"id": observation_id, "true_class": truth}),
    )


@pytest.mark.parametrize("truth", [1e308, -1e308, 1e151, -2e150])
def test_a_huge_regression_truth_is_refused_naming_true_class(client, truth):
    _predict(client, "heights", "h1", HEIGHT)
    answer = _update(client, "heights", "h1", truth)
    assert answer.status_code == 422, answer.get_json()
    assert answer.get_json()["details"][0]["field"] == "true_class"
    assert Prediction.get().true_class is None


def test_a_truth_within_the_bound_is_accepted(client):
    _predict(client, "heights", "h1", HEIGHT)
    assert _update(client, "heights", "h1", 1e9).status_code == 200
    assert _update(client, "heights", "h1", 150.5).status_code == 200


def test_a_model_with_a_target_range_refuses_far_outside_it(client):
    _predict(client, "ranged", "r1", {"x": 0.1, "k": 1, "color": "red"})
    # The range is [-5, 10]: 100 times its width either side is still accepted.
    assert _update(client, "ranged", "r1", 1000.0).status_code == 200
    answer = _update(client, "ranged", "r1", 1e7)
    assert answer.status_code == 422
    [problem] = answer.get_json()["details"]
    assert problem["field"] == "true_class"
    assert "target_range" in problem["problem"]


def _store_huge_truth(client) -> None:
    # As a database written before the bound holds it: the truth goes straight in.
    for i in range(5):
        _predict(client, "heights", f"h{i}", {"height": 60 + i})
        assert _update(client, "heights", f"h{i}", 150.0 + i).status_code == 200
    Prediction.update(true_class="1e+308").where(Prediction.observation_id == "h0").execute()


def test_performance_stays_valid_json_with_a_huge_stored_truth(client):
    _store_huge_truth(client)
    answer = client.get("/api/v1/heights/performance")
    assert answer.status_code == 200
    [report] = _strict(answer.get_data(as_text=True))["versions"]
    assert report["labelled"] == 5
    assert report["metrics"] == {"mae": None, "rmse": None, "r2": None}
    assert set(report["reasons"]) == {"mae", "rmse", "r2"}
    assert "1 labelled row" in report["reasons"]["rmse"]


def test_dashboard_renders_with_a_huge_stored_truth(client):
    _store_huge_truth(client)
    assert client.get("/dashboard/heights").status_code == 200


def test_large_but_measurable_errors_keep_valid_json(client):
    # Errors of 1e60: their fourth powers would overflow the interval's sums, the metric not.
    for i in range(4):
        _predict(client, "heights", f"h{i}", {"height": 60 + i})
        assert _update(client, "heights", f"h{i}", 1e60 * (i + 1)).status_code == 200
    answer = client.get("/api/v1/heights/performance")
    assert answer.status_code == 200
    [report] = _strict(answer.get_data(as_text=True))["versions"]
    assert report["metrics"]["mae"] == pytest.approx(2.5e60)
    assert report["metrics"]["rmse"] == pytest.approx((30 / 4) ** 0.5 * 1e60)
    assert "rmse" not in report["intervals"]


def test_shadow_comparison_stays_valid_json_with_a_huge_stored_truth(app, client):
    from serving.decisions.shadows import Shadows

    shadows: Shadows = app.extensions["shadows"]
    _store_huge_truth(client)
    # A shadow score per stored row, as the shadow version itself would have given.
    from serving.store.tables import ShadowScore

    for row in Prediction.select():
        ShadowScore.create(
            prediction_id=row.id, endpoint="heights", model_version="1", value=row.value
        )
    compared = shadows.compare("heights", "1")
    text = json.dumps(compared, allow_nan=False)
    assert _strict(text)["shadow"]["metrics"]["rmse"]["value"] is None


def test_an_estimate_that_is_not_finite_becomes_null_with_a_reason():
    from serving.reports.statistics import Estimate

    assert Estimate(float("inf"), 1.0, 2.0).finite().to_json() == {
        "value": None,
        "low": None,
        "high": None,
        "reason": "not a finite number (inf)",
    }
    assert Estimate(3.0, float("-inf"), float("nan")).finite() == Estimate(3.0)
    assert Estimate(3.0, 2.0, 4.0).finite() == Estimate(3.0, 2.0, 4.0)


def test_the_document_gives_each_regression_its_truth_bounds(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    heights = schemas["heights.UpdateRequest"]["properties"]["true_class"]
    assert (heights["minimum"], heights["maximum"]) == (-1e100, 1e100)
    # [-5, 10] widened by 100 widths of 15 either side.
    ranged = schemas["ranged.UpdateRequest"]["properties"]["true_class"]
    assert (ranged["minimum"], ranged["maximum"]) == (-1505.0, 1510.0)
