"""Client-side deadlines for database calls: a connection that outlives its deadline is cut.

statement_timeout is enforced by the server, so a server that stopped answering (its
processes frozen, its host paused) never sends it; and TCP keeps a connection to a stopped
process alive, because the kernel still acknowledges. Only the client can give up: when a
call outlives its deadline, a watcher thread shuts the connection's socket down, and the call
blocked on it fails at once with a connection error (`DeadlineExceeded`), never a hang.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import peewee

logger = logging.getLogger(__name__)

# How often the watcher looks while anything is watched: deadlines are seconds, so a quarter
# of a second late is fine, and it never wakes while nothing is watched.
_TICK = 0.25


class DeadlineExceeded(peewee.OperationalError):
    """The database did not answer within the deadline; the connection was cut."""


class Watch:
    """One watched call; `fired` says whether its deadline cut the connection."""

    __slots__ = ("fired",)

    def __init__(self) -> None:
        self.fired = False


class Watchdog:
    """Watches connections in calls; shuts down the socket of one whose deadline passed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._watched: dict[int, tuple[float, int, Watch]] = {}
        self._tokens = itertools.count()
        self._pid = 0

    @contextmanager
    def watch(self, connection: Any, seconds: float) -> Iterator[Watch]:
        """While the block runs, cut `connection` if it lasts more than `seconds` (<= 0: never).

        A connection error raised in the block because of the cut becomes DeadlineExceeded.
        """
        handle = Watch()
        if seconds <= 0:
            yield handle
            return
        token = next(self._tokens)
        with self._lock:
            # After a fork the watcher thread is gone: each process starts its own.
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="db-deadlines", daemon=True).start()
            if not self._watched:
                self._changed.notify()
            self._watched[token] = (time.monotonic() + seconds, connection.fileno(), handle)
        try:
            yield handle
        except Exception as exc:
            # Whatever the cut connection raised (a lost connection, mostly), it means this.
            if handle.fired and not isinstance(exc, DeadlineExceeded):
                raise DeadlineExceeded(f"the database did not answer within {seconds:g} s") from exc
            raise
        finally:
            # Under the lock, so the socket is never shut after its connection was handed
            # back (its descriptor number may belong to another connection by then).
            with self._lock:
                self._watched.pop(token, None)

    def _run(self) -> None:
        with self._lock:
            while True:
                self._changed.wait(_TICK if self._watched else None)
                now = time.monotonic()
                for token, (deadline, fd, handle) in list(self._watched.items()):
                    if deadline <= now:
                        del self._watched[token]
                        handle.fired = True
                        _shut(fd)


def _shut(fd: int) -> None:
    """Shut a socket down for everyone using it: a call blocked reading it fails at once."""
    logger.warning("a database call outlived its deadline: closing its connection")
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed meanwhile: nothing left to cut
        logger.debug("could not shut down descriptor %s", fd, exc_info=True)


watchdog = Watchdog()
