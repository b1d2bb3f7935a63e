"""`flask retrain ENDPOINT`: the retrain job from the command line, for operators and cron.

Exit status 0: a candidate was registered, or one from the same inputs already was (a rerun
on an unchanged window registers nothing new). 1: nothing was registered: too few labelled
rows, the gate refused the candidate, or another error; the last line says which.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import with_appcontext

import serving
from serving.errors import ServiceError
from serving.retraining.options import (
    DEFAULT_HOLDOUT_FRACTION,
    DEFAULT_MIN_LABELLED,
    RETRAIN_BY,
    SHADOW,
    Options,
    parse_instant,
)
from serving.store import database

if TYPE_CHECKING:
    from serving.retraining.job import Outcome


@click.command("retrain")
@click.argument("endpoint")
@click.option(
    "--holdout-fraction",
    type=float,
    default=None,
    help=f"share of the newest labelled rows held out for the gate "
    f"(default {DEFAULT_HOLDOUT_FRACTION})",
)
@click.option(
    "--holdout-rows", type=int, default=None, help="or: how many of the newest rows to hold out"
)
@click.option(
    "--min-labelled",
    type=int,
    default=DEFAULT_MIN_LABELLED,
    show_default=True,
    help="fewest labelled rows to retrain on",
)
@click.option(
    "--include-training-data",
    is_flag=True,
    help="fit on the production version's own training data too (when model.json pins it)",
)
@click.option(
    "--then",
    "then",
    default=SHADOW,
    show_default=True,
    help="after registering: shadow, ab:SPLIT (share of traffic to the candidate) or none",
)
@click.option("--since", default=None, help="only rows predicted at or after (ISO 8601, UTC)")
@click.option("--until", default=None, help="only rows predicted before (ISO 8601, UTC)")
@click.option("--by", default=RETRAIN_BY, show_default=True, help="who, in the history")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@with_appcontext
def retrain_command(
    endpoint: str,
    holdout_fraction: float | None,
    holdout_rows: int | None,
    min_labelled: int,
    include_training_data: bool,
    then: str,
    since: str | None,
    until: str | None,
    by: str,
    as_json: bool,
) -> None:
    """Retrain ENDPOINT's production pipeline on its labelled logged rows; register the
    candidate if the gate passes it, then shadow or A/B test it."""
    # Here, not at the top: `flask --help` and the other commands need neither pandas nor
    # scikit-learn, which the job and the model loader import.
    from serving.model.runtime import ModelLoadError
    from serving.retraining import job

    try:
        options = Options(
            holdout_fraction=holdout_fraction,
            holdout_rows=holdout_rows,
            min_labelled=min_labelled,
            include_training_data=include_training_data,
            then=then,
            since=parse_instant(since, "since"),
            until=parse_instant(until, "until"),
            by=by,
        )
        options.check()
        # This endpoint's versions only: nothing else is unpickled.
        serving.load_models(current_app, [endpoint])
        outcome = job.retrain(job.Context.of(current_app), endpoint, options)
    except ServiceError as exc:
        raise click.ClickException(exc.message) from exc
    except ModelLoadError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.close_all()
    if as_json:
        click.echo(json.dumps(outcome.to_json(), indent=2))
    else:
        _print(outcome)
    if outcome.outcome == job.REFUSED or (outcome.then or {}).get("error"):
        raise click.exceptions.Exit(1)


def _print(outcome: Outcome) -> None:
    gate = outcome.lineage.get("gate")
    if gate:
        rows = outcome.lineage["logged_rows"]
        fit, held = rows["fit"], rows["holdout"]
        click.echo(
            f"{outcome.endpoint}: fitted on {fit['rows']} logged rows ({fit['first']} to "
            f"{fit['last']}), held out the {held['rows']} newest ({held['first']} to "
            f"{held['last']})"
        )
        training = outcome.lineage["training_data"]
        if training.get("used"):
            click.echo(f"joined {training['rows']} rows of its training data {training['path']}")
        elif training.get("reason") != "not asked for":
            click.echo(f"training data skipped: {training['reason']}")
        click.echo(f"{'metric':<10} {'candidate':>10} {'production':>10}")
        for name, value in gate["candidate"].items():
            click.echo(f"{name:<10} {_cell(value):>10} {_cell(gate['production'].get(name)):>10}")
    click.echo(outcome.message)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
