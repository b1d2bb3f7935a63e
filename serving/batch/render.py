"""Batch answers as JSON (one /predict answer per row) or as CSV (one line per row)."""

from __future__ import annotations

import csv
import io
import json
import re
import string
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from serving.batch.core import OK, Results
from serving.errors import ServiceError, underlying
from serving.model.runtime import LoadedModel
from serving.store import predictions


def to_json(results: Results) -> dict[str, Any]:
    """The whole batch: counts, warnings about the batch, and one answer per row in order."""
    return {
        "endpoint": results.endpoint,
        "counts": results.counts(),
        "warnings": results.batch_warnings,
        "results": [row_json(results, i) for i in range(len(results))],
    }


def row_json(results: Results, i: int) -> dict[str, Any]:
    """One row: the /predict answer plus `status`, or the error /predict would have answered
    with `observation_id` and `status`."""
    if results.status[i] != OK:
        error = results.errors[i]
        return {"observation_id": results.ids[i], "status": error.status, **error.to_dict()}
    earlier = results.earlier.get(i)
    if earlier is not None:
        answer = predictions.to_json(earlier, results.ids[i])
    else:
        observation = results.observations[i]
        answer = predictions.answer(
            id=results.row_ids[i],
            observation_id=results.ids[i],
            observation=json.loads(observation) if observation is not None else {},
            proba=results.proba[i],
            prediction=results.labels[i],
            true_class=None,
            endpoint=results.endpoint,
            model_version=results.versions[i] or "",
            created_at=results.created_at,
            updated_at=None,
            probabilities=results.probabilities[i],
            ab_test=results.ab_test[i],
            arm=results.arm[i],
        )
    answer["warnings"] = results.warnings[i]
    answer["status"] = OK
    return answer


# A cell starting with one of these is run as a formula by spreadsheets (OWASP, "CSV
# Injection"), full-width forms included since some spreadsheets read them too.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
# A cell that is exactly a number is read as that number, never run: left as it is, so the
# id -5 and a regression's -3.2 come back as sent.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def safe_cell(text: str) -> str:
    """`text` as a CSV cell no spreadsheet runs: a single quote before a formula's first
    character, as OWASP advises; text that is exactly a number stays as it is."""
    if text.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def csv_columns(models: Iterable[LoadedModel], id_column: str = "id") -> list[str]:
    """The output columns: the id, status, version, proba, label, one `proba_<class>` per
    class of any multi-class model given, then warnings and errors."""
    classes: list[str] = []
    for model in models:
        if model.classes and model.positive_class is None:
            classes.extend(str(c) for c in model.classes if str(c) not in classes)
    return [
        id_column,
        "status",
        "model_version",
        "proba",
        "prediction",
        *(f"proba_{c}" for c in classes),
        "warnings",
        "error",
        "details",
    ]


def csv_header(columns: list[str]) -> str:
    """The header line of the CSV answers."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(columns)
    return buffer.getvalue()


def csv_text(results: Results, columns: list[str], header: bool = False) -> str:
    """The rows as CSV text under `columns` (see `csv_columns`), with the header if asked."""
    buffer = io.StringIO(csv_header(columns) if header else "")
    buffer.seek(0, io.SEEK_END)
    classes = [c[len("proba_") :] for c in columns[5:-3]]
    # Built a column at a time and written in one call: per-row Python is the slow part.
    n = len(results)
    answered = [status == OK for status in results.status]
    # Ids, labels, versions, warnings and errors may carry a client's text: each goes through
    # safe_cell. Probabilities are ours, repr of floats in [0, 1], and need nothing.
    ids = ["" if sent is None else safe_cell(str(sent)) for sent in results.ids]
    versions = [
        safe_cell(v) if ok and v else "" for v, ok in zip(results.versions, answered, strict=True)
    ]
    proba = ["" if p is None else repr(p) for p in results.proba]
    labels = [
        safe_cell(_label(label, spelled)) if ok else ""
        for label, spelled, ok in zip(results.labels, results.labels_json, answered, strict=True)
    ]
    by_class = [
        ["" if p is None or c not in p else repr(p[c]) for p in results.probabilities]
        for c in classes
    ]
    warnings = [safe_cell(pairs(w)) if w else "" for w in results.warnings]
    errors, details = [""] * n, [""] * n
    for i, error in results.errors.items():
        errors[i], details[i] = safe_cell(error.message), safe_cell(pairs(error.details))
        proba[i] = ""
        for column in by_class:
            column[i] = ""
    writer = csv.writer(buffer, lineterminator="\n")
    columns_out: list[Sequence[object]] = [ids, results.status, versions, proba, labels, *by_class]
    lines = zip(*columns_out, warnings, errors, details, strict=True)
    # The csv module quotes a field holding "\n" but not one holding a lone "\r" (not in
    # our line end), which readers then take for a line end: such rows are written with
    # every field quoted.
    with_cr = {
        i
        for column in (ids, labels, warnings, errors, details)
        for i, t in enumerate(column)
        if "\r" in t
    }
    if not with_cr:
        writer.writerows(lines)
        return buffer.getvalue()
    quoting = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for i, line in enumerate(lines):
        (quoting if i in with_cr else writer).writerow(line)
    return buffer.getvalue()


def _label(label: Any, spelled: str | None) -> str:
    # Text labels as they are; numbers and booleans as JSON spells them.
    if label is None:
        return ""
    if isinstance(label, str):
        return label
    return spelled if spelled is not None else predictions.canonical_json(label)


def pairs(details: list[dict[str, str]]) -> str:
    """Details as one line of text: `field: problem; field: problem`."""
    return "; ".join(f"{d['field']}: {d['problem']}" for d in details)


# Header values are Latin-1 on the wire and may not hold line ends: client text such as a
# CSV column name goes there percent-encoded (UTF-8), printable ASCII but `%` as it is.
_HEADER_SAFE = "".join(c for c in string.printable if c not in "%\t\n\r\x0b\x0c")
# Past this many characters a header is cut: clients and proxies refuse long ones, and the
# JSON answer lists every warning.
MAX_HEADER_CHARS = 4000


def header_value(details: list[dict[str, str]]) -> str:
    """Details as one response header value: `pairs` percent-encoded, at most
    MAX_HEADER_CHARS characters (then `; ... N more`). Always ASCII: it cannot fail to send."""
    text = ""
    for shown, item in enumerate(details):
        part = quote(pairs([item]), safe=_HEADER_SAFE)
        more = len(details) - shown
        if len(text) + len(part) + 2 > MAX_HEADER_CHARS - len(f"; ... {more} more"):
            return f"{text}; ... {more} more" if text else f"... {more} more"
        text = f"{text}; {part}" if text else part
    return text


def sentence(error: ServiceError) -> str:
    """An error as one sentence with its details, for a command line."""
    details = pairs(error.details)
    return f"{error.message} ({details})" if details else error.message


def database_failure(error: BaseException, who: str | None = None) -> str:
    """A database that did not serve a batch run (a ServiceError 503 or the driver's own
    error) as one sentence for a command line: could not be reached (from `who`) and why, had
    no connection free, or did not answer in time. Never the HTTP answer's advice to retry
    the request: the caller says to run the same command again."""
    from serving.store import database

    cause = error.__cause__ if isinstance(error, ServiceError) else error
    at = f" from {who}" if who else ""
    # peewee wraps the driver's statement_timeout in its OperationalError, a connection error.
    if cause is not None and (
        isinstance(cause, database.DeadlineExceeded) or database.canceled(cause)
    ):
        return (
            f"the database did not answer in time{at} (a statement ran past its time limit); "
            "rows it stored all the same are replayed, not stored twice"
        )
    if isinstance(cause, database.CONNECTION_ERRORS):
        return f"the database could not be reached{at} ({underlying(cause)})"
    if isinstance(cause, database.MaxConnectionsExceeded):
        return (
            f"no database connection was free{at} within DB_POOL_WAIT_SECONDS (all "
            "DB_POOL_SIZE of them stayed busy), so nothing was stored"
        )
    # Any other 503: its own sentence, without the advice meant for an HTTP client.
    message = error.message if isinstance(error, ServiceError) else str(error)
    kept = [part for part in message.split(". ") if not part.startswith("Retry")]
    return f"the database failed{f' for {who}' if who else ''}: " + ". ".join(kept).rstrip(".")
