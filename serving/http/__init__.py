"""HTTP blueprints: they parse, call one module per step, and serialise; no logic of their own."""

from flask import Flask

from serving.dashboard import views as dashboard
from serving.http import (
    batch,
    docs,
    drift,
    endpoints,
    experiments,
    health,
    metrics,
    predictions,
    quality,
)


def register_blueprints(app: Flask) -> None:
    """Attach every blueprint to the app."""
    app.register_blueprint(health.blueprint)
    app.register_blueprint(predictions.blueprint)
    app.register_blueprint(batch.blueprint)
    app.register_blueprint(endpoints.blueprint)
    app.register_blueprint(experiments.blueprint)
    app.register_blueprint(quality.blueprint)
    app.register_blueprint(metrics.blueprint)
    app.register_blueprint(drift.blueprint)
    app.register_blueprint(docs.blueprint)
    app.register_blueprint(dashboard.blueprint)
