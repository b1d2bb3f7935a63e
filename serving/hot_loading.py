"""Published versions into the registry: all of them at start, beside the folders, and while
serving, each new one within STATUS_REFRESH_SECONDS in every worker of every replica.

While serving, requests (any but the health probes) nudge a `HotLoader`; at most once per
STATUS_REFRESH_SECONDS it starts one short background check: one small query for the
published (endpoint, version) pairs, and when one is new, its files are read, checked
(each file's sha256 as stored, then model.json's pins, before anything is unpickled),
loaded and added to the registry (copy on write: serving.registry). No request waits for the
check or a load, and a database outage costs the requests nothing more than it already does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection

from flask import Flask, request

from serving import published, publishing
from serving.config import Settings
from serving.errors import Unavailable
from serving.registry import Registry
from serving.runtime import LoadedModel, ModelLoadError

logger = logging.getLogger(__name__)

Key = tuple[str, str]


def load_at_start(
    registry: Registry, settings: Settings, endpoints: Collection[str] | None = None
) -> None:
    """Load every published version (of `endpoints`, when given) into a registry that holds
    the folders. A published version that is also a folder stops start-up with a sentence,
    whatever SKIP_BROKEN_MODELS says: which one to serve is the operator's call. One that
    cannot load stops start-up too, or is skipped and reported with SKIP_BROKEN_MODELS. A
    database that does not answer leaves them to the workers' checks."""
    try:
        found = published.keys()
    except Unavailable as exc:
        logger.warning(
            "published versions not loaded at start: the database does not answer; each "
            "worker loads them once it does",
            extra={"error": str(exc.__cause__ or exc)},
        )
        return
    for endpoint, version in sorted(found):
        if endpoints is not None and endpoint not in endpoints:
            continue
        if registry.has(endpoint, version):
            raise ModelLoadError(
                f"{publishing.where(endpoint, version)} is also a model folder; remove the "
                "folder, or serve from another database: one version cannot be both"
            )
        try:
            model = _load(endpoint, version, settings)
        except ModelLoadError as exc:
            if not settings.skip_broken_models:
                raise
            registry.add_broken(_broken(endpoint, version, str(exc)))
            logger.error("skipping broken published version", extra=_broken(endpoint, version))
            continue
        registry.add(model)
        registry.declared[(endpoint, version)] = model.metadata.get("initial_status", "testing")


def _load(endpoint: str, version: str, settings: Settings) -> LoadedModel:
    try:
        stored = published.read(endpoint, version)
    except published.StoreCorrupted as exc:
        raise ModelLoadError(str(exc)) from exc
    if stored is None:  # never: versions are not deleted
        raise ModelLoadError(f"{publishing.where(endpoint, version)} is no longer in the store")
    return publishing.load(endpoint, version, stored.files, settings)


def _broken(endpoint: str, version: str, error: str = "") -> dict[str, str]:
    entry = {"endpoint": endpoint, "version": version, "folder": "(published)"}
    return {**entry, "error": error} if error else entry


class HotLoader:
    """One worker's watch on the store: `nudge` (cheap; called per request) starts a check in
    a background thread when the last one is older than `refresh_seconds` and none runs."""

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        loaded: Callable[[], None] = lambda: None,
    ):
        self._registry = registry
        self._settings = settings
        self._seconds = settings.status_refresh_seconds
        # Called after versions were added (the statuses cache is dropped, so their first
        # status is read at once).
        self._loaded = loaded
        self._running = threading.Lock()
        self._checked_at = float("-inf")
        # Versions that failed to load here: reported once in `broken`, not retried.
        self._failed: set[Key] = set()
        self._failing = False

    def nudge(self) -> None:
        """Start a check unless one runs or the last began under `refresh_seconds` ago."""
        if time.monotonic() - self._checked_at < self._seconds:
            return
        if not self._running.acquire(blocking=False):
            return
        self._checked_at = time.monotonic()
        try:
            threading.Thread(target=self._check, name="hot-loader", daemon=True).start()
        except BaseException:
            self._running.release()
            raise

    def check(self) -> list[Key]:
        """Load the versions published since the last check, here and now (the thread's
        work; tests call it directly). Returns those added."""
        with self._running:
            return self._check_now()

    def _check(self) -> None:
        try:
            self._check_now()
        finally:
            self._running.release()

    def _check_now(self) -> list[Key]:
        added: list[Key] = []
        try:
            found = published.keys()
            for key in sorted(found - self._registry.published - self._failed):
                if self._add(*key):
                    added.append(key)
            self._failing = False
        except Exception as exc:  # a check must never take a worker down; the next retries
            if not self._failing:
                logger.warning(
                    "could not check for published versions; retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )
            self._failing = True
        if added:
            self._loaded()
        return added

    def _add(self, endpoint: str, version: str) -> bool:
        if self._registry.has(endpoint, version):
            error = (
                f"{publishing.where(endpoint, version)} is also a model folder of this replica; "
                "the folder is served"
            )
            self._fail(endpoint, version, error)
            return False
        try:
            model = _load(endpoint, version, self._settings)
        except ModelLoadError as exc:
            self._fail(endpoint, version, str(exc))
            return False
        added = self._registry.add(model)
        if added:
            publishing.serving_now(model)
        return added

    def _fail(self, endpoint: str, version: str, error: str) -> None:
        self._failed.add((endpoint, version))
        self._registry.add_broken(_broken(endpoint, version, error))
        logger.error(
            "published version not served", extra={**_broken(endpoint, version), "error": error}
        )


def init_app(app: Flask) -> None:
    """Nudge the app's HotLoader (made by `serving.load_models`) before every request but the
    health probes: liveness and readiness never wait for, nor start, anything else."""

    @app.before_request
    def _nudge_hot_loader() -> None:
        loader = app.extensions.get("hot_loader")
        if loader is not None and request.blueprint != "health":
            loader.nudge()
