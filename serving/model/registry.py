"""Which models this process serves, by endpoint and version, and which one answers a request."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.config import Settings
from serving.decisions.lifecycle import ARCHIVED, PRODUCTION, TESTING, check_status
from serving.errors import Conflict, NotFound, detail
from serving.model import folders
from serving.model.digests import DigestError, Manifest, manifest_key
from serving.model.folders import version_order
from serving.model.runtime import (
    COLUMNS_FILE,
    DTYPES_FILE,
    PIPELINE_FILE,
    SKOPS_FILE,
    LoadedModel,
    ModelLoadError,
)

logger = logging.getLogger(__name__)

# Endpoint and version names appear in URLs and folder names: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass
class Registry:
    """Loaded models keyed by endpoint then version: the folders, loaded at start, and the
    versions published to the database (serving.model.published), loaded at start and added while
    serving (`add`).

    Readers take no lock. `models` (and `broken`) are never changed in place once the
    registry serves: `add` builds a new mapping beside the old one and swaps the attribute in
    one assignment (copy on write), so whoever read `models`, or one endpoint's versions,
    holds one consistent state, old or new, never half of an addition. Versions are only ever
    added, so a reader that reads `models` twice sees the second state contain the first.
    """

    default_endpoint: str
    models: dict[str, dict[str, LoadedModel]] = field(default_factory=dict)
    # Versions that failed to load while SKIP_BROKEN_MODELS was set: reported, not served.
    broken: list[dict[str, str]] = field(default_factory=list)
    declared: dict[tuple[str, str], str] = field(default_factory=dict)
    # The operator's pins (MODEL_DIGESTS), when set: every folder must match its entry.
    manifest: Manifest | None = None
    # The versions that came from the database rather than a folder.
    published: frozenset[tuple[str, str]] = frozenset()
    # Moved on by every change: what is derived from the models (the OpenAPI document, the
    # metrics' zero series) is derived again when it moves.
    generation: int = 0
    # Loads a published version this process does not serve yet, when a request needs it
    # before the periodic check got to it: (endpoint, version or None for all of the
    # endpoint's, whether to ask the database rather than the cached list) -> whether any
    # was added. Set by serving.load_models (serving.model.hot_loading.HotLoader.ensure).
    loader: Callable[[str, str | None, bool], bool] | None = None
    _writing: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load(cls, settings: Settings, endpoints: Collection[str] | None = None) -> Registry:
        """Load the root model as the default endpoint, then every models/<endpoint>/<version>/
        (only the endpoints in `endpoints`, when given: a command that needs no others).

        Only folders the operator put there are read; nothing a request names is ever loaded.
        A MODEL_DIGESTS manifest that cannot be read stops start-up whatever
        SKIP_BROKEN_MODELS says: it guards every folder, not one.
        """
        registry = cls._pinned_by(settings)

        def wanted(endpoint: str) -> bool:
            return endpoints is None or endpoint in endpoints

        if wanted(settings.default_endpoint):
            registry._load_one(settings, settings.root_model_dir, settings.default_endpoint, None)
        for endpoint, version, folder in folders.version_folders(settings.models_dir, endpoints):
            registry._load_one(settings, folder, endpoint, version)
        if registry.manifest is not None and endpoints is None:
            registry.manifest.warn_unused()
        return registry

    def _load_one(
        self, settings: Settings, folder: Path, endpoint: str, version: str | None
    ) -> None:
        try:
            model = self._checked(settings, folder, endpoint, version)
        except ModelLoadError as exc:
            if not settings.skip_broken_models:
                raise
            logger.error(
                "skipping broken model folder", extra={"folder": str(folder), "error": str(exc)}
            )
            self.broken.append(
                {
                    "endpoint": endpoint,
                    "version": version or "?",
                    "folder": str(folder),
                    "error": str(exc),
                }
            )
            return
        self.models.setdefault(endpoint, {})[model.version] = model
        status = folders.first_status(model.metadata, root=version is None)
        self.declared[(endpoint, model.version)] = status

    def _checked(
        self, settings: Settings, folder: Path, endpoint: str, version: str | None
    ) -> LoadedModel:
        """Load one folder with every check start-up makes (names, digests and the manifest,
        files, the declared version, status and out_of_range)."""
        if not valid_name(endpoint):
            raise ModelLoadError(
                f"model folder {folder}: {endpoint!r} is not a valid endpoint name"
            )
        if version is not None and not valid_name(version):
            raise ModelLoadError(f"model folder {folder}: {version!r} is not a valid version name")
        model = LoadedModel.load(
            folder,
            endpoint,
            version,
            compile=settings.compile_models,
            check_digests=self._pinned_outside(folder, endpoint),
        )
        check_metadata(model, f"model folder {folder}", version, "the folder is named")
        return model

    @classmethod
    def check_folder(
        cls, settings: Settings, folder: Path, endpoint: str, version: str | None
    ) -> LoadedModel:
        """Load one folder exactly as start-up would (MODEL_DIGESTS included, when set) and
        return it; ModelLoadError with a sentence when start-up would refuse it."""
        return cls._pinned_by(settings)._checked(settings, folder, endpoint, version)

    @classmethod
    def _pinned_by(cls, settings: Settings) -> Registry:
        """An empty registry holding the operator's manifest, when MODEL_DIGESTS names one."""
        registry = cls(settings.default_endpoint)
        if settings.model_digests:
            try:
                registry.manifest = Manifest.read(settings.model_digests)
            except DigestError as exc:
                raise ModelLoadError(str(exc)) from exc
        return registry

    def add(self, model: LoadedModel, published: bool = True) -> bool:
        """Serve one more version from now on (copy on write: readers see the registry before
        or after, never between); False when the endpoint already has that version."""
        key = (model.endpoint, model.version)
        with self._writing:
            versions = self.models.get(model.endpoint, {})
            if model.version in versions:
                return False
            models = dict(self.models)
            models[model.endpoint] = {**versions, model.version: model}
            self.models = models
            if published:
                self.published = self.published | {key}
            self.generation += 1
        return True

    def add_broken(self, entry: dict[str, str]) -> None:
        """Report one more version that cannot be served (copy on write, as `add`)."""
        with self._writing:
            self.broken = [*self.broken, entry]
            self.generation += 1

    def has(self, endpoint: str, version: str) -> bool:
        """Whether this process serves the version, or a folder of it failed to load."""
        if version in self.models.get(endpoint, {}):
            return True
        return any(b["endpoint"] == endpoint and b["version"] == version for b in self.broken)

    def _pinned_outside(
        self, folder: Path, endpoint: str
    ) -> Callable[[str, Mapping[str, str]], None] | None:
        """The check of a folder's digests against the manifest, or None without one."""
        manifest = self.manifest
        if manifest is None:
            return None

        def check(version: str, digests: Mapping[str, str]) -> None:
            # The pipeline's file name depends on the format the folder holds.
            pipeline = SKOPS_FILE if SKOPS_FILE in digests else PIPELINE_FILE
            required = (pipeline, DTYPES_FILE, COLUMNS_FILE)
            manifest.check(folder, manifest_key(endpoint, version), digests, required)

        return check

    def _load_missing(self, endpoint: str, version: str | None, ask: bool = False) -> bool:
        return self.loader is not None and self.loader(endpoint, version, ask)

    def endpoint(self, endpoint: str) -> dict[str, LoadedModel]:
        """The versions of an endpoint; NotFound when there is no such endpoint."""
        versions = self.models.get(endpoint)
        if not versions and self._load_missing(endpoint, None):
            versions = self.models.get(endpoint)
        if not versions:
            raise NotFound(
                f"There is no endpoint named {endpoint!r}.",
                [detail("endpoint", f"unknown; known: {sorted(self.models)}")],
            )
        return versions

    def version(self, endpoint: str, version: str) -> LoadedModel:
        """One version of an endpoint, whatever its status; NotFound naming the known ones."""
        model = self.models.get(endpoint, {}).get(version)
        # Published moments ago (its status changed, or asked for by name, before this
        # worker's periodic check loaded it): loaded now, if the store has it.
        if model is None and self._load_missing(endpoint, version, ask=True):
            model = self.models.get(endpoint, {}).get(version)
        versions = self.endpoint(endpoint)
        if model is None:
            raise NotFound(
                f"Endpoint {endpoint!r} has no version {version!r}.",
                [detail("version", f"unknown; known: {sorted(versions, key=version_order)}")],
            )
        return model

    def resolve(
        self,
        endpoint: str,
        statuses: Mapping[tuple[str, str], str],
        version: str | None = None,
        status: str | None = None,
    ) -> LoadedModel:
        """The version that answers: the one named, else the one in `status` (production)."""
        versions = self.endpoint(endpoint)
        # An empty ?version= or ?status= is the same as an absent one.
        if version:
            model = self.version(endpoint, version)
            if statuses.get((endpoint, version)) == ARCHIVED:
                raise Conflict(
                    f"Version {version!r} of {endpoint!r} is archived; change its status to "
                    "serve it again.",
                    [detail("version", "archived")],
                )
            return model
        wanted = check_status(status or PRODUCTION)
        matching = sorted(
            (v for v in versions if statuses.get((endpoint, v)) == wanted), key=version_order
        )
        # A version promoted moments after it was published, before this worker's periodic
        # check loaded it: load it now rather than answer that nothing is in that status.
        pending = (
            []
            if matching
            else [v for (e, v), s in statuses.items() if e == endpoint and s == wanted]
        )
        if any([self._load_missing(endpoint, v, ask=True) for v in pending]):
            return self.resolve(endpoint, statuses, version, status)
        if not matching:
            raise NotFound(
                f"No version of {endpoint!r} is in {wanted}.",
                [detail("status", f"no version in {wanted}")],
            )
        if len(matching) > 1:
            raise Conflict(
                f"Versions {', '.join(matching)} of {endpoint!r} are all in {wanted}; choose "
                "one with ?version=.",
                [detail("version", f"ambiguous: {matching} are in {wanted}")],
            )
        return versions[matching[0]]

    def find(self, endpoint: str, version: str) -> LoadedModel | None:
        """A loaded version, or None when this process does not serve it."""
        return self.models.get(endpoint, {}).get(version)

    def describe(self, statuses: Mapping[tuple[str, str], str]) -> list[dict[str, Any]]:
        """Every endpoint with its versions and their statuses."""
        return [
            {
                "endpoint": endpoint,
                "default": endpoint == self.default_endpoint,
                "versions": [
                    {"version": v, "status": statuses.get((endpoint, v)), "task": versions[v].task}
                    for v in sorted(versions, key=version_order)
                ],
            }
            for endpoint, versions in sorted(self.models.items())
        ]

    def __len__(self) -> int:
        return sum(len(v) for v in self.models.values())


def valid_name(name: str) -> bool:
    """Whether an endpoint or version name is one the registry serves."""
    return bool(_NAME.match(name))


def check_metadata(model: LoadedModel, where: str, version: str | None, named: str) -> None:
    """Refuse what model.json may not say: another version than the one `named` (the folder's
    name, the URL's version), an unknown initial_status or out_of_range."""
    declared = model.metadata.get("version")
    if version is not None and declared is not None and str(declared) != version:
        raise ModelLoadError(
            f"{where}: model.json says version {declared!r} but {named} {version!r}"
        )
    status = model.metadata.get("initial_status")
    if status is not None and status not in (TESTING, "staging", PRODUCTION, ARCHIVED):
        raise ModelLoadError(f"{where}: unknown initial_status {status!r}")
    if model.metadata.get("out_of_range", "warn") not in ("warn", "reject"):
        raise ModelLoadError(f"{where}: out_of_range must be 'warn' or 'reject'")
