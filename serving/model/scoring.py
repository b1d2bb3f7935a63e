"""Scoring: validated observations in, one score each out. Concurrent requests to the same
model version in one process are scored together, in one vectorised call."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from serving.model.batching import MicroBatcher

if TYPE_CHECKING:  # the app makes its Scorer before any model (or NumPy) is loaded
    from serving.model.runtime import LoadedModel, Score


class Scorer:
    """One micro-batcher per model version, made when the version first scores."""

    def __init__(self, max_batch: int, max_wait: float):
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._lock = threading.Lock()
        self._batchers: dict[int, MicroBatcher[dict[str, Any], Score]] = {}

    def score(
        self,
        model: LoadedModel,
        observations: Sequence[dict[str, Any]],
        log_refusal: bool = True,
    ) -> list[Score]:
        """Score validated observations with one model version, in input order.

        A lone observation the pipeline refuses (`LoadedModel.refuses_input`: NaN where no
        imputer waits, say) raises the 422 `LoadedModel.refusal` names its fields in (logged
        unless `log_refusal` is off, as for a shadow, which logs its own skip); the batcher
        has already scored the other callers it met without it.
        """
        try:
            if len(observations) >= self._max_batch:
                # Already a batch: queueing it behind single requests would only add latency.
                return model.predict(observations)
            return self._batcher(model).submit(observations)
        except Exception as exc:
            if len(observations) == 1 and model.refuses_input(exc):
                raise model.refusal(observations[0], exc, log=log_refusal) from exc
            raise

    def _batcher(self, model: LoadedModel) -> MicroBatcher[dict[str, Any], Score]:
        batcher = self._batchers.get(id(model))
        if batcher is None:
            with self._lock:
                batcher = self._batchers.setdefault(
                    id(model), MicroBatcher(model.predict, self._max_batch, self._max_wait)
                )
        return batcher
