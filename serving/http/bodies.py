"""The one reader of request bodies: at most a limit of bytes, however the body is framed.

Werkzeug's own limit on a chunked body (`Transfer-Encoding: chunked`, no Content-Length)
stops reading at the limit and hands back what it read, so a body one byte over its limit
was parsed truncated: a CSV lost its last rows, a JSON body followed by megabytes of spaces
was read. Here the stream is read up to one byte past the limit; that byte's presence is
the refusal.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.wsgi import get_input_stream

from serving.errors import BadRequest, PayloadTooLarge, detail

# Reads of this size keep memory to the body itself plus one block.
_BLOCK = 1 << 16


def read(limit: int, setting: str, advice: str = "") -> bytes:
    """The whole body, or PayloadTooLarge naming `setting` (and giving `advice`) when it has
    more than `limit` bytes: by its Content-Length before anything is read, or as a chunked
    body streams."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(limit, setting, advice)
    # Without a limit Werkzeug returns the stream as the server framed it: bounded by the
    # Content-Length, ended by the server for a chunked body (wsgi.input_terminated), or an
    # empty stream when neither is known (it could never end).
    stream = get_input_stream(request.environ, max_content_length=None)
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        part = stream.read(min(_BLOCK, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        raise too_large(limit, setting, advice)
    return b"".join(parts)


def too_large(limit: int, setting: str, advice: str = "") -> PayloadTooLarge:
    """The 413 of a body over its limit, naming the setting that sets it."""
    return PayloadTooLarge(
        f"The request body is larger than the limit of {limit} bytes ({setting}).{advice}",
        [detail("body", f"at most {limit} bytes")],
    )


@dataclass(frozen=True)
class Upload:
    """The file of a multipart body: its bytes, content type and file name."""

    data: bytes
    mimetype: str
    filename: str


def upload(raw: bytes, field: str = "file") -> Upload:
    """The file sent in a multipart body already read by `read` (field `field`, else the
    first file): parsed from memory, so the body limit is `read`'s and nothing else's."""
    form, files = _multipart(raw)
    found: Upload | None = next((u for name, u in files if name == field), None) or next(
        (u for _name, u in files), None
    )
    if found is None and field in form:
        # A part without a filename is a form field, not a file: its text is the file.
        return Upload(form[field].encode(), "text/plain", "")
    if found is None:
        raise BadRequest(f"The multipart body has no file; send the CSV as field {field!r}.")
    return found


def parts(raw: bytes) -> tuple[dict[str, list[str]], list[tuple[str, Upload]]]:
    """Every part of a multipart body already read by `read`: the text fields (by name, each
    value sent) and the files (field name and file, in the order sent). Parsed from memory,
    so the body limit is `read`'s and nothing else's."""
    form, files = _multipart(raw)
    return {name: form.getlist(name) for name in form}, files


def _multipart(raw: bytes) -> tuple[Any, list[tuple[str, Upload]]]:
    parser = FormDataParser(
        # The body is in memory already, within its limit: its files stay there too.
        stream_factory=lambda *_args, **_kwargs: io.BytesIO(),
        max_form_memory_size=request.max_form_memory_size,
        max_form_parts=request.max_form_parts,
    )
    try:
        _, form, files = parser.parse(
            io.BytesIO(raw), request.mimetype, len(raw), request.mimetype_params
        )
    except RequestEntityTooLarge as exc:
        raise PayloadTooLarge(
            "The multipart body has too many parts, or a text field that is too long; send "
            "the files alone.",
            [detail("body", "too many parts or too long a field")],
        ) from exc
    found: list[tuple[str, Upload]] = []
    try:
        for name, stored in files.items(multi=True):
            found.append((name, Upload(stored.read(), stored.mimetype, stored.filename or "")))
    finally:
        for _, stored in files.items(multi=True):
            stored.close()
    return form, found
