"""`flask` commands for operators."""

from __future__ import annotations

import click
from flask import Flask

from serving import database, migrations


def init_app(app: Flask) -> None:
    """Register the commands."""

    @app.cli.command("migrate")
    def migrate_command() -> None:
        """Bring the database schema up to date."""
        applied = migrations.migrate()
        database.close_all()
        if applied:
            click.echo(f"applied migrations {applied}; schema is at version {applied[-1]}")
        else:
            click.echo(f"schema is up to date at version {migrations.current_version()}")
