"""Published versions into the registry: all of them at start, beside the folders, and while
serving, each new one within STATUS_REFRESH_SECONDS in every worker of every replica.

While serving, a background thread in each worker (started after the fork: gunicorn.conf.py's
post_worker_init, or app.py) checks every STATUS_REFRESH_SECONDS: one small query for the
published (endpoint, version) pairs, and when one is new, its files are read, checked (each
file's sha256 as stored, then model.json's pins, before anything is unpickled), loaded and
added to the registry (copy on write: serving.model.registry). No request waits for the check, and
a database outage costs the requests nothing more than it already does.

A request that needs a published version this worker has not loaded yet (named by
`?version=`, its endpoint new, or promoted moments after publishing) loads it itself
(`HotLoader.ensure`) rather than answer 404. Apps built without a server (the Flask test
client, `flask` commands) run no thread: they load at start and on demand only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection

from flask import Flask

from serving.config import Settings
from serving.errors import Unavailable
from serving.model import published, publishing
from serving.model.registry import Registry
from serving.model.runtime import LoadedModel, ModelLoadError

logger = logging.getLogger(__name__)

# The watch's shortest interval: STATUS_REFRESH_SECONDS=0 re-reads statuses on every request,
# but a background loop needs a pause.
MIN_CHECK_SECONDS = 0.5
# Names found not published, remembered for STATUS_REFRESH_SECONDS each (at most this many).
MAX_ABSENT = 10_000

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
        if model is None:  # never: published versions are not deleted
            continue
        registry.add(model)
        registry.declared[(endpoint, version)] = model.metadata.get("initial_status", "testing")


def _load(endpoint: str, version: str, settings: Settings) -> LoadedModel | None:
    """A published version loaded from the store, or None when it is not published."""
    try:
        stored = published.read(endpoint, version)
    except published.StoreCorrupted as exc:
        raise ModelLoadError(str(exc)) from exc
    if stored is None:
        return None
    return publishing.load(endpoint, version, stored.files, settings)


def _broken(endpoint: str, version: str, error: str = "") -> dict[str, str]:
    entry = {"endpoint": endpoint, "version": version, "folder": "(published)"}
    return {**entry, "error": error} if error else entry


class HotLoader:
    """One process's watch on the store: `check` (every STATUS_REFRESH_SECONDS in the thread
    `start` starts) and `ensure` (a request that needs a version now)."""

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
        self._thread_pid = 0
        # Versions that failed to load here: reported once in `broken`, not retried.
        self._failed: set[Key] = set()
        self._failing = False
        # The published versions the last check found, and when a version a request named
        # was last found not to be published.
        self._known: frozenset[Key] = registry.published
        self._absent: dict[Key, float] = {}

    def start(self) -> None:
        """Check in a background thread of this process every STATUS_REFRESH_SECONDS (at
        least MIN_CHECK_SECONDS) from now on; once per process (call it after a fork)."""
        if self._thread_pid == os.getpid():
            return
        self._thread_pid = os.getpid()
        threading.Thread(target=self._watch, name="hot-loader", daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(max(self._seconds, MIN_CHECK_SECONDS))
            self.check()

    def ensure(self, endpoint: str, version: str | None, ask: bool = False) -> bool:
        """Load now, in the calling request, the published versions of `endpoint` (or just
        `version`) this process does not serve yet; whether any was added (for `version`:
        whether it is served now). They are looked up in the list the periodic check read
        last (no query per request for a name nobody published), or with `ask` in the
        database itself, at most once per STATUS_REFRESH_SECONDS and name: the statuses
        name a version the list may not have caught up with."""
        now = time.monotonic()
        if version is not None:
            key = (endpoint, version)
            if key in self._failed or now - self._absent.get(key, -1e9) < self._seconds:
                return False
            wanted = [key] if key in self._known or ask else []
        else:
            wanted = [k for k in self._known if k[0] == endpoint]
        wanted = [k for k in wanted if self._registry.find(*k) is None and k not in self._failed]
        if not wanted:
            return False
        added = False
        with self._running:
            for key in sorted(wanted):
                if self._registry.find(*key) is not None:
                    added = True
                    continue
                try:
                    added = self._add(*key) or added
                except Exception as exc:  # the request answers as it would have without it
                    logger.warning(
                        "could not load a published version",
                        extra={"endpoint": key[0], "model_version": key[1], "error": str(exc)},
                    )
        if added:
            self._loaded()
        return added

    def check(self) -> list[Key]:
        """Load the versions published since the last check; returns those added. Never
        raises: a failed check is logged once and the next one tries again."""
        with self._running:
            return self._check_now()

    def _check_now(self) -> list[Key]:
        added: list[Key] = []
        try:
            found = self._known = published.keys()
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
        if model is None:
            if len(self._absent) > MAX_ABSENT:  # names requests made up: bounded memory
                self._absent.clear()
            self._absent[(endpoint, version)] = time.monotonic()
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


def start_watching(app: Flask) -> None:
    """In a serving process (each gunicorn worker, after the fork; `python app.py`): start
    the app's background check for newly published versions."""
    # gunicorn hands a stand-in app to a worker whose app failed to import: nothing to watch.
    loader = getattr(app, "extensions", {}).get("hot_loader")
    if loader is not None:
        loader.start()
