"""Client API keys for the prediction routes: created, listed and revoked with `flask keys`,
stored as sha256 hashes only, and checked against a per-worker cache of those hashes.

A key is 32 random bytes (256 bits), so a plain sha256 is enough to keep it at rest: there is
nothing to guess from a hash, and a lookup by hash compares no secret byte by byte.
"""

from __future__ import annotations

import getpass
import hashlib
import secrets
from typing import Any

import click
import peewee
from flask import current_app
from flask.cli import AppGroup

from serving.errors import Conflict, InvalidInput, NotFound, ServiceError, detail
from serving.protocol.payloads import MAX_BY_LENGTH
from serving.store import database, migrations
from serving.store.database import unit_of_work
from serving.store.refreshing import Refreshing
from serving.store.tables import ApiKey, iso, utcnow

# Recognisable in logs and secret scanners; the rest is secrets.token_urlsafe(32).
KEY_PREFIX = "sk_"
MAX_NAME_LENGTH = 100


def key_hash(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(name: str, created_by: str) -> str:
    """Store a new key under `name` and return it: the only time the key itself exists."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise InvalidInput(
            f"A key's name is 1 to {MAX_NAME_LENGTH} printable characters.",
            [detail("name", f"got {name!r}")],
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        _create(name, key_hash(key), created_by[:MAX_BY_LENGTH])
    except peewee.IntegrityError as exc:
        raise Conflict(
            f"A key named {name!r} exists already (revoked keys keep their name).",
            [detail("name", "already used")],
        ) from exc
    return key


def list_keys() -> list[dict[str, Any]]:
    """Every key, revoked or not, oldest first; never the key or its hash."""
    return [
        {
            "name": k.name,
            "created_by": k.created_by,
            "created_at": iso(k.created_at),
            "revoked_at": iso(k.revoked_at),
        }
        for k in _keys()
    ]


def revoke_key(name: str) -> bool:
    """Revoke a key by name; False when it was revoked already. Every worker refuses it within
    its refresh interval (STATUS_REFRESH_SECONDS)."""
    changed = _revoke(name)
    if changed is None:
        raise NotFound(f"No key is named {name!r}.", [detail("name", "unknown key")])
    return changed > 0


class ClientKeys:
    """Every key's hash with its name and whether it is active, re-read from the database at
    most every `refresh_seconds`: one small query per worker per interval, a dict lookup
    per request."""

    def __init__(self, refresh_seconds: float):
        self._hashes: Refreshing[dict[str, tuple[str, bool]]] = Refreshing(
            _read_hashes, refresh_seconds, {}
        )

    def lookup(self, key: str) -> tuple[str, bool] | None:
        """(name, active) of the key, or None when no key hashes to it."""
        return self._hashes.get().get(key_hash(key))

    def forget(self) -> None:
        """Drop the cache: the next lookup reads the database."""
        self._hashes.forget()


@unit_of_work(write=True)
def _create(name: str, hashed: str, created_by: str) -> None:
    ApiKey.create(name=name, key_hash=hashed, created_by=created_by)


@unit_of_work()
def _keys() -> list[ApiKey]:
    return list(ApiKey.select().order_by(ApiKey.id))


@unit_of_work(write=True)
def _revoke(name: str) -> int | None:
    if not ApiKey.select().where(ApiKey.name == name).exists():
        return None
    return (
        ApiKey.update(revoked_at=utcnow())
        .where((ApiKey.name == name) & ApiKey.revoked_at.is_null())
        .execute()
    )


def _read_hashes() -> dict[str, tuple[str, bool]]:
    query = ApiKey.select(ApiKey.key_hash, ApiKey.name, ApiKey.revoked_at)
    return {k.key_hash: (k.name, k.revoked_at is None) for k in query}


def _migrated() -> None:
    if current_app.config["SETTINGS"].migrate_on_start:
        migrations.migrate()


@click.group("keys", cls=AppGroup)
def keys_command() -> None:
    """Client API keys for /predict, /update and /predict/batch (checked when PREDICT_AUTH=on)."""


@keys_command.command("create")
@click.argument("name")
@click.option("--by", default=lambda: f"cli:{getpass.getuser()}", help="who asked for it")
def create_command(name: str, by: str) -> None:
    """Create a key and print it once, alone on stdout: only its hash is stored."""
    try:
        _migrated()
        key = create_key(name, by)
    except ServiceError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        database.close_all()
    click.echo(key)
    click.echo(f"key {name!r} created; it is shown only this once.", err=True)
    if not current_app.config["SETTINGS"].predict_auth:
        click.echo(
            "PREDICT_AUTH is off on this server: keys are not checked until it is on.", err=True
        )


@keys_command.command("list")
def list_command() -> None:
    """Every key's name, creator, creation and revocation time (never the key)."""
    try:
        _migrated()
        keys = list_keys()
    except ServiceError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        database.close_all()
    for k in keys:
        state = f"revoked {k['revoked_at']}" if k["revoked_at"] else "active"
        click.echo(f"{k['name']}\t{state}\tcreated {k['created_at']} by {k['created_by']}")
    if not keys:
        click.echo("no keys", err=True)


@keys_command.command("revoke")
@click.argument("name")
def revoke_command(name: str) -> None:
    """Revoke a key: every worker refuses it within STATUS_REFRESH_SECONDS."""
    try:
        _migrated()
        changed = revoke_key(name)
    except ServiceError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        database.close_all()
    click.echo(f"key {name!r} {'revoked' if changed else 'was already revoked'}")
