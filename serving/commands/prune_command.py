"""`flask prune-predictions`: fold the rollups, then export predictions older than
PREDICTION_RETENTION_DAYS to Parquet and drop exactly the rows the files hold
(`serving.store.retention`)."""

from __future__ import annotations

from pathlib import Path

import click
import peewee
from flask import current_app
from flask.cli import with_appcontext

from serving.errors import ServiceError, underlying
from serving.store import database, migrations, retention
from serving.store.tables import utcnow


@click.command("prune-predictions")
@click.option(
    "--to",
    "folder",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="the folder the Parquet files are written to (made if missing)",
)
@with_appcontext
def prune_command(folder: Path) -> None:
    """Fold the rollups, export predictions older than PREDICTION_RETENTION_DAYS (whole
    hours, every one of them already rolled up) to Parquet files, check each file, and only
    then drop the rows it holds; also make the partitions due ahead."""
    # Here, not at the top: the reports import scikit-learn's metrics, which no other
    # command may pay for.
    from serving.reports import rollups

    settings = current_app.config["SETTINGS"]
    days = settings.prediction_retention_days
    if not days:
        raise click.ClickException(
            "PREDICTION_RETENTION_DAYS is not set: predictions are kept forever. Set it to "
            "the days a prediction is kept, then run this again."
        )
    try:
        if settings.migrate_on_start:
            migrations.migrate()
        version = migrations.current_version()
        if version < rollups.LAYOUT_VERSION:
            raise click.ClickException(
                f"The schema is at version {version}; run flask migrate first."
            )
        # A row pruned before it was rolled up would be missing from every report after;
        # folding first (however far behind the service's folds are, or with them off)
        # makes every hour before the cutoff part of the rollups.
        folded = rollups.fold()
        click.echo(folded.describe())
        before = retention.cutoff(utcnow(), days)
        # Nothing sealed (an empty log): nothing may go.
        sealed = rollups.hour_start(folded.sealed_hour or 0)
        retention.prune(folder, min(before, sealed), click.echo, rollups.settle_before_drop)
    # pyarrow's errors are ValueError (bad values) or OSError (files).
    except (retention.ExportFailed, OSError, ValueError, peewee.DatabaseError) as exc:
        raise click.ClickException(f"nothing more was dropped: {exc}") from exc
    except ServiceError as exc:  # the database away, or a statement past its limit
        raise click.ClickException(
            f"nothing more was dropped: the database did not serve the command "
            f"({underlying(exc)}); "
            "run it again once the database answers"
        ) from exc
    finally:
        database.close_all()
