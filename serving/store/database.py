"""The peewee database: bound at runtime from DATABASE_URL, one connection per thread."""

from __future__ import annotations

import fcntl
import functools
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import peewee
from flask import Flask
from playhouse import db_url
from playhouse.pool import (
    MaxConnectionsExceeded,
    PoolConnection,
    PooledDatabase,
    PooledPostgresqlDatabase,
    PooledSqliteDatabase,
)

from serving.config import Settings
from serving.errors import Unavailable
from serving.store.deadlines import DeadlineExceeded, watchdog

try:  # PostgreSQL's statement_timeout (psycopg2 is only needed for PostgreSQL)
    from psycopg2.extensions import QueryCanceledError
except ImportError:  # pragma: no cover

    class QueryCanceledError(Exception):  # type: ignore[no-redef]
        """Stands in for psycopg2's when it is not installed."""


logger = logging.getLogger(__name__)

# Models bind to the proxy at import; the real database is chosen when the app starts.
db = peewee.DatabaseProxy()

T = TypeVar("T")
P = ParamSpec("P")

# Errors that mean "the database is not there", as opposed to a bad statement or a constraint.
CONNECTION_ERRORS = (peewee.OperationalError, peewee.InterfaceError)

_POSTGRES_SCHEMES = {"postgres", "postgresql"}

# TCP keepalives on every PostgreSQL connection: a pooled connection whose server or network
# vanished without a word is found dead after ~10 + 3 x 3 s of silence instead of the kernel's
# two hours, and data left unacknowledged for 10 s ends the connection (tcp_user_timeout).
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}

# The statement limits (ms; 0: none) of a request's work and of long work (batch writes,
# reports); the client gives up on a unit of work a second after its limit (deadlines.py).
_statement_timeout_ms = 0
_long_statement_timeout_ms = 0
_DEADLINE_GRACE_SECONDS = 1.0

# The limit the next transaction this thread begins will carry, while a unit of work that
# chose one (run_with_retry) runs; otherwise a request's.
_transaction_limit = threading.local()


def _limit_of_next_transaction() -> int:
    chosen = getattr(_transaction_limit, "ms", None)
    return int(_statement_timeout_ms if chosen is None else chosen)


class PostgresPool(PooledPostgresqlDatabase):
    """peewee's PostgreSQL pool, except that no thread waits on another's network round trip.

    peewee opens a connection while holding both the database's lock and the pool's, and
    checks a reused one (`SELECT 1`) under the pool's lock, so one connection attempt to a
    server that does not answer stalled every request of the process, each behind the last:
    a frozen postmaster held every request for 30 s (issue 14). Here the locks guard only the
    bookkeeping; opening and checking happen outside them, each bounded by connect_timeout
    and statement_timeout.
    """

    def __init__(self, *args: object, ping_seconds: float = 0, **kwargs: object):
        self._opening = 0  # connections being opened or checked, counted against the limit
        # A reused connection is checked with a round trip; past this, the server is gone.
        self._ping_seconds = ping_seconds
        super().__init__(*args, **kwargs)
        # Connection state is per thread already; this lock only made threads connect in turn.
        self._lock = peewee._NoopLock()

    def begin(self, isolation_level: object = None) -> None:
        """BEGIN, and the transaction's statement limit in the same round trip.

        `SET LOCAL` ends with the transaction, so nothing outlives it on the server
        connection: behind a pooler in transaction mode the next client of that connection
        gets none of it, and none of that client's settings reach this one.
        """
        if isolation_level is not None:  # not used by the service; peewee's own, then the limit
            super().begin(isolation_level)
            self.execute_sql(f"SET LOCAL statement_timeout = {_limit_of_next_transaction()}")
            return
        with peewee.__exception_wrapper__:  # type: ignore[attr-defined]  # not in peewee-stubs
            self.cursor().execute(
                f"BEGIN; SET LOCAL statement_timeout = {_limit_of_next_transaction()}"
            )

    def _connect(self) -> Any:  # a driver connection
        while True:
            with self._pool_lock:
                conn, stamp = None, 0.0
                if self._connections:
                    stamp, _counter, conn = heapq.heappop(self._connections)
                elif self._max_connections and (
                    len(self._in_use) + self._opening >= self._max_connections
                ):
                    raise MaxConnectionsExceeded("Exceeded maximum connections.")
                self._opening += 1
            silent = False
            try:
                if conn is None:
                    conn, stamp = super(PooledDatabase, self)._connect(), time.time()
                elif self._stale_timeout and self._is_stale(stamp):
                    self._close_raw(conn)
                    conn = None
                else:
                    with watchdog.watch(conn, self._ping_seconds) as ping:
                        dead = self._is_closed(conn)
                    if dead:
                        self._close_raw(conn)
                        conn, silent = None, ping.fired
            finally:
                with self._pool_lock:
                    self._opening -= 1
                    if conn is None:  # a slot is free again for whoever waits
                        self._pool_available.notify()
                    else:
                        self._in_use[self.conn_key(conn)] = PoolConnection(stamp, conn, time.time())
            if conn is not None:
                return conn
            if silent:
                # The server took a connection's check past the deadline: trying the other
                # idle connections would only wait as long again for each.
                raise DeadlineExceeded(
                    f"the database did not answer within {self._ping_seconds:g} s"
                )


def _postgres_params(settings: Settings, url: str) -> dict[str, object]:
    """Connection parameters from the URL, with the connect timeout and keepalives added.

    No session settings travel in the start-up packet: a pooler in transaction mode
    (PgBouncer) hands one server connection to many clients, so the statement limit is set
    per transaction instead (`PostgresPool.begin`). An `options` the URL names is passed on
    as it is (PgBouncer refuses it unless told to ignore it: README, "Behind a connection
    pooler").
    """
    params: dict[str, object] = dict(db_url.parse(url))
    params.setdefault("connect_timeout", settings.db_connect_timeout_seconds)
    for name, value in _KEEPALIVES.items():
        params.setdefault(name, value)
    return params


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
        url = urlunsplit(("postgresql", *parts[1:]))
        params = _postgres_params(settings, url)
        return PostgresPool(
            params.pop("database"),
            ping_seconds=settings.db_connect_timeout_seconds,
            **params,
            **pool,
        )
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
            fd = self._fd
            if fd is None or self._pid != os.getpid():
                fd = self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
                self._pid = os.getpid()
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *_exc: object) -> None:
        try:
            if self._fd is not None:
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


def release_connection() -> None:
    """Give this thread's connection back to the pool unless a transaction still needs it.

    A thread must never hold a connection while it waits for something else (the group
    commit's queue, the scorer): the thread it waits for may itself need that connection.
    """
    database = db.obj
    if database is None or database.is_closed() or database.in_transaction():
        return
    try:
        database.close()
    except CONNECTION_ERRORS:
        discard_connections()


def canceled(exc: BaseException) -> bool:
    """Whether an error is a statement_timeout: psycopg2's QueryCanceledError itself, or the
    OperationalError peewee raises in its place (the original as its first argument and
    context). Taken for a lost connection, it was retried (twice the wait, on a database
    already too slow) and answered "unreachable"."""
    return any(
        isinstance(e, QueryCanceledError)
        for e in (exc, *exc.args[:1], exc.__cause__, exc.__context__)
    )


def _unavailable(exc: Exception) -> Unavailable:
    """The 503 for a database that does not answer (its reason goes to the log only)."""
    logger.warning("database unreachable: %s", str(exc).strip().splitlines()[0:1])
    return Unavailable()


def _too_slow(exc: Exception) -> Unavailable:
    """The 503 for work the database did not finish in time: retrying at once would only
    wait as long again. A write cut at its COMMIT may have been stored: the same id replays it."""
    logger.warning("database too slow: %s", str(exc).strip().splitlines()[0:1])
    return Unavailable(
        "The database did not answer in time; the request may not have been stored. "
        "Retry it with the same id."
    )


def _as_one_transaction(
    work: Callable[[], T], limit_ms: int, long_running: bool
) -> Callable[[], T]:
    """PostgreSQL: `work` as one transaction whose statements may each run `limit_ms`.

    Reads too: the limit is a `SET LOCAL`, which only a transaction holds (behind a pooler a
    session-wide SET would stay on a server connection other clients use next).
    """

    def transaction() -> T:
        if db.in_transaction():
            # Inside a unit already open: its transaction, with the longer limit if asked.
            if long_running:
                db.execute_sql(f"SET LOCAL statement_timeout = {int(limit_ms)}")
            return work()
        _transaction_limit.ms = limit_ms
        try:
            with db.atomic():
                return work()
        finally:
            _transaction_limit.ms = None

    return transaction


# How deep this thread is in run_with_retry: only the outermost call gives its connection back.
_depth = threading.local()


def run_with_retry(work: Callable[[], T], long_running: bool = False) -> T:
    """Run a unit of database work; on a lost connection retry once on a fresh one, then 503.

    Retrying is safe because every write is idempotent on (endpoint, observation id). A
    server that cannot be reached at all is a 503 at once: a second connection attempt would
    only double the wait. On PostgreSQL the work is one transaction, begun with its
    statement limit: `long_running` work (batch writes, reports) gets
    DB_LONG_STATEMENT_TIMEOUT_MS instead of a request's DB_STATEMENT_TIMEOUT_MS. The
    connection goes back to the pool when the work is done.
    """
    sqlite = is_sqlite()
    limit_ms = _long_statement_timeout_ms if long_running else _statement_timeout_ms
    deadline = 0.0 if sqlite or not limit_ms else limit_ms / 1000 + _DEADLINE_GRACE_SECONDS
    if not sqlite:
        work = _as_one_transaction(work, limit_ms, long_running)
    _depth.value = getattr(_depth, "value", 0) + 1
    try:
        for attempt in (1, 2):
            try:
                db.connect(reuse_if_open=True)
            except CONNECTION_ERRORS as exc:
                discard_connections()
                raise _unavailable(exc) from exc
            try:
                with watchdog.watch(db.connection(), deadline):
                    return work()
            except QueryCanceledError as exc:
                # statement_timeout: the server is slow, not gone; the connection is fine.
                raise _too_slow(exc) from exc
            except DeadlineExceeded as exc:
                discard_connections()
                raise _too_slow(exc) from exc
            except CONNECTION_ERRORS as exc:
                if canceled(exc):
                    raise _too_slow(exc) from exc
                discard_connections()
                if attempt == 2:
                    raise _unavailable(exc) from exc
        raise AssertionError("unreachable")
    except MaxConnectionsExceeded as exc:
        # Every pooled connection stayed busy for DB_POOL_WAIT_SECONDS: overloaded, not
        # broken, so the caller may retry soon; keep DB_POOL_SIZE at least THREADS.
        logger.warning("database pool exhausted: %s", exc)
        raise Unavailable(
            "Every database connection is busy; nothing was stored. Retry the request "
            "with the same id.",
            retry_after=1,
        ) from exc
    finally:
        _depth.value -= 1
        if not _depth.value:
            release_connection()


def unit_of_work(
    *, write: bool = False, long_running: bool | Callable[..., bool] = False
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorator: every call of the function is one unit of database work, run by
    `run_with_retry` (retried once on a lost connection, cut past its deadline, its
    connection given back after, one transaction on PostgreSQL), inside a
    `write_transaction` when `write`.

    `long_running` (batch writes, reports: DB_LONG_STATEMENT_TIMEOUT_MS) may be a function
    of the call's arguments. Errors the function raises (a 404, a 409) pass through and roll
    its transaction back, as they would from a `work` closure handed to `run_with_retry`.
    """

    def decorate(function: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            def work() -> T:
                # On PostgreSQL run_with_retry makes every unit one transaction already.
                if write and is_sqlite():
                    with write_transaction():
                        return function(*args, **kwargs)
                return function(*args, **kwargs)

            long = long_running(*args, **kwargs) if callable(long_running) else long_running
            return run_with_retry(work, long_running=long)

        return run

    return decorate


def init_app(app: Flask, settings: Settings) -> None:
    """Bind the database and return each request's connection when the request ends."""
    global _sqlite_write_lock, _statement_timeout_ms, _long_statement_timeout_ms
    _statement_timeout_ms = settings.db_statement_timeout_ms
    _long_statement_timeout_ms = settings.db_long_statement_timeout_ms
    if settings.db_pool_size < settings.threads:
        # Each thread may need a connection at once; the ones that find none wait up to
        # DB_POOL_WAIT_SECONDS and then answer 503.
        logger.warning(
            "DB_POOL_SIZE=%s is below THREADS=%s: under load some requests will wait for a "
            "database connection and get 503 after DB_POOL_WAIT_SECONDS=%s; set DB_POOL_SIZE "
            "to at least THREADS",
            settings.db_pool_size,
            settings.threads,
            settings.db_pool_wait_seconds,
        )
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
