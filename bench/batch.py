"""Batch scoring in process: the pipeline on one big frame vs the service's scoring path."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.models import load_pipeline
from bench.workload import POSITIVE_CLASS, TOLERANCE, Workload
from serving.runtime import LoadedModel

SAMPLE_SEED = 0


@dataclass(frozen=True)
class BatchResult:
    """Rows per second of each path on the same rows, and how far their answers drift apart."""

    rows: int
    vectorised_rows_per_second: float
    ours_rows_per_second: float
    max_abs_difference: float

    @property
    def ratio(self) -> float:
        """Ours over the vectorised pipeline: above 1 means the service path is faster."""
        return self.ours_rows_per_second / self.vectorised_rows_per_second

    @property
    def agrees(self) -> bool:
        """Both paths gave the same probabilities, within the tolerance the load checks use."""
        return self.max_abs_difference <= TOLERANCE


def measure(folder: Path, workload: Workload, rows: int, repeats: int) -> BatchResult:
    """Time both paths on `rows` Titanic rows drawn with replacement; median of `repeats`.

    Only the scoring calls are timed: building the frame and validating the dicts are the
    caller's work in both cases.
    """
    picks = np.random.default_rng(SAMPLE_SEED).integers(0, len(workload.frame), size=rows)
    frame = workload.frame.iloc[picks].reset_index(drop=True)
    pipeline = load_pipeline(folder)
    positive = list(pipeline.classes_).index(POSITIVE_CLASS)

    model = LoadedModel.load(folder, "bench")
    validated = [model.schema.validate(workload.observations[i])[0] for i in picks]

    vectorised, vectorised_seconds = median_time(lambda: pipeline.predict_proba(frame), repeats)
    scores, ours_seconds = median_time(lambda: model.predict(validated), repeats)
    ours = np.array([score.proba for score in scores], dtype=np.float64)
    return BatchResult(
        rows=rows,
        vectorised_rows_per_second=rows / vectorised_seconds,
        ours_rows_per_second=rows / ours_seconds,
        max_abs_difference=float(np.max(np.abs(ours - vectorised[:, positive]))),
    )


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
