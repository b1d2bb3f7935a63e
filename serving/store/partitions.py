"""The prediction log's monthly partitions on PostgreSQL: listed, and made ahead of time.

`prediction` is partitioned by RANGE (created_at), one partition per calendar month (UTC),
named `prediction_YYYY_MM`, plus `prediction_default` for a row whose time no partition
covers (a clock far off, or a month nobody made ahead): such a row is still stored, and moves
into its month's partition when that partition is made. Partitions are made for the current
month and the next `AHEAD_MONTHS` when the schema is migrated, when the service starts and by
`flask prune-predictions`, so an insert never waits for DDL. SQLite has no partitions: its
`prediction` is one table, and every function here does nothing there.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

import peewee

from serving.store.database import is_sqlite

logger = logging.getLogger(__name__)

# Months made beyond the current one: a service restarted or pruned at least this often
# never sends a row to the default partition.
AHEAD_MONTHS = 3
DEFAULT = "prediction_default"
# The columns of `prediction`, in table order (migration 7 made them so).
COLUMNS = (
    "id",
    "endpoint",
    "model_version",
    "observation_id",
    "observation",
    "proba",
    "prediction",
    "true_class",
    "created_at",
    "updated_at",
    "probabilities",
    "value",
    "ab_test",
    "arm",
)
_BOUND = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True)
class Partition:
    """One partition of `prediction`: its table and the times it holds, [start, end)."""

    name: str
    start: dt.datetime
    end: dt.datetime


def month_start(moment: dt.datetime) -> dt.datetime:
    """The first instant of `moment`'s month."""
    return dt.datetime(moment.year, moment.month, 1)


def next_month(start: dt.datetime) -> dt.datetime:
    """The first instant of the month after `start`'s."""
    return dt.datetime(start.year + start.month // 12, start.month % 12 + 1, 1)


def name_of(start: dt.datetime) -> str:
    """The table name of the partition of the month beginning at `start`."""
    return f"prediction_{start.year:04d}_{start.month:02d}"


def is_partitioned(database: peewee.Database) -> bool:
    """Whether `prediction` is a partitioned table (PostgreSQL, schema version 7 or later)."""
    if is_sqlite(database):
        return False
    row = database.execute_sql(
        "SELECT relkind FROM pg_class WHERE oid = to_regclass('prediction')"
    ).fetchone()
    return row is not None and row[0] == "p"


def partitions(database: peewee.Database) -> list[Partition]:
    """The month partitions of `prediction`, oldest first (the default one is not listed)."""
    cursor = database.execute_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass('prediction')"
    )
    found = []
    for name, bound in cursor.fetchall():
        match = _BOUND.search(bound)
        if match:
            start, end = (dt.datetime.fromisoformat(value) for value in match.groups())
            found.append(Partition(name, start, end))
    return sorted(found, key=lambda p: p.start)


def ensure(database: peewee.Database, now: dt.datetime, ahead: int = AHEAD_MONTHS) -> list[str]:
    """Make the partitions of `now`'s month and the `ahead` months after it that are missing;
    return the names made. Call inside a transaction that holds the migration lock, so
    processes starting together make each one once."""
    if not is_partitioned(database):
        return []
    have = partitions(database)
    made = []
    start = month_start(now)
    for _ in range(ahead + 1):
        end = next_month(start)
        # A month some partition covers already, even in part (one an operator made with
        # other bounds), is left alone: PostgreSQL would refuse the overlap, and start-up with it.
        if not any(p.start < end and start < p.end for p in have):
            name = _create_if_free(database, start)
            if name is not None:
                made.append(name)
        start = end
    return made


# Making a partition locks the whole of `prediction` for an instant; behind a long report
# that instant would become a queue of every insert. Waiting at most this long, a month that
# cannot be made now is made by the next start or prune (three months are made ahead, and a
# row of a month with no partition still lands, in the default one).
CREATE_LOCK_TIMEOUT = "2s"


def _create_if_free(database: peewee.Database, start: dt.datetime) -> str | None:
    try:
        with database.atomic():  # a savepoint: a lock timeout undoes this month only
            database.execute_sql(f"SET LOCAL lock_timeout = '{CREATE_LOCK_TIMEOUT}'")
            name = create_month(database, start)
    except peewee.OperationalError as exc:
        if getattr(getattr(exc, "orig", exc), "pgcode", None) != _LOCK_NOT_AVAILABLE:
            raise
        logger.warning(
            "partition of %s not made: prediction was busy for %s; the next start or prune "
            "makes it",
            f"{start:%Y-%m}",
            CREATE_LOCK_TIMEOUT,
        )
        return None
    finally:
        database.execute_sql("SET LOCAL lock_timeout = DEFAULT")
    return name


_LOCK_NOT_AVAILABLE = "55P03"


def create_month(database: peewee.Database, start: dt.datetime) -> str:
    """Make the partition of the month beginning at `start`, moving into it any rows the
    default partition holds for that month (PostgreSQL refuses a new partition whose rows
    the default one holds)."""
    name, end = name_of(start), next_month(start)
    bounds = (start.isoformat(sep=" "), end.isoformat(sep=" "))
    stray = database.execute_sql(
        f'SELECT EXISTS (SELECT 1 FROM "{DEFAULT}" WHERE created_at >= %s AND created_at < %s)',
        bounds,
    ).fetchone()[0]
    values = f"FOR VALUES FROM ('{bounds[0]}') TO ('{bounds[1]}')"
    if not stray:
        database.execute_sql(f'CREATE TABLE "{name}" PARTITION OF prediction {values}')
        return name
    # Built apart, filled from the default partition, then attached: all in this transaction.
    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    database.execute_sql(f'CREATE TABLE "{name}" (LIKE prediction INCLUDING DEFAULTS)')
    database.execute_sql(
        f'WITH moved AS (DELETE FROM "{DEFAULT}" WHERE created_at >= %s AND created_at < %s '
        f'RETURNING {columns}) INSERT INTO "{name}" ({columns}) SELECT {columns} FROM moved',
        bounds,
    )
    database.execute_sql(f'ALTER TABLE prediction ATTACH PARTITION "{name}" {values}')
    return name
