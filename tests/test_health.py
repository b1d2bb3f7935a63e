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
