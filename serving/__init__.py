"""The prediction service: `create_app` wires settings, database, models and HTTP together."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping

import click
from flask import Flask

from serving import cli, database, dataplane, hot_loading, logs, migrations
from serving.config import Settings
from serving.dashboard import views as dashboard
from serving.errors import register_error_handlers
from serving.experiments import Experiments
from serving.http import register_blueprints
from serving.lifecycle import Lifecycle
from serving.packaging import package
from serving.predictions import Writer
from serving.registry import Registry
from serving.scoring import Scorer
from serving.shadows import Shadows

__all__ = ["create_app", "load_models", "package"]


def create_app(config: Mapping[str, object] | None = None) -> Flask:
    """Build the app: settings from the environment (overridden by `config`), migrated
    database, loaded models. A broken model folder stops here with a sentence naming it.
    Under the `flask` command line, models load when a command asks (`load_models`)."""
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
    wait = settings.micro_batch_max_wait_ms / 1000
    app.extensions["scorer"] = Scorer(settings.micro_batch_max_size, wait)
    app.extensions["writer"] = Writer(settings.micro_batch_max_size, wait)
    if _under_flask_command_line():
        # A `flask` command loads what it asks for (`load_models`): `flask routes` and
        # `--help` touch no database and unpickle nothing, `flask score` loads one endpoint;
        # `flask run` loads everything before its first request.
        @app.before_request
        def _load_before_serving() -> None:
            load_models(app)
    else:
        load_models(app)

    logs.init_app(app)
    register_error_handlers(app)
    register_blueprints(app)
    app.register_blueprint(dashboard.blueprint)
    cli.init_app(app)
    return app


_loading = threading.Lock()


def load_models(app: Flask, endpoints: Collection[str] | None = None) -> Registry:
    """Migrate the database (unless MIGRATE_ON_START is off) and load the models, once per app:
    every endpoint, or only `endpoints` for a command that needs no others. A broken model
    folder stops here with a sentence naming it."""
    with _loading:
        if "registry" in app.extensions:
            return app.extensions["registry"]
        settings: Settings = app.config["SETTINGS"]
        if settings.migrate_on_start:
            migrations.migrate()
        registry = Registry.load(settings, endpoints)
        # Versions published to the database, beside the folders (the same version in both
        # stops here with a sentence).
        hot_loading.load_at_start(registry, settings, endpoints)
        lifecycle = Lifecycle(settings.status_refresh_seconds)
        if settings.migrate_on_start:
            lifecycle.seed((e, v, s) for (e, v), s in registry.declared.items())
        wait = settings.micro_batch_max_wait_ms / 1000
        refresh = settings.status_refresh_seconds
        app.extensions["lifecycle"] = lifecycle
        app.extensions["experiments"] = Experiments(registry, lifecycle, refresh)
        app.extensions["shadows"] = Shadows(registry, refresh, settings.micro_batch_max_size, wait)
        app.extensions["services"] = dataplane.Services.of({**app.extensions, "registry": registry})
        # Each worker adds versions published later, within STATUS_REFRESH_SECONDS.
        loader = hot_loading.HotLoader(registry, settings, lifecycle.forget)
        registry.loader = loader.ensure
        app.extensions["hot_loader"] = loader
        # Published last: a concurrent first request never sees half of it.
        app.extensions["registry"] = registry
        # Nothing opened here may be inherited by forked workers (gunicorn --preload).
        database.close_all()
        return registry


def _under_flask_command_line() -> bool:
    # The `flask` command imports the app inside its click context; gunicorn, `python app.py`
    # and tests build it outside one.
    return click.get_current_context(silent=True) is not None
