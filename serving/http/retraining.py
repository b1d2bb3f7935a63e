"""/api/v1/<endpoint>/retrain: the retrain job of `flask retrain`, started by an admin call.

Synchronous: the call answers when the job is done, with its report. Fitting runs inside the
request (a gthread worker keeps serving its other requests meanwhile, and gunicorn's worker
timeout does not apply to one slow request); one retrain of an endpoint runs at a time on a
models folder, and another call meanwhile is 409 at once. The time it takes is the fit's:
seconds for the bundled models on tens of thousands of rows. A fit longer than the proxy in
front of the service waits for belongs in `flask retrain`, from cron.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from serving.errors import Conflict, InvalidInput, detail
from serving.http.auth import require_admin
from serving.http.context import body, registry
from serving.protocol.payloads import MAX_BY_LENGTH, check_text, parse_object
from serving.retraining.options import (
    DEFAULT_MIN_LABELLED,
    RETRAIN_BY,
    SHADOW,
    Options,
    parse_instant,
)

blueprint = Blueprint("retraining", __name__, url_prefix="/api/v1/<endpoint>")

_FIELDS = {
    "holdout_fraction",
    "holdout_rows",
    "min_labelled",
    "include_training_data",
    "then",
    "since",
    "until",
    "by",
}


@blueprint.post("/retrain")
def retrain(endpoint: str) -> tuple[dict[str, Any], int]:
    """Admin: retrain the production version on the endpoint's labelled rows and gate it.

    201 with the report when a candidate was registered; 200 when one from the same inputs
    already was; 409 when the gate refused the candidate (its figures in `details`), when
    another retrain of the endpoint runs, or when an A/B test was asked for and one runs;
    422 when there are too few labelled rows, with how many were found and are needed."""
    require_admin()
    registry().endpoint(endpoint)
    raw = body()
    payload = parse_object(raw) if raw.strip() else {}
    unknown = sorted(set(payload) - _FIELDS)
    if unknown:
        raise InvalidInput(
            f"Unknown field {unknown[0]!r} in a retrain request.",
            [detail(name, f"unknown; known: {sorted(_FIELDS)}") for name in unknown],
        )
    options = Options(
        holdout_fraction=payload.get("holdout_fraction"),
        holdout_rows=payload.get("holdout_rows"),
        min_labelled=payload.get("min_labelled", DEFAULT_MIN_LABELLED),
        include_training_data=payload.get("include_training_data", False),
        then=payload.get("then", SHADOW),
        since=parse_instant(payload.get("since"), "since"),
        until=parse_instant(payload.get("until"), "until"),
        by=check_text(payload.get("by"), "by", MAX_BY_LENGTH) or RETRAIN_BY,
    )
    from serving.retraining import job  # imported at start-up: see serving.http

    outcome = job.retrain(job.Context.of(current_app), endpoint, options)
    if outcome.outcome == job.REFUSED:
        raise Conflict(outcome.message, _gate_details(outcome.lineage["gate"]))
    return outcome.to_json(), 201 if outcome.outcome == job.REGISTERED else 200


def _gate_details(gate: dict[str, Any]) -> list[dict[str, str]]:
    """The refused gate's figures, one detail per metric, in the error shape every 409 has."""
    p = gate["p_value"]
    found = [detail("gate", f"{gate['verdict']} ({gate['test']}, p = {p:.3g})")]
    for name, value in gate["candidate"].items():
        theirs = gate["production"].get(name)
        found.append(
            detail(f"gate.{name}", f"candidate {_cell(value)}, production {_cell(theirs)}")
        )
    return found


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
