"""The prediction service: `create_app` wires settings, database, models and HTTP together."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import click
from flask import Flask

from serving import logs
from serving.commands import cli
from serving.config import Settings
from serving.dashboard import views as dashboard
from serving.decisions.lifecycle import Lifecycle
from serving.errors import register_error_handlers
from serving.http import JsonProvider, register_blueprints
from serving.model.scoring import Scorer
from serving.store import database, migrations
from serving.store.predictions import Writer

if TYPE_CHECKING:
    from serving.model.packaging import package
    from serving.model.registry import Registry

__all__ = ["create_app", "load_models", "package"]

# What a request can need beyond the routes themselves, which import it lazily (see
# serving.http): the data plane and what it scores, stores and measures with (NumPy, pandas,
# SciPy, scikit-learn), batch rows and answers, drift, the OpenAPI document, the dashboard's
# pages, the retrain job. Imported by `load_models` when it loads every endpoint, as serving
# does: gunicorn builds the app before it forks its workers (preload_app), so they inherit
# these modules and no first request pays seconds for them. A `flask` command that loads one
# endpoint (score, retrain) imports what it uses; one that loads none (set-status, routes,
# keys, --help) never imports them and starts in a fraction of a second.
REQUEST_MODULES = (
    "serving.dataplane",
    "serving.batch.render",
    "serving.batch.rows",
    "serving.reports.quality",
    "serving.reports.drift",
    "serving.openapi",
    "serving.dashboard.pages",
    "serving.retraining.job",
    "serving.protocol.inference_v2",
    "serving.protocol.binary_tensors",
    "serving.batch.budget",
    "serving.model.publishing",
)


def create_app(config: Mapping[str, object] | None = None, load: bool | None = None) -> Flask:
    """Build the app: settings from the environment (overridden by `config`), migrated
    database, loaded models. A broken model folder stops here with a sentence naming it.
    Under the `flask` command line, or with `load=False` (a Dask worker scoring one
    endpoint), models load when asked (`load_models`)."""
    settings = Settings.from_env()
    if config:
        settings = settings.updated(config)
    logs.configure(settings.log_level)

    # No app-wide /static route: nothing is served from there (the dashboard and /docs serve
    # their own files), and every route must be in the OpenAPI document.
    app = Flask(__name__, static_folder=None)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Keys in the order answers build them; the compact encoder built once (JsonProvider).
    app.json = JsonProvider(app)

    database.init_app(app, settings)
    wait = settings.micro_batch_max_wait_ms / 1000
    app.extensions["scorer"] = Scorer(settings.micro_batch_max_size, wait)
    app.extensions["writer"] = Writer(settings.micro_batch_max_size, wait)
    if load is False or (load is None and _under_flask_command_line()):
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
    # Here, not at the top: a command that loads no model never imports them (REQUEST_MODULES).
    from serving import dataplane
    from serving.decisions.experiments import Experiments
    from serving.decisions.shadows import Shadows
    from serving.model import hot_loading
    from serving.model.registry import Registry
    from serving.reports import rollups

    if endpoints is None:
        for name in REQUEST_MODULES:
            importlib.import_module(name)
    with _loading:
        if "registry" in app.extensions:
            return app.extensions["registry"]
        settings: Settings = app.config["SETTINGS"]
        if settings.migrate_on_start:
            migrations.migrate()
        else:
            # The schema is the operator's, but a month's partition should exist before its
            # rows (without it they land in the default partition). A database that does not
            # answer leaves it to the next start or `flask prune-predictions`.
            try:
                migrations.ensure_partitions()
            except database.CONNECTION_ERRORS as exc:
                logging.getLogger(__name__).warning(
                    "prediction partitions not checked at start: %s", str(exc).strip()[:200]
                )
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
        app.extensions["rollup_folder"] = rollups.Folder(settings.rollup_seconds)
        # Published last: a concurrent first request never sees half of it.
        app.extensions["registry"] = registry
        # Nothing opened here may be inherited by forked workers (gunicorn --preload).
        database.close_all()
        return registry


def _under_flask_command_line() -> bool:
    # The `flask` command imports the app inside its click context; gunicorn, `python app.py`
    # and tests build it outside one.
    return click.get_current_context(silent=True) is not None


def __getattr__(name: str) -> Any:
    # `from serving import package` (the notebooks' and the README's) without importing
    # scikit-learn and pandas for every `flask` command: packaging loads when first asked for.
    if name == "package":
        from serving.model.packaging import package

        return package
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
