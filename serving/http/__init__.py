"""HTTP blueprints: they parse, call one module per step, and serialise; no logic of their own.

The dashboard (`serving.dashboard`) uses this package's helpers and is registered by the app
factory, not from here, so neither package imports the other at package level.

A view imports what needs NumPy, pandas, SciPy or scikit-learn (the data plane, quality,
drift, batch rows, OpenAPI, the retrain job) inside its function, not at the top of its module:
registering the routes must stay cheap, since `flask routes`, `flask --help` and every
`flask` command that changes one row register them too. Serving does not pay for it at the
first request: `serving.load_models` imports those modules (`serving.REQUEST_MODULES`) before
gunicorn forks its workers, so inside a view the import is a look-up in `sys.modules`."""

from flask import Flask, request

from serving.http import (
    auth,
    batch,
    docs,
    drift,
    endpoints,
    experiments,
    health,
    metrics,
    predictions,
    publishing,
    quality,
    retraining,
    v2,
)

# The blueprints whose every route is a prediction route.
CLIENT_BLUEPRINTS = frozenset(
    {predictions.blueprint.name, batch.blueprint.name, v2.infer_blueprint.name}
)


def register_blueprints(app: Flask) -> None:
    """Attach every API blueprint to the app (the dashboard's is the factory's)."""

    # The prediction routes (single, update, batch, v2 infer; tutorial and /api/v1 forms) check the
    # client first, before any body is read (nothing to check while PREDICT_AUTH is off).
    @app.before_request
    def check_client() -> None:
        if request.blueprint in CLIENT_BLUEPRINTS:
            auth.require_client()

    app.register_blueprint(health.blueprint)
    app.register_blueprint(predictions.blueprint)
    app.register_blueprint(batch.blueprint)
    app.register_blueprint(endpoints.blueprint)
    app.register_blueprint(publishing.blueprint)
    app.register_blueprint(experiments.blueprint)
    app.register_blueprint(retraining.blueprint)
    app.register_blueprint(quality.blueprint)
    app.register_blueprint(metrics.blueprint)
    app.register_blueprint(drift.blueprint)
    app.register_blueprint(docs.blueprint)
    app.register_blueprint(v2.blueprint)
    app.register_blueprint(v2.infer_blueprint)
