"""Where a candidate's folder goes and how it is written.

`write_candidate` is the one seam to the packaging code: a candidate is a packaged version
(`serving.packaging.package`), written as any model folder is.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from serving.database import unit_of_work
from serving.errors import Conflict, ServiceError, detail
from serving.lifecycle import TESTING
from serving.packaging import RESERVED_KEYS, PackagingError, package
from serving.runtime import METADATA_FILE
from serving.tables import VersionStatus

LOCK_FILE = ".retrain.lock"


def write_candidate(
    pipeline: Any,
    X_fit: pd.DataFrame,
    y_fit: Sequence[Any],
    X_holdout: pd.DataFrame,
    y_holdout: Sequence[Any],
    *,
    endpoint: str,
    version: str,
    models_dir: Path,
    metadata: dict[str, Any],
) -> Path:
    """Write a fitted candidate as the complete version folder
    `models_dir/<endpoint>/<version>/` with `serving.packaging.package` (the profile of
    `X_fit`, holdout metrics, every file's sha256, loaded back and checked before it appears)
    and return its path. `metadata` is the job's model.json content: how the parent is
    served (positive class, out-of-range rule, target) goes to package's arguments, the rest
    (lineage, gate, training) is written as it is."""
    extra = {k: v for k, v in metadata.items() if k not in _PACKAGED}
    try:
        return package(
            pipeline,
            X_fit,
            pd.Series(list(y_fit), index=X_fit.index),
            X_holdout,
            pd.Series(list(y_holdout), index=X_holdout.index),
            endpoint=endpoint,
            version=version,
            models_dir=models_dir,
            initial_status=metadata.get("initial_status", TESTING),
            positive_class=metadata.get("positive_class"),
            out_of_range=metadata.get("out_of_range", "warn"),
            target=metadata.get("target"),
            extra=extra,
        )
    except PackagingError as exc:
        raise ServiceError(f"The candidate could not be written: {exc}") from exc


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


def registered_with(endpoint_dir: Path, inputs_sha256: str) -> str | None:
    """The version folder whose lineage records these inputs, if one does."""
    for folder in sorted(p for p in endpoint_dir.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
        try:
            metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        lineage = metadata.get("lineage") if isinstance(metadata, dict) else None
        if isinstance(lineage, dict) and lineage.get("inputs_sha256") == inputs_sha256:
            return folder.name
    return None


def next_version(endpoint_dir: Path, endpoint: str, served: list[str]) -> str:
    """The next free numeric version: above every numeric folder name, every version served,
    and every version the status history has seen (a deleted folder's number is never given
    again, so no new version inherits an old one's history)."""
    taken = [p.name for p in endpoint_dir.iterdir() if p.is_dir()] if endpoint_dir.is_dir() else []
    taken += served + _versions_in_history(endpoint)
    numbers = [int(v) for v in taken if v.isdigit()]
    return str(max(numbers, default=0) + 1)


@unit_of_work()
def _versions_in_history(endpoint: str) -> list[str]:
    query = VersionStatus.select(VersionStatus.version).where(VersionStatus.endpoint == endpoint)
    return [row.version for row in query.distinct()]
