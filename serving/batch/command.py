"""`flask score INPUT.csv OUTPUT.csv`: score a CSV file of any size, logging every row."""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import with_appcontext

import serving
from serving.batch import ID_COLUMN
from serving.errors import ServiceError, Unavailable
from serving.store import database

# What a database that did not serve the command raises where models load (its migrations,
# the first statuses): the pool's own exhaustion comes out of the migrations unwrapped.
DATABASE_FAILURES = (Unavailable, database.MaxConnectionsExceeded, *database.CONNECTION_ERRORS)

if TYPE_CHECKING:
    from serving.batch.files import Summary
    from serving.batch.rows import Rows
    from serving.dataplane import PreparedBatch


@click.command("score")
@click.argument("source", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.argument("output", metavar="OUTPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--endpoint", default=None, help="endpoint to score with (default: DEFAULT_ENDPOINT)")
@click.option("--version", default=None, help="score with this version")
@click.option("--status", default=None, help="score with the version in this status")
@click.option("--no-log", is_flag=True, help="score without storing anything in the database")
@click.option("--id-column", default=ID_COLUMN, show_default=True, help="the column of row ids")
@click.option(
    "--chunk-rows",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="rows scored and committed together",
)
@click.option("--restart", is_flag=True, help="write OUTPUT again instead of resuming it")
@click.option(
    "--engine",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="score in this process, or on the workers of a Dask cluster (CSV or Parquet input)",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="the Dask scheduler for --engine dask, e.g. tcp://10.0.0.5:8786",
)
@click.option("--quiet", is_flag=True, help="no progress bar")
@with_appcontext
def score_command(
    source: Path,
    output: Path,
    endpoint: str | None,
    version: str | None,
    status: str | None,
    no_log: bool,
    id_column: str,
    chunk_rows: int,
    restart: bool,
    engine: str,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """Score every row of INPUT (an id column plus the model's columns) into OUTPUT.

    Each chunk of rows is stored in one transaction before its answers are written, so an
    interrupted run resumes where it stopped when run again with the same arguments. With
    --engine dask each chunk is a partition scored and stored on a Dask worker.
    """
    if engine == "dask":
        _score_on_dask(
            source,
            output,
            endpoint,
            version,
            status,
            no_log,
            id_column,
            chunk_rows,
            restart,
            scheduler,
            quiet,
        )
        return
    if source.is_dir() or source.suffix.lower() in {".parquet", ".pq"}:
        raise click.ClickException(
            f"{source} is Parquet or a folder: --engine dask reads those; this engine reads a CSV"
        )
    # Here, not at the top: the other commands (and `flask --help`) need no pandas, NumPy or
    # scikit-learn, which the data plane and the file reader import.
    from serving import dataplane
    from serving.batch import render
    from serving.batch.files import Refused, score_file
    from serving.model.runtime import ModelLoadError

    name = endpoint or current_app.config["SETTINGS"].default_endpoint
    try:
        serving.load_models(current_app, [name])
    except ModelLoadError as exc:
        raise click.ClickException(str(exc)) from exc
    except DATABASE_FAILURES as exc:  # its migrations and first statuses, not a model
        raise click.ClickException(_database_down(exc)) from exc
    services = current_app.extensions["services"]
    # Offline: no shadows, no Prometheus counts (see `dataplane.Plane`); stored unless --no-log.
    plane = replace(dataplane.OFFLINE, store=not no_log)

    def prepare(rows: Rows) -> PreparedBatch:
        return dataplane.prepare_many(
            services, name, rows, version=version, status=status, plane=plane
        )

    # Everything loaded so far (models, libraries) lives as long as the process: frozen, the
    # collector stops walking it again for every few hundred new rows (~15% of a run).
    gc.freeze()
    try:
        versions = services.registry.endpoint(name)
        summary = score_file(
            source,
            output,
            name,
            prepare,
            render.csv_columns(versions.values(), id_column),
            log=not no_log,
            id_column=id_column,
            chunk_rows=chunk_rows,
            restart=restart,
            progress=not quiet,
        )
    except Refused as exc:
        raise click.ClickException(str(exc)) from exc
    except Unavailable as exc:
        raise click.ClickException(_database_down(exc)) from exc
    except ServiceError as exc:
        raise click.ClickException(_sentence(exc)) from exc
    except KeyboardInterrupt:
        raise click.ClickException(
            "interrupted; run the same command again to resume where it stopped"
        ) from None
    finally:
        gc.unfreeze()
        database.close_all()
    _report(summary, output)


def _score_on_dask(
    source: Path,
    output: Path,
    endpoint: str | None,
    version: str | None,
    status: str | None,
    no_log: bool,
    id_column: str,
    chunk_rows: int,
    restart: bool,
    scheduler: str | None,
    quiet: bool,
) -> None:
    """`flask score --engine dask`: see `serving.batch.cluster`."""
    from serving.batch.cluster import ClusterError, score_with_dask
    from serving.batch.files import Refused
    from serving.model.runtime import ModelLoadError

    if not scheduler:
        raise click.ClickException("--engine dask needs --scheduler ADDRESS (tcp://HOST:8786)")
    try:
        summary = score_with_dask(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            source,
            output,
            scheduler,
            endpoint=endpoint,
            version=version,
            status=status,
            log=not no_log,
            id_column=id_column,
            partition_rows=chunk_rows,
            restart=restart,
            progress=not quiet,
        )
    except (Refused, ModelLoadError) as exc:
        raise click.ClickException(str(exc)) from exc
    except ClusterError as exc:
        raise click.ClickException(
            f"{exc}; run the same command again to resume where it stopped"
        ) from exc
    except DATABASE_FAILURES as exc:  # the client's own start
        raise click.ClickException(_database_down(exc)) from exc
    except ServiceError as exc:
        raise click.ClickException(_sentence(exc)) from exc
    except KeyboardInterrupt:
        raise click.ClickException(
            "interrupted; run the same command again to resume where it stopped"
        ) from None
    finally:
        database.close_all()
    _report(summary, output)


def _report(summary: Summary, output: Path) -> None:
    resumed = f", resumed after {summary.resumed_at:,} rows" if summary.resumed_at else ""
    click.echo(
        f"scored {summary.rows:,} rows in {summary.seconds:.1f} s "
        f"({summary.rows / max(summary.seconds, 1e-9):,.0f} rows/s{resumed}): "
        f"{summary.answered:,} answered ({summary.stored:,} stored, "
        f"{summary.replayed:,} replayed), {summary.invalid:,} invalid, "
        f"{summary.conflicts:,} conflicts; answers in {output}"
    )


def _database_down(error: BaseException) -> str:
    """The sentence for a database that did not serve the run: a failure, not a refusal,
    and running again resumes once it does."""
    from serving.batch import render

    return (
        f"{render.database_failure(error)}; run the same command again to resume where it stopped"
    )


def _sentence(error: ServiceError) -> str:
    from serving.batch import render

    return render.sentence(error)
