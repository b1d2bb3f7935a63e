"""`flask` commands for operators."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click
from flask import Flask, current_app

import serving
from serving.batch.command import score_command
from serving.commands.model_commands import models_group
from serving.commands.prune_command import prune_command
from serving.decisions.clients import keys_command
from serving.decisions.lifecycle import STATUSES, Lifecycle
from serving.errors import ServiceError, underlying
from serving.model import digests, folders
from serving.model.folders import version_order
from serving.retraining.command import retrain_command
from serving.store import database, migrations


def init_app(app: Flask) -> None:
    """Register the commands."""
    app.cli.add_command(score_command)
    app.cli.add_command(keys_command)
    app.cli.add_command(models_group)
    app.cli.add_command(retrain_command)
    app.cli.add_command(prune_command)

    @app.cli.command("migrate")
    def migrate_command() -> None:
        """Bring the database schema up to date."""
        applied = migrations.migrate()
        # Every version's declared status is recorded, so every model is read.
        registry = serving.load_models(current_app)
        current_app.extensions["lifecycle"].seed(
            (e, v, s) for (e, v), s in registry.declared.items()
        )
        database.close_all()
        if applied:
            click.echo(f"applied migrations {applied}; schema is at version {applied[-1]}")
        else:
            click.echo(f"schema is up to date at version {migrations.current_version()}")

    @app.cli.command("rollups")
    @click.option("--rebuild", is_flag=True, help="drop every rollup and fold the whole log again")
    def rollups_command(rebuild: bool) -> None:
        """Fold new predictions and ground truths into the hourly rollups the reports read
        (the service does it every ROLLUP_SECONDS; several at once take turns)."""
        from serving.reports import rollups  # here: the reports import scikit-learn's metrics

        if current_app.config["SETTINGS"].migrate_on_start:
            migrations.migrate()
        try:
            folded = rollups.rebuild() if rebuild else rollups.fold()
        except ServiceError as exc:  # the database away, or a fold past its statement limit
            raise click.ClickException(
                f"the rollups were not brought up to date: the database did not serve the fold "
                f"({underlying(exc)}); the hours folded before stay folded, run "
                "it again once the database answers"
            ) from exc
        finally:
            database.close_all()
        click.echo(folded.describe())

    @app.cli.command("pin-digests")
    @click.option(
        "--output", "-o", type=click.Path(dir_okay=False), help="write here, not to stdout"
    )
    def pin_digests_command(output: str | None) -> None:
        """Print a MODEL_DIGESTS manifest of the model folders as they are now (sha256 of every
        file; nothing is unpickled). Review the folders, then keep its output where the model
        folders' writer cannot change it and point MODEL_DIGESTS at it."""
        settings = current_app.config["SETTINGS"]
        manifest = digests.manifest_for(
            settings.root_model_dir, settings.models_dir, settings.default_endpoint
        )
        text = json.dumps(manifest, indent=2)
        if output is None:
            click.echo(text)
            return
        # A file of its own: log lines (JSON on stdout) can never end up inside it.
        Path(output).write_text(text + "\n", encoding="utf-8")
        click.echo(f"pinned {len(manifest)} versions in {output}")

    @app.cli.command("set-status")
    @click.argument("endpoint")
    @click.argument("version")
    @click.argument("status", type=click.Choice(STATUSES))
    @click.option("--by", default=lambda: f"cli:{getpass.getuser()}", help="who is changing it")
    @click.option("--reason", default=None, help="why, kept in the history")
    def set_status_command(
        endpoint: str, version: str, status: str, by: str, reason: str | None
    ) -> None:
        """Move a model version to testing, staging, production or archived.

        Loads no model: the endpoint and version are checked against the folder names and
        model.json files on disk, so a folder whose pipeline cannot be loaded can still be
        archived or demoted, and the command costs no model loading."""
        settings = current_app.config["SETTINGS"]
        try:
            declared = folders.declared_statuses(
                settings.root_model_dir, settings.models_dir, settings.default_endpoint
            )
            _check_on_disk(declared, endpoint, version)
            if settings.migrate_on_start:
                migrations.migrate()
            # The app's own, when it has loaded: its cached statuses must see this change.
            lifecycle = current_app.extensions.get("lifecycle") or Lifecycle(
                settings.status_refresh_seconds
            )
            if settings.migrate_on_start:
                # As start-up would: versions the database has never seen get their declared
                # first status before one of them changes.
                lifecycle.seed((e, v, s) for (e, v), s in declared.items() if e == endpoint)
            changes = lifecycle.change(endpoint, version, status, by, reason)
        except ServiceError as exc:
            raise click.ClickException(exc.message) from exc
        finally:
            database.close_all()
        if not changes:
            click.echo(f"{endpoint} version {version} is already {status}")
        for change in changes:
            click.echo(f"{endpoint} version {change.version}: {change.previous} -> {change.status}")


def _check_on_disk(declared: dict[tuple[str, str], str], endpoint: str, version: str) -> None:
    """Refuse an endpoint or version no model folder holds, naming the ones that exist."""
    versions = sorted((v for e, v in declared if e == endpoint), key=version_order)
    if not versions:
        known = sorted({e for e, _ in declared})
        raise click.ClickException(f"There is no endpoint named {endpoint!r}; known: {known}")
    if version not in versions:
        raise click.ClickException(
            f"Endpoint {endpoint!r} has no version {version!r}; known: {versions}"
        )
