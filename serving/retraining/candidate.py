"""How a candidate becomes a version every worker serves, and which version it gets.

`publish_candidate` is the one seam to the packaging and publishing code: a candidate is
packaged (`serving.model.packaging.package`, skops) into a temporary folder, then published
(`serving.model.publishing.publish`): its files stored in the database, where every worker of
every replica loads it within STATUS_REFRESH_SECONDS, or at once when a request needs it.
Nothing is written under MODELS_DIR but the endpoint's lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from serving.config import Settings
from serving.decisions.lifecycle import TESTING
from serving.errors import Conflict, ServiceError, detail
from serving.model import folders, published, publishing, skops_format
from serving.model.packaging import RESERVED_KEYS, PackagingError, package
from serving.model.registry import Registry
from serving.model.runtime import LoadedModel
from serving.store.database import unit_of_work
from serving.store.tables import VersionStatus

LOCK_FILE = ".retrain.lock"


def publish_candidate(
    pipeline: Any,
    X_fit: pd.DataFrame,
    y_fit: Sequence[Any],
    X_holdout: pd.DataFrame,
    y_holdout: Sequence[Any],
    *,
    endpoint: str,
    version: str,
    metadata: dict[str, Any],
    by: str,
    reason: str,
    settings: Settings,
    registry: Registry,
) -> LoadedModel:
    """Package a fitted candidate with `serving.model.packaging.package` in skops (the profile of
    `X_fit`, holdout metrics, every file's sha256, loaded back and checked) in a temporary
    folder, publish it as `endpoint`/`version` with its first history row (`testing`, by
    `by`, with `reason`), and return it as `registry` now serves it. `metadata` is the job's
    model.json content: how the parent is served (positive class, out-of-range rule, target)
    goes to package's arguments, the rest (lineage, gate, training) is written as it is.

    Conflict (409) when skops cannot save the pipeline (a type from outside the packages a
    model.json may trust): a retrained version is published, always as skops, never as a
    pickle (which a server accepts only with ALLOW_PICKLE_UPLOADS)."""
    extra = {k: v for k, v in metadata.items() if k not in _PACKAGED}
    with tempfile.TemporaryDirectory(prefix="retrain-") as staging:
        try:
            folder = package(
                pipeline,
                X_fit,
                pd.Series(list(y_fit), index=X_fit.index),
                X_holdout,
                pd.Series(list(y_holdout), index=X_holdout.index),
                endpoint=endpoint,
                version=version,
                models_dir=Path(staging),
                initial_status=metadata.get("initial_status", TESTING),
                positive_class=metadata.get("positive_class"),
                out_of_range=metadata.get("out_of_range", "warn"),
                target=metadata.get("target"),
                format="skops",
                extra=extra,
            )
        except PackagingError as exc:
            refused = exc.__cause__
            if isinstance(refused, skops_format.SkopsRefused):
                raise Conflict(
                    f"The candidate of {endpoint!r} was not registered: a retrained version is "
                    f"published as pipeline.skops, and skops cannot save a pipeline holding "
                    f"{', '.join(refused.types) or 'these types'} (only types from "
                    f"{', '.join(skops_format.TRUSTABLE_PACKAGES)} can be trusted); move that "
                    "code into the custom_transformers package and train the production "
                    "version again.",
                    [detail("pipeline", "holds types skops can never trust")],
                ) from exc
            raise ServiceError(f"The candidate could not be written: {exc}") from exc
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    publishing.publish(endpoint, version, files, by, settings, registry, reason=reason)
    model = registry.find(endpoint, version)
    if model is None:  # publish adds it; only a concurrent addition of the same name could not
        raise ServiceError(f"{endpoint} version {version} was published but is not served here.")
    registry.declared[(endpoint, version)] = TESTING
    return model


# The job's model.json keys package() computes or takes as arguments.
_PACKAGED = (*RESERVED_KEYS, "target", "metrics")


@contextlib.contextmanager
def endpoint_lock(endpoint_dir: Path) -> Iterator[None]:
    """One retrain of an endpoint at a time on this models folder, whichever process runs
    it (the CLI, any worker): a second one is refused at once, never queued."""
    endpoint_dir.mkdir(parents=True, exist_ok=True)
    with open(endpoint_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(
                f"A retrain of {endpoint_dir.name!r} is already running; try again when it "
                "has finished.",
                [detail("endpoint", "a retrain is running")],
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def registered_with(endpoint_dir: Path, endpoint: str, inputs_sha256: str) -> str | None:
    """The version whose lineage records these inputs, if one does: a published version
    (read from its model.json in the store) or a version folder (a candidate registered
    before retraining published, or one an operator copied in)."""
    try:
        stored = published.metadata(endpoint)
    except published.StoreCorrupted as exc:
        raise ServiceError(f"Could not look for an earlier candidate: {exc}.") from exc
    found = [
        *sorted(stored.items()),
        *((p.name, folders.read_metadata(p)) for p in folders.visible_dirs(endpoint_dir)),
    ]
    for version, metadata in found:
        lineage = metadata.get("lineage")
        if isinstance(lineage, dict) and lineage.get("inputs_sha256") == inputs_sha256:
            return version
    return None


def next_version(endpoint_dir: Path, endpoint: str, served: list[str]) -> str:
    """The next free numeric version: above every numeric folder name, every published
    version, every version served, and every version the status history has seen (a deleted
    folder's number is never given again, so no new version inherits an old one's history)."""
    taken = [p.name for p in endpoint_dir.iterdir() if p.is_dir()] if endpoint_dir.is_dir() else []
    stored = published.keys()
    taken += [v for e, v in stored if e == endpoint]
    taken += served + _versions_in_history(endpoint)
    numbers = [int(v) for v in taken if v.isdigit()]
    return str(max(numbers, default=0) + 1)


@unit_of_work()
def _versions_in_history(endpoint: str) -> list[str]:
    query = VersionStatus.select(VersionStatus.version).where(VersionStatus.endpoint == endpoint)
    return [row.version for row in query.distinct()]
