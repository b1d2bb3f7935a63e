"""A fresh, empty database for every measured cell: a SQLite file or a PostgreSQL database."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SQLITE, POSTGRES = "sqlite", "postgres"
DATABASES = (SQLITE, POSTGRES)
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


class DatabaseFailed(RuntimeError):
    """A throwaway database could not be created or dropped."""


def postgres_problem(admin_url: str) -> str | None:
    """Why PostgreSQL cannot be used for the benchmark, or None when it can."""
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 is not installed"
    try:
        psycopg2.connect(admin_url, connect_timeout=3).close()
    except psycopg2.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL is not reachable at {admin_url}: {first_line}"
    return None


def postgres_version(admin_url: str) -> str | None:
    """The server's version string, for the machine info; None when unreachable."""
    import psycopg2

    try:
        conn = psycopg2.connect(admin_url, connect_timeout=3)
    except psycopg2.Error:
        return None
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return cursor.fetchone()[0]
    finally:
        conn.close()


@contextmanager
def fresh(kind: str, workdir: Path, label: str, postgres_url: str) -> Iterator[str]:
    """Yield the DATABASE_URL of a new empty database, removed when the block ends."""
    if kind == SQLITE:
        with _sqlite_file(Path(workdir), label) as url:
            yield url
    elif kind == POSTGRES:
        with _postgres_database(postgres_url, label) as url:
            yield url
    else:
        raise ValueError(f"unknown database {kind!r}; expected one of {DATABASES}")


@contextmanager
def _sqlite_file(workdir: Path, label: str) -> Iterator[str]:
    path = workdir / f"{label}.db"
    try:
        yield f"sqlite:///{path}"
    finally:
        # The WAL and shared-memory files go too, so a long run does not fill the temp dir.
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextmanager
def _postgres_database(admin_url: str, label: str) -> Iterator[str]:
    # A random suffix keeps concurrent or crashed runs from colliding on a name.
    name = f"bench_{label}_{secrets.token_hex(3)}".lower().replace("-", "_")
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        # FORCE (PostgreSQL 13+) ends connections a killed server may have left behind.
        try:
            _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except DatabaseFailed:
            _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}"')


def _admin(admin_url: str, statement: str) -> None:
    import psycopg2

    try:
        conn = psycopg2.connect(admin_url, connect_timeout=5)
    except psycopg2.Error as exc:
        raise DatabaseFailed(f"cannot connect to {admin_url} to run {statement}: {exc}") from exc
    try:
        # CREATE and DROP DATABASE cannot run inside a transaction block.
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(statement)
    except psycopg2.Error as exc:
        raise DatabaseFailed(f"{statement} failed: {exc}") from exc
    finally:
        conn.close()
