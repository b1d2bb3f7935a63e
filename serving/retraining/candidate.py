"""Where a candidate's folder goes and how it is written.

`write_candidate` is the one seam to the packaging code: today it writes the four files the
bundled models have (`training.artifacts.write_model`, with a `training.profile` of the rows
the candidate was fitted on), so that the packaging module's `package()` can replace it
without touching the rest of the job.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from serving.database import unit_of_work
from serving.errors import Conflict, detail
from serving.runtime import METADATA_FILE
from serving.tables import VersionStatus
from training import artifacts, profile

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
    `models_dir/<endpoint>/<version>/` and return its path. model.json is `metadata` (the
    job's: lineage, gate, the parent's serving keys) plus the profile of `X_fit` and every
    file's sha256 pin.

    The arguments mirror `serving.packaging.package(pipeline, X_train, y_train, X_holdout,
    y_holdout, *, endpoint, version, models_dir, ...)`, which is meant to replace this body;
    the labels and the holdout are for it (the gate has measured the holdout already, and
    today's writer needs neither).

    The folder appears whole or not at all: it is written in a dot folder directly under
    `models_dir` (read as an endpoint with no version folders, so it loads nothing) and
    renamed into place.
    """
    del y_fit, X_holdout, y_holdout  # for package(); see above
    folder = Path(models_dir) / endpoint / version
    staging = Path(tempfile.mkdtemp(prefix=f".retrain-{endpoint}-{version}-", dir=Path(models_dir)))
    try:
        artifacts.write_model(
            staging, pipeline, X_fit, {**metadata, "profile": profile.profile_frame(X_fit)}
        )
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


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
