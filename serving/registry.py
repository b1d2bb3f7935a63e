"""Which models this process serves, by endpoint and version, and which one answers a request."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving import folders
from serving.config import Settings
from serving.digests import DigestError, Manifest, manifest_key
from serving.errors import Conflict, NotFound, detail
from serving.folders import version_order
from serving.lifecycle import ARCHIVED, PRODUCTION, TESTING, check_status
from serving.runtime import (
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
    """Loaded models keyed by endpoint then version; loaded once at start, read-only after."""

    default_endpoint: str
    models: dict[str, dict[str, LoadedModel]] = field(default_factory=dict)
    # Versions that failed to load while SKIP_BROKEN_MODELS was set: reported, not served.
    broken: list[dict[str, str]] = field(default_factory=list)
    declared: dict[tuple[str, str], str] = field(default_factory=dict)
    # The operator's pins (MODEL_DIGESTS), when set: every folder must match its entry.
    manifest: Manifest | None = None

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
        declared = model.metadata.get("version")
        if version is not None and declared is not None and str(declared) != version:
            raise ModelLoadError(
                f"model folder {folder}: model.json says version {declared!r} but the folder "
                f"is named {version!r}"
            )
        status = model.metadata.get("initial_status")
        if status is not None and status not in (TESTING, "staging", PRODUCTION, ARCHIVED):
            raise ModelLoadError(f"model folder {folder}: unknown initial_status {status!r}")
        if model.metadata.get("out_of_range", "warn") not in ("warn", "reject"):
            raise ModelLoadError(f"model folder {folder}: out_of_range must be 'warn' or 'reject'")
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

    def endpoint(self, endpoint: str) -> dict[str, LoadedModel]:
        """The versions of an endpoint; NotFound when there is no such endpoint."""
        versions = self.models.get(endpoint)
        if not versions:
            raise NotFound(
                f"There is no endpoint named {endpoint!r}.",
                [detail("endpoint", f"unknown; known: {sorted(self.models)}")],
            )
        return versions

    def version(self, endpoint: str, version: str) -> LoadedModel:
        """One version of an endpoint, whatever its status; NotFound naming the known ones."""
        versions = self.endpoint(endpoint)
        model = versions.get(version)
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
