"""HTTP blueprints: they parse, call one module per step, and serialise; no logic of their own.

The dashboard (`serving.dashboard`) uses this package's helpers and is registered by the app
factory, not from here, so neither package imports the other at package level.

A view imports what needs NumPy, pandas, SciPy or scikit-learn (the data plane, quality,
drift, batch rows, OpenAPI, the retrain job) inside its function, not at the top of its module:
registering the routes must stay cheap, since `flask routes`, `flask --help` and every
`flask` command that changes one row register them too. Serving does not pay for it at the
first request: `serving.load_models` imports those modules (`serving.REQUEST_MODULES`) before
gunicorn forks its workers, so inside a view the import is a look-up in `sys.modules`."""

import json
from typing import Any

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response

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


class JsonProvider(DefaultJSONProvider):
    """Flask's own JSON, byte for byte: the standard library's encoder with Flask's defaults
    (dates, dataclasses and the like through `default`, ASCII only, NaN written as `NaN` as
    json.dumps writes it), keys in the order the answer builds them. Only faster: Flask
    builds a new encoder for every response; this one builds the compact one once."""

    sort_keys = False

    def __init__(self, app: Flask):
        super().__init__(app)
        self._encode_compact = json.JSONEncoder(
            default=self.default,
            ensure_ascii=self.ensure_ascii,
            sort_keys=False,
            separators=(",", ":"),
        ).encode

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """A JSON response, as Flask makes it (indented in debug mode)."""
        if (self.compact is None and self._app.debug) or self.compact is False:
            return super().response(*args, **kwargs)
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(f"{self._encode_compact(obj)}\n", mimetype=self.mimetype)


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
