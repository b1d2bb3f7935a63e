"""Adaptive micro-batching: concurrent callers' items are processed together in one call.

No thread of its own (nothing to restart after gunicorn forks): the first caller to find the
batcher idle becomes the leader and processes everything queued so far; callers arriving
meanwhile wait, and when the leader is done it hands the lead to the oldest of them, who
processes the next batch. A lone request therefore never waits for a timer unless `max_wait`
asks it to, and under load batches grow by themselves to the rate of arrivals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Entry(Generic[T, R]):
    __slots__ = ("done", "error", "items", "lead", "results")

    def __init__(self, items: Sequence[T]):
        self.items = items
        self.done = threading.Event()
        self.lead = False
        self.results: list[R] | None = None
        self.error: BaseException | None = None


class MicroBatcher(Generic[T, R]):
    """Runs `process(items) -> results` (same length, same order) over concurrent submissions."""

    def __init__(
        self,
        process: Callable[[list[T]], list[R]],
        max_batch: int = 256,
        max_wait: float = 0.0,
    ):
        self._process = process
        self._max_batch = max(1, max_batch)
        self._max_wait = max(0.0, max_wait)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: list[_Entry[T, R]] = []
        self._busy = False
        self.batches = 0
        self.items = 0

    def submit(self, items: Sequence[T]) -> list[R]:
        """Process these items, possibly together with other callers'; returns their results.

        An exception raised by `process` reaches every caller of that batch.
        """
        if not items:
            return []
        entry: _Entry[T, R] = _Entry(items)
        with self._lock:
            self._queue.append(entry)
            entry.lead = not self._busy
            self._busy = True
            self._arrived.notify()
        if not entry.lead:
            entry.done.wait()
        if entry.lead:
            self._lead()
        if entry.error is not None:
            raise entry.error
        assert entry.results is not None
        return entry.results

    def _lead(self) -> None:
        if self._max_wait:
            self._gather()
        with self._lock:
            batch = self._take()
        try:
            results = self._process([item for e in batch for item in e.items])
            start = 0
            for e in batch:
                e.results = results[start : start + len(e.items)]
                start += len(e.items)
        except BaseException as exc:  # every caller of the batch must hear of it
            for e in batch:
                e.error = exc
        with self._lock:
            self.batches += 1
            self.items += sum(len(e.items) for e in batch)
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._busy = False
            else:
                successor.lead = True
        for e in batch:
            e.done.set()
        if successor is not None:
            successor.done.set()

    def _gather(self) -> None:
        # Wait at most max_wait for the batch to fill; a full batch goes at once.
        deadline = time.monotonic() + self._max_wait
        with self._lock:
            while self._queued_items() < self._max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)

    def _queued_items(self) -> int:
        return sum(len(e.items) for e in self._queue)

    def _take(self) -> list[_Entry[T, R]]:
        # The leader is always first in the queue; take whole submissions up to max_batch
        # items, but always at least the leader's own.
        taken = 1
        count = len(self._queue[0].items)
        while taken < len(self._queue) and count + len(self._queue[taken].items) <= self._max_batch:
            count += len(self._queue[taken].items)
            taken += 1
        batch = self._queue[:taken]
        del self._queue[:taken]
        return batch
