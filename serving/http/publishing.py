"""/api/v1/<endpoint>/versions/<version>: publishing a model version to the running
deployment (admin), as multipart/form-data with one part per file, named as the file."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from serving.errors import InvalidInput, detail
from serving.http import bodies
from serving.http.auth import require_admin
from serving.http.context import annotate, registry
from serving.protocol.payloads import MAX_BY_LENGTH, check_text

blueprint = Blueprint("publishing", __name__, url_prefix="/api/v1")


@blueprint.put("/<endpoint>/versions/<version>")
def publish_version(endpoint: str, version: str) -> tuple[dict[str, Any], int]:
    """Admin: publish a model version to the running deployment.

    A multipart/form-data body with one file part per model file, each named as the file:
    `pipeline.skops` (or `pipeline.pickle` when the server allows pickles), `dtypes.pickle`,
    `columns.json` and `model.json`, whose `sha256` map pins every other file; an optional
    text field `by` says who publishes. The version is loaded as start-up loads a folder
    before anything is stored, and is never overwritten. Every worker of every replica on
    the database serves it within STATUS_REFRESH_SECONDS, with model.json's `initial_status`
    (default testing)."""
    from serving.model import publishing  # imported at start-up: see serving.http

    require_admin()
    settings = current_app.config["SETTINGS"]
    raw = bodies.read(settings.max_model_upload_bytes, "MAX_MODEL_UPLOAD_BYTES")
    annotate(endpoint=endpoint, model_version=version)
    publishing.check_names(endpoint, version)
    if request.mimetype != "multipart/form-data":
        raise InvalidInput(
            "Send the model files as multipart/form-data, one part per file named as the file "
            "(curl -F pipeline.skops=@folder/pipeline.skops ...).",
            [detail("body", f"expected multipart/form-data, got {request.mimetype or 'none'}")],
        )
    form, uploads = bodies.parts(raw)
    files: dict[str, bytes] = {}
    for name, upload in uploads:
        if name in files:
            raise InvalidInput(
                f"The file {name!r} is sent twice; send each file once.",
                [detail(name, "sent more than once")],
            )
        files[name] = upload.data
    texts = sorted(set(form) - {"by"})
    if texts:
        raise InvalidInput(
            f"The part {texts[0]!r} is not a file; send each model file as a file part "
            f"(curl -F '{texts[0]}=@path').",
            [detail(name, "a text field, expected a file") for name in texts],
        )
    given_by = form.get("by", ["admin-api"])
    if len(given_by) != 1:
        raise InvalidInput("'by' is sent twice; send it once.", [detail("by", "sent twice")])
    by = check_text(given_by[0], "by", MAX_BY_LENGTH) or "admin-api"
    answer = publishing.publish(endpoint, version, files, by, settings, registry())
    return answer, 201
