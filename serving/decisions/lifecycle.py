"""Version statuses: testing, staging, production, archived, with their history.

The database is the source of truth, so every worker and replica agrees: the latest
`version_status` row of a version is its status. Each process caches the statuses for a few
seconds, which is how quickly a promotion reaches every worker without a restart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from serving.errors import Conflict, InvalidInput, NotFound, detail
from serving.store import dialect
from serving.store.database import unit_of_work
from serving.store.refreshing import Refreshing
from serving.store.tables import VersionStatus, iso

TESTING, STAGING, PRODUCTION, ARCHIVED = "testing", "staging", "production", "archived"
STATUSES = (TESTING, STAGING, PRODUCTION, ARCHIVED)

# Any constant: status changes on one database take turns behind this advisory lock.
_PG_LOCK_KEY = 7_402_114

Key = tuple[str, str]


def check_status(status: Any, field: str = "status") -> str:
    """A valid status name, or InvalidInput naming the field."""
    if status not in STATUSES:
        raise InvalidInput(
            f"'{field}' must be one of {', '.join(STATUSES)}.",
            [detail(field, f"expected one of {list(STATUSES)}, got {status!r}")],
        )
    return status


def _latest() -> dict[Key, str]:
    rows = VersionStatus.select(
        VersionStatus.endpoint, VersionStatus.version, VersionStatus.status
    ).order_by(VersionStatus.id)
    return {(r.endpoint, r.version): r.status for r in rows}


def lock_statuses() -> None:
    """Inside a write transaction: take turns with every other status change (on SQLite the
    write transaction alone does that)."""
    dialect.take_turns(_PG_LOCK_KEY)


def apply_change(
    endpoint: str, version: str, status: str, by: str, reason: str | None
) -> list[VersionStatus]:
    """Inside a write transaction holding `lock_statuses()`: move a version to a status by the
    rules of `Lifecycle.change` and return the history rows written."""
    check_status(status)
    current = _latest()
    if (endpoint, version) not in current:
        raise NotFound(f"Endpoint {endpoint!r} has no version {version!r}.")
    before = current[(endpoint, version)]
    if before == status:
        return []
    if before == PRODUCTION:
        raise Conflict(
            f"Version {version!r} is {endpoint!r}'s production version; promote "
            "another version to production instead of demoting this one.",
            [detail("status", "would leave the endpoint without production")],
        )
    written = []
    if status == PRODUCTION:
        for (e, v), s in current.items():
            if e == endpoint and s == PRODUCTION:
                written.append(_record(e, v, ARCHIVED, s, by, f"replaced by version {version}"))
    written.append(_record(endpoint, version, status, before, by, reason))
    return written


class Lifecycle:
    """Reads and changes version statuses; reads are cached for `refresh_seconds`, and a
    change made by this process is read back by its next read."""

    def __init__(self, refresh_seconds: float):
        self._statuses: Refreshing[dict[Key, str]] = Refreshing(_latest, refresh_seconds, {})

    def seed(self, declared: Iterable[tuple[str, str, str]]) -> None:
        """Give versions without history their declared first status (endpoint, version, status).

        The database wins over the folder: a version declaring production becomes testing when
        its endpoint already has a production version.
        """
        _seed(list(declared))
        self._statuses.forget()

    def forget(self) -> None:
        """Drop the cached statuses: the next read goes to the database."""
        self._statuses.forget()

    def statuses(self) -> dict[Key, str]:
        """Every version's status, at most `refresh_seconds` old (and never older than a
        change this process made)."""
        return self._statuses.get()

    def change(
        self, endpoint: str, version: str, status: str, by: str, reason: str | None = None
    ) -> list[VersionStatus]:
        """Move a version to a status and return the history rows written.

        Promoting to production archives the endpoint's previous production version, so there
        is always exactly one; taking the production version out of production any other way
        is refused (promote its replacement instead).
        """
        check_status(status)
        rows = _change(endpoint, version, status, by, reason)
        self._statuses.forget()
        return rows

    def history(self, endpoint: str) -> list[dict[str, Any]]:
        """Every status change of an endpoint's versions, oldest first."""
        return _history(endpoint)


@unit_of_work(write=True)
def _seed(declared: list[tuple[str, str, str]]) -> None:
    record_declared(declared)


def record_declared(
    declared: Iterable[tuple[str, str, str]],
    by: str = "system: first load",
    reason: str = "status declared by model.json",
) -> dict[Key, str]:
    """Inside a write transaction: give versions without history their declared first status
    (the rules of `Lifecycle.seed`); return every version's status afterwards."""
    lock_statuses()
    current = _latest()
    producing = {e for (e, _v), s in current.items() if s == PRODUCTION}
    for endpoint, version, status in declared:
        if (endpoint, version) in current:
            continue
        if status == PRODUCTION and endpoint in producing:
            status = TESTING
        if status == PRODUCTION:
            producing.add(endpoint)
        VersionStatus.create(
            endpoint=endpoint,
            version=version,
            status=status,
            changed_by=by,
            reason=reason,
        )
        current[(endpoint, version)] = status
    return current


@unit_of_work()
def latest_statuses() -> dict[Key, str]:
    """Every version's status, read from the database now (no cache)."""
    return _latest()


@unit_of_work(write=True)
def _change(
    endpoint: str, version: str, status: str, by: str, reason: str | None
) -> list[VersionStatus]:
    lock_statuses()
    return apply_change(endpoint, version, status, by, reason)


@unit_of_work()
def _history(endpoint: str) -> list[dict[str, Any]]:
    query = (
        VersionStatus.select().where(VersionStatus.endpoint == endpoint).order_by(VersionStatus.id)
    )
    return [history_json(row) for row in query]


def _record(
    endpoint: str, version: str, status: str, previous: str, by: str, reason: str | None
) -> VersionStatus:
    return VersionStatus.create(
        endpoint=endpoint,
        version=version,
        status=status,
        previous=previous,
        changed_by=by,
        reason=reason,
    )


def history_json(row: VersionStatus) -> dict[str, Any]:
    """A history row as the API returns it."""
    return {
        "endpoint": row.endpoint,
        "version": row.version,
        "from": row.previous,
        "to": row.status,
        "by": row.changed_by,
        "reason": row.reason,
        "at": iso(row.changed_at),
    }
