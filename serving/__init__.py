"""The prediction service: `create_app` wires settings, database, models and HTTP together."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask

from serving import cli, database, logs, migrations
from serving.config import Settings
from serving.errors import register_error_handlers
from serving.experiments import Experiments
from serving.http import register_blueprints
from serving.lifecycle import Lifecycle
from serving.predictions import Writer
from serving.registry import Registry
from serving.scoring import Scorer
from serving.shadows import Shadows


def create_app(config: Mapping[str, object] | None = None) -> Flask:
    """Build the app: settings from the environment (overridden by `config`), migrated
    database, loaded models. A broken model folder stops here with a sentence naming it."""
    settings = Settings.from_env()
    if config:
        settings = settings.updated(config)
    logs.configure(settings.log_level)

    # No app-wide /static route: nothing is served from there (the dashboard and /docs serve
    # their own files), and every route must be in the OpenAPI document.
    app = Flask(__name__, static_folder=None)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]

    database.init_app(app, settings)
    if settings.migrate_on_start:
        migrations.migrate()
    registry = Registry.load(settings)
    app.extensions["registry"] = registry
    lifecycle = Lifecycle(settings.status_refresh_seconds)
    if settings.migrate_on_start:
        lifecycle.seed((e, v, s) for (e, v), s in registry.declared.items())
    app.extensions["lifecycle"] = lifecycle
    wait = settings.batch_max_wait_ms / 1000
    app.extensions["scorer"] = Scorer(settings.batch_max_rows, wait)
    app.extensions["writer"] = Writer(settings.batch_max_rows, wait)
    refresh = settings.status_refresh_seconds
    app.extensions["experiments"] = Experiments(registry, lifecycle, refresh)
    app.extensions["shadows"] = Shadows(registry, refresh, settings.batch_max_rows, wait)
    # Nothing opened here may be inherited by forked workers (gunicorn --preload).
    database.close_all()

    logs.init_app(app)
    register_error_handlers(app)
    register_blueprints(app)
    cli.init_app(app)
    return app
