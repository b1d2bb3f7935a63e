"""Batch answers as JSON (one /predict answer per row) or as CSV (one line per row)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from serving import predictions
from serving.batch.core import OK, Results
from serving.runtime import LoadedModel


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
    ids = ["" if sent is None else sent for sent in results.ids]
    versions = [v if ok else "" for v, ok in zip(results.versions, answered, strict=True)]
    proba = ["" if p is None else repr(p) for p in results.proba]
    labels = [
        _label(label, spelled) if ok else ""
        for label, spelled, ok in zip(results.labels, results.labels_json, answered, strict=True)
    ]
    by_class = [
        ["" if p is None or c not in p else repr(p[c]) for p in results.probabilities]
        for c in classes
    ]
    warnings = [pairs(w) if w else "" for w in results.warnings]
    errors, details = [""] * n, [""] * n
    for i, error in results.errors.items():
        errors[i], details[i] = error.message, pairs(error.details)
        proba[i] = ""
        for column in by_class:
            column[i] = ""
    writer = csv.writer(buffer, lineterminator="\n")
    columns_out = [ids, results.status, versions, proba, labels, *by_class]
    writer.writerows(zip(*columns_out, warnings, errors, details, strict=True))
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
