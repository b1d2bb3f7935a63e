"""The peewee database: bound at runtime from DATABASE_URL, one connection per thread."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import peewee
from flask import Flask
from playhouse import db_url
from playhouse.pool import PooledDatabase, PooledSqliteDatabase

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


def write_transaction() -> peewee._atomic:
    """A transaction that takes the write lock up front, so concurrent writers queue, not fail."""
    if is_sqlite():
        return db.atomic("IMMEDIATE")
    return db.atomic()


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
        except CONNECTION_ERRORS as exc:
            discard_connections()
            if attempt == 2:
                logger.warning("database unreachable: %s", str(exc).strip().splitlines()[0:1])
                raise Unavailable() from exc
    raise AssertionError("unreachable")


def init_app(app: Flask, settings: Settings) -> None:
    """Bind the database and return each request's connection when the request ends."""
    db.initialize(open_database(settings))

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
