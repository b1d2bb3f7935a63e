"""Liveness and readiness."""


def test_health_answers(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_ready_checks_database_and_models(client):
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.get_json()
    assert body["checks"] == {"models_loaded": 1, "database": "ok"}


def test_ready_is_503_until_the_schema_is_migrated(database_url):
    from serving import create_app

    app = create_app({"database_url": database_url, "migrate_on_start": False})
    response = app.test_client().get("/ready")
    assert response.status_code == 503
    assert "flask --app app migrate" in response.get_json()["checks"]["database"]
    assert app.test_cli_runner().invoke(args=["migrate"]).exit_code == 0
    assert app.test_client().get("/ready").status_code == 200
