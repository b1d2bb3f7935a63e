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
        shared_errors: tuple[type[BaseException], ...] = (),
    ):
        self._process = process
        # Errors that concern every member whatever its items (the database is down): handed
        # to all at once rather than retried member by member.
        self._shared_errors = shared_errors
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

        A failure of one caller never fails the others: when `process` raises for a batch of
        several submissions, each is processed again alone and only the ones that still fail
        get their own exception (an error of `shared_errors` reaches every caller at once).
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
        self._run(batch)
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

    def _run(self, batch: list[_Entry[T, R]]) -> None:
        """Process a batch; on failure, each submission alone, so only a culprit fails."""
        try:
            results = self._process([item for e in batch for item in e.items])
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, self._shared_errors):
                for e in batch:
                    e.error = exc
                return
            # One member's items (a value the driver cannot bind, say) must not fail the
            # others: retry each alone. Each retry is a whole `process` call of its own, so a
            # group commit stays all-or-nothing per caller.
            for k, e in enumerate(batch):
                self._run([e])
                if isinstance(e.error, self._shared_errors):
                    # Went down meanwhile: the others would only wait for the same answer.
                    for rest in batch[k + 1 :]:
                        rest.error = e.error
                    return
            return
        except BaseException as exc:  # an interrupt: every caller must hear of it
            for e in batch:
                e.error = exc
            return
        start = 0
        for e in batch:
            e.results = results[start : start + len(e.items)]
            start += len(e.items)

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
