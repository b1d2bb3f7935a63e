"""Where SQLite and PostgreSQL differ, each difference named once: placeholders, the float
type, timestamps, locks. The service's hand-written SQL asks here instead of testing the
database itself; peewee's own queries need none of it. (Migrations keep their own spelling:
they are frozen as they ran.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import peewee

from serving.store.database import db, is_sqlite
from serving.store.tables import utcnow


def param() -> str:
    """The running database's placeholder: `?` on SQLite, `%s` on PostgreSQL."""
    return db.obj.param


def sql(text: str) -> str:
    """SQL written with `?` placeholders, in the running database's placeholder (the text
    must hold no other `?`)."""
    return text.replace("?", db.obj.param)


def rows(text: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Every row of a query written with `?` placeholders."""
    return list(db.execute_sql(sql(text), tuple(params)).fetchall())


def one(text: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """The first row of a query written with `?` placeholders, or None."""
    return db.execute_sql(sql(text), tuple(params)).fetchone()


def float_type() -> str:
    """The type to CAST a number to for double-precision arithmetic: SQLite's REAL is a
    double, PostgreSQL's REAL is single precision."""
    return "REAL" if is_sqlite() else "DOUBLE PRECISION"


def whole_seconds(column: str) -> str:
    """An expression for a timestamp column's seconds since the epoch, the fraction cut off
    before any arithmetic (SQLite stores the text "YYYY-MM-DD HH:MM:SS[.ffffff]": its first 19
    characters are the second)."""
    if is_sqlite():
        return f"CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER)"
    return f"CAST(EXTRACT(EPOCH FROM date_trunc('second', {column})) AS BIGINT)"


# PostgreSQL's clock when the UPDATE runs. A concurrent update of the same row waits for its
# lock, and PostgreSQL then evaluates the new row again, so the time is read after the lock:
# it follows commit order. (now() would be the transaction's start, and a time taken in
# Python before the statement could be older than the update that committed before it.)
_POSTGRES_NOW = peewee.SQL("(clock_timestamp() AT TIME ZONE 'UTC')")


def now_after_row_lock() -> Any:
    """The time of an UPDATE, read after its row lock, so the last commit has the latest."""
    # SQLite's write transaction (IMMEDIATE, behind the write lock) already holds the lock
    # here; its own clock has only milliseconds, so Python's serves.
    return utcnow() if is_sqlite() else _POSTGRES_NOW


def take_turns(key: int) -> None:
    """Inside a write transaction: wait for every other transaction that took `key`, until
    this one ends (a PostgreSQL advisory lock; on SQLite the write transaction alone is that
    lock)."""
    if not is_sqlite():
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (key,))


def try_turn(key: int) -> bool:
    """Inside a write transaction: take `key` as `take_turns` does if nobody holds it, and
    say whether it was taken (False: another transaction holds it; do not wait). On SQLite
    the write transaction already is the turn."""
    if is_sqlite():
        return True
    (taken,) = db.execute_sql("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()
    return bool(taken)


def database_now() -> dt.datetime:
    """The database's clock, naive UTC: the clock `now_after_row_lock` stamps rows with."""
    if is_sqlite():
        return utcnow()
    (moment,) = db.execute_sql("SELECT clock_timestamp() AT TIME ZONE 'UTC'").fetchone()
    return moment


def has_copy() -> bool:
    """Whether bulk rows can go through COPY and ANY(array) parameters (PostgreSQL)."""
    return not is_sqlite()


def snapshot() -> None:
    """First in a transaction: every statement of it sees the database as it was when its
    first one began (PostgreSQL's REPEATABLE READ; SQLite's transactions already do)."""
    if not is_sqlite():
        db.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
