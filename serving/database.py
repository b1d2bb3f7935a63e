"""The peewee database: bound at runtime from DATABASE_URL, one connection per thread."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import peewee
from flask import Flask
from playhouse import db_url
from playhouse.pool import MaxConnectionsExceeded, PooledDatabase, PooledSqliteDatabase

from serving.config import Settings
from serving.errors import Unavailable

logger = logging.getLogger(__name__)

# Models bind to the proxy at import; the real database is chosen when the app starts.
db = peewee.DatabaseProxy()

T = TypeVar("T")

# Errors that mean "the database is not there", as opposed to a bad statement or a constraint.
CONNECTION_ERRORS = (peewee.OperationalError, peewee.InterfaceError)

_POSTGRES_SCHEMES = {"postgres", "postgresql"}


def open_database(settings: Settings) -> peewee.Database:
    """Build (without connecting) the database DATABASE_URL names."""
    parts = urlsplit(settings.database_url)
    # A pool that waits for a free connection rather than failing keeps bursts from turning
    # into errors. SQLite is pooled too: opening a connection runs the pragmas and closing the
    # last one checkpoints the WAL, which per request cost more than the insert.
    pool = {
        "max_connections": settings.db_pool_size,
        "timeout": settings.db_pool_wait_seconds,
        "stale_timeout": 300,
    }
    if parts.scheme in _POSTGRES_SCHEMES:
        # Railway hands out both spellings.
        url = urlunsplit(("postgresql+pool", *parts[1:]))
        return db_url.connect(url, connect_timeout=5, **pool)
    if parts.scheme == "sqlite":
        return PooledSqliteDatabase(
            db_url.parse(settings.database_url)["database"],
            **pool,
            pragmas={
                # WAL lets readers run beside the writer; FULL sync because an
                # acknowledged prediction must survive a power cut too.
                "journal_mode": "wal",
                "synchronous": "full",
                "busy_timeout": settings.sqlite_busy_timeout_ms,
                "foreign_keys": 1,
            },
            # Pooled connections move between threads, one thread at a time.
            check_same_thread=False,
            # SQLite >= 3.35 has RETURNING; the group commit reads inserted ids through it.
            returning_clause=True,
        )
    raise ValueError(
        f"DATABASE_URL must start with sqlite://, postgres:// or postgresql://, "
        f"got {parts.scheme!r}"
    )


def is_sqlite(database: peewee.Database | None = None) -> bool:
    """Whether the bound database is SQLite (it needs IMMEDIATE transactions to write)."""
    target = database or db.obj
    return isinstance(target, peewee.SqliteDatabase)


class SqliteWriteLock:
    """Serialises this service's SQLite writers across threads and worker processes.

    SQLite's own busy handler makes a blocked writer sleep and poll (1, 2, 5 ... 100 ms), so
    two workers taking turns spend most of their time asleep and the tail latency reaches a
    second. An flock on a file beside the database wakes the next writer the moment the
    lock is free. The file is opened per process, after any fork: a descriptor inherited
    from the master would share one lock between parent and child.
    """

    def __init__(self, database_path: str):
        self._path = f"{database_path}.write-lock"
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            if self._pid != os.getpid():
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
                self._pid = os.getpid()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *_exc: object) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()


_sqlite_write_lock: SqliteWriteLock | None = None


@contextmanager
def write_transaction() -> Iterator[None]:
    """A transaction that holds the write lock from its start, so writers queue, not fail."""
    if not is_sqlite():
        with db.atomic():
            yield
        return
    if _sqlite_write_lock is None:
        with db.atomic("IMMEDIATE"):
            yield
        return
    with _sqlite_write_lock, db.atomic("IMMEDIATE"):
        yield


def discard_connections() -> None:
    """Drop this thread's connection and every idle pooled one: after an outage they are dead."""
    database = db.obj
    try:
        if isinstance(database, PooledDatabase):
            database.manual_close()
            database.close_idle()
        elif not database.is_closed():
            database.close()
    except Exception:  # closing a dead connection may itself fail; nothing to recover
        logger.debug("error while discarding connections", exc_info=True)


def run_with_retry(work: Callable[[], T]) -> T:
    """Run a unit of database work; on a lost connection retry once on a fresh one, then 503.

    Retrying is safe because every write is idempotent on (endpoint, observation id).
    """
    for attempt in (1, 2):
        try:
            return work()
        except MaxConnectionsExceeded as exc:
            # Every pooled connection stayed busy for DB_POOL_WAIT_SECONDS: overloaded, not
            # broken, so the caller may retry; keep DB_POOL_SIZE at least THREADS.
            logger.warning("database pool exhausted: %s", exc)
            raise Unavailable(
                "Every database connection is busy; nothing was stored. Retry the request "
                "with the same id."
            ) from exc
        except CONNECTION_ERRORS as exc:
            discard_connections()
            if attempt == 2:
                logger.warning("database unreachable: %s", str(exc).strip().splitlines()[0:1])
                raise Unavailable() from exc
    raise AssertionError("unreachable")


def init_app(app: Flask, settings: Settings) -> None:
    """Bind the database and return each request's connection when the request ends."""
    global _sqlite_write_lock
    database = open_database(settings)
    db.initialize(database)
    path = database.database if is_sqlite(database) else ""
    in_memory = path in ("", ":memory:") or path.startswith("file::memory:")
    _sqlite_write_lock = None if in_memory else SqliteWriteLock(path)

    @app.teardown_appcontext
    def close_connection(_exc: BaseException | None) -> None:
        if not db.is_closed():
            try:
                db.close()
            except CONNECTION_ERRORS:
                discard_connections()


def close_all() -> None:
    """Close every connection this process holds, so none is shared across a fork."""
    database = db.obj
    if database is None:
        return
    if isinstance(database, PooledDatabase):
        database.close_all()
    elif not database.is_closed():
        database.close()
