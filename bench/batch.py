"""Batch scoring in process: the pipeline on one big frame vs the service's scoring paths."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.models import load_pipeline
from bench.workload import POSITIVE_CLASS, TOLERANCE, Workload
from serving.model.runtime import LoadedModel

SAMPLE_SEED = 0


@dataclass(frozen=True)
class BatchResult:
    """Rows per second of each path on the same rows, and how far their answers drift apart."""

    rows: int
    vectorised_rows_per_second: float
    ours_rows_per_second: float
    max_abs_difference: float
    # LoadedModel.predict_columns: what /predict/batch and `flask score` call.
    columns_rows_per_second: float = float("nan")
    # Which path the fast path took for this many rows (compiled, estimator), or "pipeline".
    path: str = ""

    @property
    def ratio(self) -> float:
        """Ours over the vectorised pipeline: above 1 means the service path is faster."""
        return self.ours_rows_per_second / self.vectorised_rows_per_second

    @property
    def columns_ratio(self) -> float:
        """predict_columns over the vectorised pipeline."""
        return self.columns_rows_per_second / self.vectorised_rows_per_second

    @property
    def agrees(self) -> bool:
        """Both paths gave the same probabilities, within the tolerance the load checks use."""
        return self.max_abs_difference <= TOLERANCE


def measure(
    folder: Path,
    workload: Workload,
    rows: int,
    repeats: int,
    model: LoadedModel | None = None,
) -> BatchResult:
    """Time the paths on `rows` Titanic rows drawn with replacement; median of `repeats`.

    Only the scoring calls are timed: building the frame and validating the dicts are the
    caller's work in both cases. The calls take turns within each repeat (pipeline, ours,
    ours by columns), so a machine that slows down mid-run slows all of them alike.
    """
    picks = np.random.default_rng(SAMPLE_SEED).integers(0, len(workload.frame), size=rows)
    frame = workload.frame.iloc[picks].reset_index(drop=True)
    pipeline = load_pipeline(folder)
    positive = list(pipeline.classes_).index(POSITIVE_CLASS)

    model = model or LoadedModel.load(folder, "bench")
    validated = [model.schema.validate(workload.observations[i])[0] for i in picks]
    columns = {name: [row[name] for row in validated] for name in model.columns}

    (vectorised, scores, by_columns), seconds = interleaved(
        [
            lambda: pipeline.predict_proba(frame),
            lambda: model.predict(validated),
            lambda: model.predict_columns(columns),
        ],
        repeats,
    )
    want = vectorised[:, positive]
    ours = np.array([score.proba for score in scores], dtype=np.float64)
    difference = max(np.max(np.abs(ours - want)), np.max(np.abs(by_columns.proba - want)))
    compiled = model.compiled
    return BatchResult(
        rows=rows,
        vectorised_rows_per_second=rows / seconds[0],
        ours_rows_per_second=rows / seconds[1],
        max_abs_difference=float(difference),
        columns_rows_per_second=rows / seconds[2],
        path="pipeline" if compiled is None else compiled.path_for(rows),
    )


def interleaved(calls: Sequence[Callable[[], object]], repeats: int) -> tuple[list, list[float]]:
    """Each call's result and the median of its `repeats` timings, the calls taking turns
    within each repeat, after one untimed call each (caches, lazy imports)."""
    results = [call() for call in calls]
    seconds: list[list[float]] = [[] for _ in calls]
    for _ in range(max(1, repeats)):
        for k, call in enumerate(calls):
            began = time.perf_counter()
            results[k] = call()
            seconds[k].append(time.perf_counter() - began)
    return results, [statistics.median(s) for s in seconds]


def median_time(call: Callable[[], object], repeats: int) -> tuple[object, float]:
    """The call's result and the median of `repeats` timed calls, after one untimed call
    (caches, lazy imports and any compilation happen there)."""
    result = call()
    seconds = []
    for _ in range(max(1, repeats)):
        began = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - began)
    return result, statistics.median(seconds)
