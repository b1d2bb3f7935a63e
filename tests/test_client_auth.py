"""Client authentication on the prediction routes (issue 14, item 10).

Off by default, the tutorial flow is unchanged, but /update no longer shows the stored
observation to whoever guesses an id. With PREDICT_AUTH on (or PREDICT_TOKEN set), /predict,
/update and /predict/batch in both forms need ADMIN_TOKEN, PREDICT_TOKEN or an active API key.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from serving.config import Settings
from serving.decisions import clients
from serving.store.tables import ApiKey, Prediction
from tests.conftest import make_app
from tests.samples import PASSENGER

ADMIN_TOKEN = "admin-secret"
PREDICT_TOKEN = "shared-client-secret"


def _predict(client, n: int = 1, path: str = "/predict", **headers):
    return client.post(path, data=json.dumps({"id": n, "observation": PASSENGER}), headers=headers)


def _update(client, n: int = 1, path: str = "/update", **headers):
    return client.post(path, data=json.dumps({"id": n, "true_class": 1}), headers=headers)


def _batch(client, n: int = 1, path: str = "/predict/batch", **headers):
    body = [{"id": f"b{n}", "observation": PASSENGER}]
    return client.post(path, data=json.dumps(body), headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(database_url: str, tmp_path: Path):
    """The app with client authentication on, a shared token and an admin token."""
    application = make_app(
        database_url,
        tmp_path / "no-more-models",
        predict_auth=True,
        predict_token=PREDICT_TOKEN,
        admin_token=ADMIN_TOKEN,
    )
    yield application
    from serving.store.database import close_all

    close_all()


# Off by default: the tutorial works, and /update keeps the observation to itself.


def test_auth_is_off_by_default_and_the_tutorial_flow_works(client):
    assert _predict(client).status_code == 200
    assert _batch(client).status_code == 200
    assert _update(client).status_code == 200


def test_an_anonymous_update_does_not_echo_the_stored_observation(client):
    predicted = _predict(client).get_json()
    answer = _update(client)
    assert answer.status_code == 200
    body = answer.get_json()
    assert "observation" not in body
    # Still useful: which row, what was predicted, the truth and when it arrived.
    assert body["id"] == predicted["id"]
    assert body["observation_id"] == 1
    assert body["prediction"] == predicted["prediction"]
    assert body["proba"] == predicted["proba"]
    assert body["true_class"] == 1
    assert body["updated_at"] is not None


def test_predict_token_alone_turns_auth_on():
    assert not Settings.from_env({}).predict_auth
    assert Settings.from_env({"PREDICT_TOKEN": "x"}).predict_auth
    assert not Settings.from_env({"PREDICT_TOKEN": "x", "PREDICT_AUTH": "off"}).predict_auth
    assert Settings.from_env({"PREDICT_AUTH": "on"}).predict_auth
    with pytest.raises(ValueError, match="PREDICT_AUTH must be true or false"):
        Settings.from_env({"PREDICT_AUTH": "keys please"})


# On: every prediction route, in both forms, needs a credential.

ROUTES = [
    (_predict, "/predict"),
    (_update, "/update"),
    (_batch, "/predict/batch"),
    (_predict, "/api/v1/default/predict"),
    (_update, "/api/v1/default/update"),
    (_batch, "/api/v1/default/predict/batch"),
]


@pytest.mark.parametrize(("call", "path"), ROUTES)
def test_without_a_token_every_prediction_route_is_401(secured, call, path):
    client = secured.test_client()
    answer = call(client, path=path)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert set(answer.get_json()) == {"error", "details"}
    assert Prediction.select().count() == 0


@pytest.mark.parametrize(("call", "path"), ROUTES)
def test_a_wrong_token_is_403_on_every_prediction_route(secured, call, path):
    client = secured.test_client()
    answer = call(client, path=path, **bearer("guessed"))
    assert answer.status_code == 403
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert Prediction.select().count() == 0


@pytest.mark.parametrize("token", [PREDICT_TOKEN, ADMIN_TOKEN])
def test_predict_token_and_admin_token_are_accepted(secured, token):
    client = secured.test_client()
    assert _predict(client, **bearer(token)).status_code == 200
    assert _batch(client, **bearer(token)).status_code == 200
    answer = _update(client, **bearer(token))
    assert answer.status_code == 200
    # An authenticated caller gets the stored row whole.
    assert answer.get_json()["observation"] == PASSENGER


def test_other_routes_stay_open(secured):
    client = secured.test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/api/v1/endpoints").status_code == 200


# API keys: hashed at rest, managed with `flask keys`, revocation within the refresh.


def test_an_api_key_works_and_only_its_hash_is_stored(secured):
    with secured.app_context():
        key = clients.create_key("alice", "test")
    assert key.startswith(clients.KEY_PREFIX) and len(key) > 40
    client = secured.test_client()
    assert _predict(client, **bearer(key)).status_code == 200
    [row] = ApiKey.select()
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in json.dumps([str(v) for v in row.__data__.values()])


def test_a_revoked_key_is_403_within_the_refresh(database_url: str, tmp_path: Path):
    app = make_app(database_url, tmp_path / "none", predict_auth=True, status_refresh_seconds=0.5)
    client = app.test_client()
    with app.app_context():
        key = clients.create_key("bob", "test")
    assert _predict(client, 1, **bearer(key)).status_code == 200
    with app.app_context():
        assert clients.revoke_key("bob") is True
        assert clients.revoke_key("bob") is False
    # The worker's cache may still hold the key for up to STATUS_REFRESH_SECONDS ...
    time.sleep(0.6)
    answer = _predict(client, 2, **bearer(key))
    assert answer.status_code == 403
    assert "revoked" in answer.get_json()["error"]
    from serving.store.database import close_all

    close_all()


def test_flask_keys_create_list_and_revoke(secured):
    runner = secured.test_cli_runner()
    created = runner.invoke(args=["keys", "create", "carol"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith(clients.KEY_PREFIX)
    assert "shown only this once" in created.stderr
    client = secured.test_client()
    assert _predict(client, **bearer(key)).status_code == 200

    again = runner.invoke(args=["keys", "create", "carol"])
    assert again.exit_code != 0 and "exists already" in again.output

    listed = runner.invoke(args=["keys", "list"])
    assert listed.exit_code == 0
    assert "carol\tactive" in listed.stdout
    assert key not in listed.output

    revoked = runner.invoke(args=["keys", "revoke", "carol"])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert "carol\trevoked" in runner.invoke(args=["keys", "list"]).stdout
    assert _predict(client, 2, **bearer(key)).status_code == 403

    unknown = runner.invoke(args=["keys", "revoke", "nobody"])
    assert unknown.exit_code != 0 and "No key is named" in unknown.output


def test_keys_are_not_checked_while_auth_is_off(client, app):
    with app.app_context():
        clients.create_key("dave", "test")
    assert _predict(client).status_code == 200


# The OpenAPI document says what the server does.


def test_the_document_lists_client_auth_only_when_it_is_on(secured, client):
    on = secured.test_client().get("/openapi.json").get_json()
    off = client.get("/openapi.json").get_json()
    assert "clientToken" in on["components"]["securitySchemes"]
    assert "clientToken" not in off["components"]["securitySchemes"]
    for path in ("/predict", "/update", "/predict/batch", "/api/v1/default/update"):
        operation = on["paths"][path]["post"]
        assert operation["security"] == [{"clientToken": []}, {"adminToken": []}]
        assert {"401", "403"} <= set(operation["responses"])
        # Public while auth is off: no credentials (Redocly's security-defined rule).
        assert off["paths"][path]["post"]["security"] == []
        assert "401" not in off["paths"][path]["post"]["responses"]
    assert "observation" not in on["components"]["schemas"]["Updated"]["required"]


# Under gunicorn: every worker refuses a revoked key within STATUS_REFRESH_SECONDS.


@pytest.mark.e2e
def test_revocation_reaches_every_gunicorn_worker_within_the_refresh(
    database_url: str, tmp_path: Path
):
    import requests

    from tests.live import gunicorn

    refresh = 1.0
    env = {
        "PREDICT_AUTH": "on",
        "STATUS_REFRESH_SECONDS": str(refresh),
        "MODELS_DIR": str(tmp_path / "no-more-models"),
        "LOG_LEVEL": "WARNING",
    }
    with gunicorn(database_url, tmp_path, workers=2, env=env) as server:
        tools = make_app(database_url, tmp_path / "no-more-models")
        with tools.app_context():
            key = clients.create_key("erin", "test")

        def statuses(first: int) -> list[int]:
            # A new connection per request, so both workers answer some of them.
            return [
                requests.post(
                    f"{server.url}/predict",
                    data=json.dumps({"id": f"g{first + i}", "observation": PASSENGER}),
                    headers={**bearer(key), "Connection": "close"},
                    timeout=30,
                ).status_code
                for i in range(16)
            ]

        assert set(statuses(0)) == {200}
        with tools.app_context():
            clients.revoke_key("erin")
        revoked_at = time.monotonic()
        time.sleep(refresh + 0.2)
        assert set(statuses(100)) == {403}
        assert time.monotonic() - revoked_at < refresh + 5
        anonymous = requests.post(f"{server.url}/predict", data="{}", timeout=30)
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    from serving.store.database import close_all

    close_all()
