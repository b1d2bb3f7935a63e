"""One time-cached read of the database: what every worker keeps of statuses, A/B tests,
shadows and API keys, re-read at most every STATUS_REFRESH_SECONDS.

The database stays the source of truth for every worker and replica; a worker's own writes
`forget` the value, so the worker reads its own write on the next read, and a read that was
already under way when the write happened is answered but never kept (it may predate it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from serving.store.database import run_with_retry

T = TypeVar("T")


class Refreshing(Generic[T]):
    """`read()` (a unit of database work, retried as `run_with_retry` does) cached for
    `seconds`: `get` answers from memory until the value is older, then reads again."""

    def __init__(self, read: Callable[[], T], seconds: float, empty: T):
        self._read = read
        self._seconds = seconds
        self._lock = threading.Lock()
        self._value = empty
        self._read_at = float("-inf")
        # Moved on by every `forget`: a read that began before it is not kept.
        self._generation = 0

    def get(self) -> T:
        """The value, at most `seconds` old."""
        if time.monotonic() - self._read_at > self._seconds:
            return self._load()
        return self._value

    def forget(self) -> None:
        """Drop the value (this process changed it): the next `get` reads the database."""
        with self._lock:
            self._generation += 1
            self._read_at = float("-inf")

    def _load(self) -> T:
        generation = self._generation
        # The value is as old as the moment its read began: a read slowed down by a busy
        # machine must not count as fresher than the database state it saw.
        started = time.monotonic()
        fresh = run_with_retry(self._read)
        with self._lock:
            if generation == self._generation:
                self._value, self._read_at = fresh, started
        return fresh
