"""Retention: predictions older than PREDICTION_RETENTION_DAYS exported to Parquet, then dropped.

The cutoff is on an hour's boundary and never later than the hours the rollups have sealed
(`serving.commands.prune_command` folds them first): every pruned hour is pruned whole and
is in the rollups, so a late label on a row kept re-rolls an hour that lost nothing.

What goes, each in a transaction of its own, oldest first:
- PostgreSQL: every month partition whose whole month is older than the cutoff (a partition
  is dropped whole, never thinned, so rows stay between N and N + 31 days), and the rows of
  the default partition older than the cutoff;
- SQLite: the rows of `prediction` older than the cutoff, a UTC day at a time, so writers
  wait for one day's export at most, not the whole backlog's.

Each set is locked against writes (PostgreSQL: SHARE on its table; SQLite: the write
transaction), counted, written to `<dir>/<name>.parquet` (via a `.partial` file, fsynced, then
renamed), and the file read back: only when it holds exactly the counted rows are the rows'
keys deleted and the rows dropped, in that same transaction. Any failure rolls it back, so a
row is never dropped that is not in a file. An existing file is never overwritten: a
second export of the same name (rows whose drop failed last time) gets a `-2` suffix.
Once a row is dropped, its observation id may be stored again (the key goes with it).
Shadow scores of dropped rows are left in `shadow_score`, unexported.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.store import migrations, partitions
from serving.store.database import db, is_sqlite, write_transaction
from serving.store.dialect import sql

if TYPE_CHECKING:
    import pyarrow as pa

# Rows read from the database and written to the file at a time: bounded memory.
ROWS_PER_CHUNK = 50_000
# PostgreSQL: dropping a partition needs the parent table to itself for an instant; waiting
# longer would hold every request on the table behind the drop. The next run tries again.
DROP_LOCK_TIMEOUT = "3s"
# An arbitrary constant: every run of the command takes this advisory lock per set of rows.
_PG_LOCK_KEY = 7_402_114


@functools.cache
def schema() -> pa.Schema:
    """The Parquet files' columns: the table's, with its types. (pyarrow is imported here, by
    the command alone: it brings numpy, which no other command or route may pay for.)"""
    import pyarrow as pa

    columns = pa.schema(
        [
            ("id", pa.int64()),
            ("endpoint", pa.string()),
            ("model_version", pa.string()),
            ("observation_id", pa.string()),
            ("observation", pa.string()),
            ("proba", pa.float64()),
            ("prediction", pa.string()),
            ("true_class", pa.string()),
            ("created_at", pa.timestamp("us")),
            ("updated_at", pa.timestamp("us")),
            ("probabilities", pa.string()),
            ("value", pa.float64()),
            ("ab_test", pa.int64()),
            ("arm", pa.string()),
        ]
    )
    assert tuple(columns.names) == partitions.COLUMNS
    return columns


class ExportFailed(Exception):
    """A file that does not hold the rows it was meant to: nothing was dropped."""


@dataclass(frozen=True)
class Old:
    """Rows due to go: all of a partition (`before` None), or a table's rows before a time."""

    name: str
    table: str
    before: str | None


@dataclass(frozen=True)
class Pruned:
    """What one set became: its rows, the file holding them (None when there were none)."""

    name: str
    rows: int
    path: Path | None


def cutoff(now: dt.datetime, days: int) -> dt.datetime:
    """Rows created before this instant are due: `days` before `now`, down to its hour
    (naive UTC), the unit the rollups seal."""
    return (now - dt.timedelta(days=days)).replace(minute=0, second=0, microsecond=0)


def due(before: dt.datetime) -> list[Old]:
    """The sets of rows older than `before`, oldest first."""
    if is_sqlite():
        # The stored text begins with the day; each set ends at the next day or the cutoff.
        days = db.execute_sql(
            "SELECT DISTINCT substr(created_at, 1, 10) FROM prediction WHERE created_at < ? "
            "ORDER BY 1",
            (_text(before),),
        ).fetchall()
        next_days = (dt.datetime.fromisoformat(day) + dt.timedelta(days=1) for (day,) in days)
        ends = [min(next_day, before) for next_day in next_days]
        return [Old(f"prediction_before_{_stamp(end)}", "prediction", _text(end)) for end in ends]
    whole = [Old(p.name, p.name, None) for p in partitions.partitions(db.obj) if p.end <= before]
    return [
        *whole,
        Old(f"{partitions.DEFAULT}_before_{_stamp(before)}", partitions.DEFAULT, _text(before)),
    ]


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S")


def _text(moment: dt.datetime) -> str:
    # Timestamps compare as the text they are stored as (SQLite), which PostgreSQL parses.
    return moment.isoformat(sep=" ")


# Called in a set's transaction once its rows are locked, before they are dropped, with the
# rows' source (`"table" WHERE ...`, for `SELECT ... FROM {source}`) and its parameters.
BeforeDrop = Callable[[str, list[Any]], None]


def retire(old: Old, folder: Path, before_drop: BeforeDrop | None = None) -> Pruned:
    """Export one set of rows to Parquet in `folder`, check the file, then drop the rows and
    their keys; all or nothing (see the module's docstring). `before_drop` runs first in the
    same transaction (the rollups take their turn there and count the rows' last labels)."""
    where, params = ("WHERE created_at < ?", [old.before]) if old.before is not None else ("", [])
    source = f'"{old.table}" {where}'
    files: list[Path] = []
    try:
        return _retire(old, folder, source, params, files, before_drop)
    except BaseException:
        # The transaction rolled back, so the rows are still in the database: a file of them
        # left behind would be exported again by the next run, and counted twice by readers.
        for path in files:
            path.unlink(missing_ok=True)
        raise


def _retire(
    old: Old,
    folder: Path,
    source: str,
    params: list[Any],
    files: list[Path],
    before_drop: BeforeDrop | None,
) -> Pruned:
    with write_transaction():
        if not is_sqlite():
            db.execute_sql("SET LOCAL statement_timeout = 0")
            # Two runs at once take turns (SQLite's write transaction does it there); the
            # second then finds the partition the first dropped gone.
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
            if db.execute_sql("SELECT to_regclass(%s)", (old.table,)).fetchone()[0] is None:
                return Pruned(old.name, 0, None)
            # Writes (an /update of an old row) wait until the rows are gone or kept.
            db.execute_sql(f'LOCK TABLE "{old.table}" IN SHARE MODE')
        if before_drop is not None:
            # After the lock: no label can reach these rows between this and their drop.
            before_drop(source, params)
        count = db.execute_sql(sql(f"SELECT COUNT(*) FROM {source}"), params).fetchone()[0]
        path = _export(old.name, source, params, count, folder, files) if count else None
        db.execute_sql(
            sql(
                "DELETE FROM prediction_key WHERE (endpoint, observation_id, id) IN "
                f"(SELECT endpoint, observation_id, id FROM {source})"
            ),
            params,
        )
        if old.before is None:
            db.execute_sql(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'")
            db.execute_sql(f'DROP TABLE "{old.table}"')
        else:
            dropped = db.execute_sql(sql(f"DELETE FROM {source}"), params).rowcount
            if dropped != count:
                raise ExportFailed(f"{old.name}: exported {count} rows but {dropped} matched")
    return Pruned(old.name, count, path)


def _export(
    name: str, source: str, params: list[Any], count: int, folder: Path, files: list[Path]
) -> Path:
    """Write the rows of `source` to a new Parquet file (added to `files` once it has its
    name) and check it holds `count` rows."""
    import pyarrow.parquet as pq

    path = _free_name(folder, name)
    partial = path.with_name(path.name + ".partial")
    columns = ", ".join(f'"{c}"' for c in partitions.COLUMNS)
    query = sql(f"SELECT {columns} FROM {source} ORDER BY id")
    try:
        with pq.ParquetWriter(partial, schema()) as writer:
            for chunk in _chunks(query, params):
                writer.write_table(_table(chunk))
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, path)
        files.append(path)
    finally:
        partial.unlink(missing_ok=True)
    _sync_folder(folder)
    # Read back: the footer's count, and every id really there to read.
    held = pq.ParquetFile(path).metadata.num_rows
    ids = pq.read_table(path, columns=["id"]).column("id")
    if held != count or len(ids) != count or ids.null_count:
        raise ExportFailed(f"{path} holds {held} rows, {count} were to be exported")
    return path


def _free_name(folder: Path, name: str) -> Path:
    """`<folder>/<name>.parquet`, or with `-2`, `-3`… when that file exists: never overwrite."""
    path = folder / f"{name}.parquet"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{name}-{n}.parquet"
    return path


def _chunks(query: str, params: list[Any]) -> Iterator[list[tuple[Any, ...]]]:
    """The query's rows, ROWS_PER_CHUNK at a time (PostgreSQL: a cursor on the server, in the
    transaction; peewee's connections are in autocommit mode, where psycopg2 has none)."""
    if is_sqlite():
        cursor = db.execute_sql(query, params)
        while rows := cursor.fetchmany(ROWS_PER_CHUNK):
            yield rows
        return
    db.execute_sql(f"DECLARE prune_rows NO SCROLL CURSOR FOR {query}", params)
    while rows := db.execute_sql(f"FETCH {ROWS_PER_CHUNK} FROM prune_rows").fetchall():
        yield rows
    db.execute_sql("CLOSE prune_rows")


def _table(rows: list[tuple[Any, ...]]) -> pa.Table:
    import pyarrow as pa

    columns = list(zip(*rows, strict=True))
    arrays = []
    for field, values in zip(schema(), columns, strict=True):
        if pa.types.is_timestamp(field.type):
            values = tuple(map(_timestamp, values))
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema())


def _timestamp(value: Any) -> dt.datetime | None:
    # SQLite hands timestamps back as the text it stored; a malformed one fails the export.
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value)


def _sync_folder(folder: Path) -> None:
    """Make the rename durable before anything is dropped."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune(
    folder: Path,
    before: dt.datetime,
    say: Callable[[str], None],
    before_drop: BeforeDrop | None = None,
) -> list[Pruned]:
    """Make the partitions due ahead, then export and drop every set of rows older than
    `before`, oldest first (`before_drop`: see `retire`); stop at the first failure (what
    went before stays done)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = migrations.ensure_partitions()
    if made:
        say(f"made partitions {', '.join(made)}")
    done = []
    db.connect(reuse_if_open=True)
    for old in due(before):
        pruned = retire(old, folder, before_drop)
        done.append(pruned)
        if pruned.path is not None:
            say(f"{old.name}: exported {pruned.rows} rows to {pruned.path}, then dropped them")
        elif old.before is None:
            say(f"{old.name}: empty, dropped")
    if not any(p.rows for p in done):
        say(f"no prediction older than {before:%Y-%m-%d %H:%M:%S} UTC to prune")
    return done
