"""`flask` commands for operators."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click
from flask import Flask, current_app

import serving
from serving import database, digests, migrations
from serving.batch.command import score_command
from serving.clients import keys_command
from serving.errors import ServiceError
from serving.lifecycle import STATUSES
from serving.model_commands import models_command
from serving.runtime import ModelLoadError


def init_app(app: Flask) -> None:
    """Register the commands."""
    app.cli.add_command(score_command)
    app.cli.add_command(keys_command)
    app.cli.add_command(models_command)

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
        """Move a model version to testing, staging, production or archived."""
        try:
            # This endpoint's versions only: they are registered with their declared status
            # if the service never started on this database.
            serving.load_models(current_app, [endpoint])
            changes = current_app.extensions["lifecycle"].change(
                endpoint, version, status, by, reason
            )
        except ServiceError as exc:
            raise click.ClickException(exc.message) from exc
        except ModelLoadError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            database.close_all()
        if not changes:
            click.echo(f"{endpoint} version {version} is already {status}")
        for change in changes:
            click.echo(f"{endpoint} version {change.version}: {change.previous} -> {change.status}")
