"""Batch predictions: a JSON array or a CSV file in, one answer per row out (JSON or CSV)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from serving.batch import core, render, rows
from serving.errors import BadRequest, PayloadTooLarge, detail
from serving.http.context import annotate, experiments, lifecycle, registry, shadows

blueprint = Blueprint("batch", __name__)

CSV_TYPES = {"text/csv", "application/csv"}


@blueprint.post("/predict/batch")
def predict_batch_default() -> Response | tuple[dict[str, Any], int]:
    """Score a batch with the default endpoint."""
    return predict_batch(current_app.config["SETTINGS"].default_endpoint)


@blueprint.post("/api/v1/<endpoint>/predict/batch")
def predict_batch(endpoint: str) -> Response | tuple[dict[str, Any], int]:
    """Score and store every valid row of a batch; one answer per row, in input order."""
    settings = current_app.config["SETTINGS"]
    versions = registry().endpoint(endpoint)
    raw, is_csv = _body(settings.max_batch_body_bytes)
    batch = (
        rows.from_csv(raw, settings.max_batch_rows)
        if is_csv
        else _json_rows(raw, settings.max_batch_rows)
    )
    annotate(endpoint=endpoint, rows=len(batch))
    groups = core.route(
        registry(),
        lifecycle(),
        experiments(),
        endpoint,
        batch,
        version=request.args.get("version"),
        status=request.args.get("status"),
    )
    results = core.prepare(endpoint, batch, groups).store()
    core.count(results, versions)
    shadows().score_many(endpoint, lambda model: core.shadow_scores(model, batch, results))
    annotate(model_version=",".join(sorted({g.route.model.version for g in groups})) or None)
    counts = results.counts()
    if _wants_csv():
        text = render.csv_text(results, render.csv_columns(versions.values()), header=True)
        headers = {f"X-Batch-{name.capitalize()}": str(n) for name, n in counts.items()}
        if results.batch_warnings:
            headers["X-Batch-Warnings"] = render.pairs(results.batch_warnings)
        return Response(text, mimetype="text/csv", headers=headers)
    return render.to_json(results), 200


def _body(limit: int) -> tuple[bytes, bool]:
    """The batch's bytes, and whether they are CSV: a text/csv body or a multipart upload
    (JSON when the file says so); any other body is read as JSON."""
    too_large = PayloadTooLarge(
        f"The request body is larger than the batch limit of {limit} bytes "
        "(MAX_BATCH_BODY_BYTES); split the batch, or score the file with `flask score`.",
        [detail("body", f"at most {limit} bytes")],
    )
    # Werkzeug refuses a larger body (by its Content-Length, or as it streams) with 413.
    request.max_content_length = limit
    try:
        if request.mimetype == "multipart/form-data":
            upload = request.files.get("file") or next(iter(request.files.values()), None)
            if upload is None:
                raise BadRequest("The multipart body has no file; send the CSV as field 'file'.")
            is_json = upload.mimetype == "application/json" or (
                upload.filename or ""
            ).lower().endswith(".json")
            return upload.read(), not is_json
        return request.get_data(cache=False), request.mimetype in CSV_TYPES
    except RequestEntityTooLarge as exc:
        raise too_large from exc


def _json_rows(raw: bytes, limit: int) -> rows.JsonRows:
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
