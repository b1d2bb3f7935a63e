"""Batch predictions: a JSON array or a CSV file in, one answer per row out (JSON or CSV)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, request

from serving.batch.budget import CpuBudget
from serving.errors import BadRequest
from serving.http import bodies
from serving.http.context import annotate, registry, services

if TYPE_CHECKING:
    from serving.batch.rows import JsonRows, Rows

blueprint = Blueprint("batch", __name__)

CSV_TYPES = {"text/csv", "application/csv"}


@blueprint.post("/predict/batch")
def predict_batch_default() -> Response | tuple[dict[str, Any], int]:
    """Score a batch with the default endpoint."""
    return predict_batch(current_app.config["SETTINGS"].default_endpoint)


@blueprint.post("/api/v1/<endpoint>/predict/batch")
def predict_batch(endpoint: str) -> Response | tuple[dict[str, Any], int]:
    """Score and store every valid row of a batch; one answer per row, in input order."""
    # Imported at start-up (see serving.http): pandas and the data plane.
    from serving import dataplane
    from serving.batch import render, rows

    settings = current_app.config["SETTINGS"]
    budget = CpuBudget(settings.batch_cpu_seconds)
    versions = registry().endpoint(endpoint)
    raw, is_csv = _body(settings.max_batch_body_bytes)
    if is_csv:
        # Columns no version of the endpoint reads are dropped as soon as they are read.
        read = {name for model in versions.values() for name in model.schema.by_name}
        batch: Rows = rows.from_csv(
            raw,
            settings.http_batch_max_rows,
            max_columns=settings.max_batch_columns,
            keep=read,
            check=budget.check,
        )
    else:
        batch = _json_rows(raw, settings.http_batch_max_rows)
    budget.check("reading the batch")
    annotate(endpoint=endpoint, rows=len(batch))
    prepared = dataplane.prepare_many(
        services(),
        endpoint,
        batch,
        version=request.args.get("version"),
        status=request.args.get("status"),
        check=budget.check,
    )
    # Whatever carries client text is rendered before anything is stored: if it fails, the
    # answer is an error and nothing was stored.
    wants_csv = _wants_csv()
    batch_warnings = prepared.results.batch_warnings
    warnings_header = render.header_value(batch_warnings) if wants_csv and batch_warnings else None
    budget.check("preparing the rows to store")
    results = prepared.commit()
    annotate(model_version=",".join(prepared.versions) or None)
    counts = results.counts()
    if wants_csv:
        text = render.csv_text(results, render.csv_columns(versions.values()), header=True)
        headers = {f"X-Batch-{name.capitalize()}": str(n) for name, n in counts.items()}
        if warnings_header is not None:
            headers["X-Batch-Warnings"] = warnings_header
        return Response(text, mimetype="text/csv", headers=headers)
    return render.to_json(results), 200


def _body(limit: int) -> tuple[bytes, bool]:
    """The batch's bytes, and whether they are CSV: a text/csv body or a multipart upload
    (JSON when the file says so); any other body is read as JSON. Over `limit` bytes,
    however framed, is 413 before anything is parsed."""
    advice = " Split the batch, or score the file with `flask score`."
    raw = bodies.read(limit, "MAX_BATCH_BODY_BYTES", advice)
    if request.mimetype == "multipart/form-data":
        upload = bodies.upload(raw)
        is_json = upload.mimetype == "application/json" or upload.filename.lower().endswith(".json")
        return upload.data, not is_json
    return raw, request.mimetype in CSV_TYPES


def _json_rows(raw: bytes, limit: int) -> JsonRows:
    from serving.batch import rows

    try:
        return rows.from_json(raw, limit)
    except BadRequest as exc:
        raise BadRequest(
            f"{exc.message} To send CSV, set 'Content-Type: text/csv' or upload a file.",
            exc.details,
        ) from exc


def _wants_csv() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"
