"""The store of published model versions: the files of each version published to a running
deployment, in the database every worker and replica reads (tables `published_version` and
`published_file`, migration 6).

A version is written once, with its files and its first status, in one transaction, and
never overwritten or deleted: what a worker loaded is what every other worker loads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import peewee

from serving.decisions import lifecycle
from serving.errors import Conflict, detail
from serving.model.digests import sha256_hex
from serving.store.database import db, unit_of_work
from serving.store.tables import PublishedFile, PublishedVersion, iso

# Named here, not imported from serving.model.runtime: this store stays free of the model loader.
METADATA_FILE = "model.json"

Key = tuple[str, str]

# The first history row's reason of a version published as it is.
PUBLISHED_REASON = "published; status declared by model.json"

TABLE = PublishedVersion._meta.table_name


@dataclass(frozen=True)
class Published:
    """One published version as stored: its files' bytes and their sha256 at upload."""

    endpoint: str
    version: str
    published_by: str
    published_at: str | None
    files: dict[str, bytes]
    sha256: dict[str, str]

    def describe(self) -> dict[str, Any]:
        """Who published it, when, and each file's size and sha256 (not its bytes)."""
        return {
            "endpoint": self.endpoint,
            "version": self.version,
            "published_by": self.published_by,
            "published_at": self.published_at,
            "files": {
                name: {"size": len(data), "sha256": self.sha256[name]}
                for name, data in sorted(self.files.items())
            },
        }


@unit_of_work()
def keys() -> frozenset[Key]:
    """Every published (endpoint, version): one small query, no file bytes. Empty while the
    schema has no store yet (MIGRATE_ON_START off and `flask migrate` not run)."""
    if not db.table_exists(TABLE):
        return frozenset()
    query = PublishedVersion.select(PublishedVersion.endpoint, PublishedVersion.version)
    return frozenset((row.endpoint, row.version) for row in query)


@unit_of_work()
def exists(endpoint: str, version: str) -> bool:
    """Whether the version is published already."""
    if not db.table_exists(TABLE):
        return False
    query = PublishedVersion.select().where(
        (PublishedVersion.endpoint == endpoint) & (PublishedVersion.version == version)
    )
    return query.exists()


@unit_of_work(long_running=True)
def read(endpoint: str, version: str) -> Published | None:
    """A published version with its files, or None. Each file's bytes are checked against
    the sha256 stored beside them; a mismatch raises StoreCorrupted."""
    row = PublishedVersion.get_or_none(
        (PublishedVersion.endpoint == endpoint) & (PublishedVersion.version == version)
    )
    if row is None:
        return None
    files: dict[str, bytes] = {}
    digests: dict[str, str] = {}
    for stored in PublishedFile.select().where(PublishedFile.published_version == row.id):
        # PostgreSQL hands bytea back as a memoryview.
        data = bytes(stored.content)
        if sha256_hex(data) != stored.sha256 or len(data) != stored.size:
            raise StoreCorrupted(
                f"published version {endpoint}/{version}: the stored {stored.name} does not "
                "match the sha256 recorded when it was published"
            )
        files[stored.name] = data
        digests[stored.name] = stored.sha256
    return Published(endpoint, version, row.published_by, iso(row.published_at), files, digests)


@unit_of_work()
def metadata(endpoint: str) -> dict[str, dict[str, Any]]:
    """Each published version of `endpoint` with its model.json, read without the other
    files' bytes (the pipelines may be large); a model.json that is not a JSON object reads
    as empty. StoreCorrupted when one differs from its stored sha256."""
    if not db.table_exists(TABLE):
        return {}
    versions = {
        row.id: row.version
        for row in PublishedVersion.select(PublishedVersion.id, PublishedVersion.version).where(
            PublishedVersion.endpoint == endpoint
        )
    }
    query = PublishedFile.select().where(
        PublishedFile.published_version.in_(list(versions)) & (PublishedFile.name == METADATA_FILE)
    )
    found: dict[str, dict[str, Any]] = {}
    for stored in query:
        version = versions[stored.published_version]
        data = bytes(stored.content)
        if sha256_hex(data) != stored.sha256:
            raise StoreCorrupted(
                f"published version {endpoint}/{version}: the stored {METADATA_FILE} does not "
                "match the sha256 recorded when it was published"
            )
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            parsed = {}
        found[version] = parsed if isinstance(parsed, dict) else {}
    return found


class StoreCorrupted(Exception):
    """Stored bytes that differ from the digest recorded with them; the message says which."""


def write(
    endpoint: str,
    version: str,
    files: Mapping[str, bytes],
    by: str,
    initial_status: str,
    reason: str = PUBLISHED_REASON,
) -> tuple[Published, str]:
    """Store a version's files and record its first status (with `reason` in the history),
    in one transaction; return what was stored and the status the version has (the declared
    one, or testing when it declared production and the endpoint has a production version
    already: as at first load). Conflict when the version is published already."""
    try:
        return _write(endpoint, version, dict(files), by, initial_status, reason)
    except peewee.IntegrityError as exc:
        raise already_published(endpoint, version) from exc


def already_published(endpoint: str, version: str) -> Conflict:
    """The 409 of a version that is published already."""
    return Conflict(
        f"Version {version!r} of {endpoint!r} is published already; a published version is "
        "never overwritten: publish it under a new version.",
        [detail("version", "already published")],
    )


@unit_of_work(write=True, long_running=True)
def _write(
    endpoint: str, version: str, files: dict[str, bytes], by: str, initial_status: str, reason: str
) -> tuple[Published, str]:
    row = PublishedVersion.create(endpoint=endpoint, version=version, published_by=by)
    digests = {name: sha256_hex(data) for name, data in files.items()}
    for name, data in sorted(files.items()):
        PublishedFile.create(
            published_version=row.id, name=name, sha256=digests[name], size=len(data), content=data
        )
    statuses = lifecycle.record_declared(
        [(endpoint, version, initial_status)],
        by=by,
        reason=reason,
    )
    stored = Published(endpoint, version, by, iso(row.published_at), files, digests)
    return stored, statuses[(endpoint, version)]
