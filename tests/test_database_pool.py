"""An exhausted connection pool is a 503 the client may retry, never a 500."""

from __future__ import annotations

import json
import time

from serving import create_app
from serving.store.tables import Prediction
from tests.conftest import REPO_ROOT
from tests.pools import only_connection_held
from tests.samples import PASSENGER


def test_a_request_that_finds_every_connection_busy_gets_503_and_stores_nothing(
    database_url, tmp_path
):
    app = create_app(
        {
            "database_url": database_url,
            "root_model_dir": REPO_ROOT,
            "models_dir": tmp_path / "none",
            "db_pool_size": 1,
            "db_pool_wait_seconds": 0.5,
        }
    )
    with only_connection_held():
        started = time.monotonic()
        answer = app.test_client().post(
            "/predict", data=json.dumps({"id": "busy", "observation": PASSENGER})
        )
        waited = time.monotonic() - started
        # Refused within the pool wait (and a little), with when to come back.
        assert answer.status_code == 503
        assert waited < 0.5 + 1.0
        assert int(answer.headers["Retry-After"]) >= 1
        assert "connection" in answer.get_json()["error"]
    with app.app_context():
        assert Prediction.select().where(Prediction.observation_id == "busy").count() == 0
    retried = app.test_client().post(
        "/predict", data=json.dumps({"id": "busy", "observation": PASSENGER})
    )
    assert retried.status_code == 200
