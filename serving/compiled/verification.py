"""Checking a compiled pipeline against the real one before trusting it."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from serving.compiled.core import COMPILED, ESTIMATOR, CompiledPipeline

Outputs = list[np.ndarray | None]  # one output per row; None where scoring the row raised


def verify(
    compiled: CompiledPipeline,
    pipeline: Any,
    frame_builder: Callable[[list[dict]], pd.DataFrame],
    rows: list[dict],
    tolerance: float = 1e-6,
) -> float:
    """Return the max abs difference between compiled and pipeline outputs on `rows`.

    Compares predict_proba for classifiers and predict for regressors: first the compiled
    batch, then (unless that already exceeds `tolerance`) every row scored alone, since the
    service mostly scores one row at a time. A pipeline with a large-batch path (ESTIMATOR:
    the fitted estimator's own method on the compiled matrix) has all rows scored that way
    too, forced whatever their number. A row the pipeline rejects (e.g. an unknown
    category with handle_unknown='error') must be rejected by the compiled path too, and the
    other way round; otherwise the difference is infinite. The caller falls back to the
    pipeline when the result exceeds its tolerance.
    """
    rows = list(rows)
    if not rows:
        return 0.0
    method = compiled.predict_proba if compiled.is_classifier else compiled.predict

    def score(batch: list[dict]) -> np.ndarray:
        return method(batch, path=COMPILED)

    got = _outputs(score, rows)
    expected = _pipeline_outputs(pipeline, frame_builder, rows, compiled.is_classifier, got)
    worst = _difference(got, expected)
    if worst > tolerance:
        return worst
    if ESTIMATOR in compiled.paths:
        large = _outputs(lambda batch: method(batch, path=ESTIMATOR), rows)
        worst = max(worst, _difference(large, expected))
        if worst > tolerance:
            return worst
    for row, want in zip(rows, expected, strict=True):
        worst = max(worst, _difference(_outputs(score, [row]), [want]))
        if worst > tolerance:
            break
    return worst


def _pipeline_outputs(
    pipeline: Any,
    frame_builder: Callable[[list[dict]], pd.DataFrame],
    rows: list[dict],
    classifier: bool,
    compiled: Outputs,
) -> Outputs:
    """The pipeline's outputs; rows the compiled path accepted go in one batch.

    Only the rows the compiled path rejected need the slow one-row-at-a-time check, which
    a batch cannot give: a failing batch says only that some row in it failed.
    """
    method = pipeline.predict_proba if classifier else pipeline.predict
    accepted = [i for i, out in enumerate(compiled) if out is not None]
    rejected = [i for i, out in enumerate(compiled) if out is None]
    expected: Outputs = [None] * len(rows)
    # The reference rows are odd on purpose (unknown categories, gaps), and sklearn warns
    # about some of them. A warning is not a rejection: where warnings are errors (pytest
    # here), it would otherwise read as the pipeline refusing the row. The filter is
    # process-wide until Python 3.14, which is fine at load time, before serving starts.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for group in (accepted, rejected):
            outs = _outputs(lambda batch: method(frame_builder(batch)), [rows[i] for i in group])
            for i, out in zip(group, outs, strict=True):
                expected[i] = out
    return expected


def _outputs(score: Callable[[list[dict]], Any], rows: Sequence[dict]) -> Outputs:
    """Score rows in one batch; if the batch raises, row by row, None marking rejected rows."""
    if not rows:
        return []
    try:
        return list(np.asarray(score(list(rows))))
    except Exception:
        # Any error is a verdict to compare, not a crash: the other side must agree on it.
        if len(rows) == 1:
            return [None]
    return [_one(score, row) for row in rows]


def _one(score: Callable[[list[dict]], Any], row: dict) -> np.ndarray | None:
    try:
        return np.asarray(score([row]))[0]
    except Exception:
        return None


def _difference(got: Outputs, want: Outputs) -> float:
    """Max abs difference over rows; inf where only one side raised or the shapes differ."""
    worst = 0.0
    for a, b in zip(got, want, strict=True):
        if a is None or b is None:
            if a is not b:
                return float("inf")
            continue
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return float("inf")
        same_nan = np.isnan(a) & np.isnan(b)
        if (np.isnan(a) ^ np.isnan(b)).any():
            return float("inf")
        gaps = np.abs(np.where(same_nan, 0.0, a - b))
        worst = max(worst, float(gaps.max(initial=0.0)))
    return worst
