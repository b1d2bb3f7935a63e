"""Model folders on disk, found by name: which endpoints and versions there are and what each
declares in its model.json, without unpickling anything.

Start-up (serving.model.registry) walks the folders this module lists; commands that change one
database row (`flask set-status`) read only these names and model.json files, so they never
pay for loading a model. Folders whose names start with a dot are skipped everywhere: a
version being written (serving.model.packaging stages it in a dot-folder before renaming it into
place), `.ipynb_checkpoints`, an editor's leftovers.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

# Statuses as serving.decisions.lifecycle names them (not imported: this module stays free of the
# database layer so that the packaging code can use it anywhere).
_PRODUCTION, _TESTING = "production", "testing"
METADATA_FILE = "model.json"
PIPELINE_FILES = ("pipeline.pickle", "pipeline.skops")
# What model.json may say: the pipeline's file format, and what an input outside the
# training range gets (a warning or a 422).
FORMATS = ("pickle", "skops")
OUT_OF_RANGE = ("warn", "reject")


def visible_dirs(folder: Path) -> list[Path]:
    """The sub-folders of `folder` that may hold models, sorted by name; none if it is absent."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def version_folders(
    models_dir: Path, endpoints: Collection[str] | None = None
) -> list[tuple[str, str, Path]]:
    """(endpoint, version, folder) for every models/<endpoint>/<version>/, or only those of
    `endpoints` when given."""
    return [
        (endpoint_dir.name, version_dir.name, version_dir)
        for endpoint_dir in visible_dirs(models_dir)
        if endpoints is None or endpoint_dir.name in endpoints
        for version_dir in visible_dirs(endpoint_dir)
    ]


def read_metadata(folder: Path) -> dict[str, Any]:
    """A folder's model.json as a dict; an absent or unreadable one reads as empty (start-up,
    not this reader, is where a broken model.json is reported)."""
    try:
        metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def root_version(metadata: dict[str, Any]) -> str:
    """The root folder's version: model.json's, else "1"."""
    return str(metadata.get("version") or "1")


def first_status(metadata: dict[str, Any], root: bool) -> str:
    """The status a version starts with when the database has no history for it: model.json's
    `initial_status`, else production for the root model and testing for a versioned one."""
    return str(metadata.get("initial_status") or (_PRODUCTION if root else _TESTING))


def declared_statuses(
    root_model_dir: Path,
    models_dir: Path,
    default_endpoint: str,
    endpoints: Collection[str] | None = None,
) -> dict[tuple[str, str], str]:
    """Every version on disk (of `endpoints`, when given) with the status it declares, read from
    folder names and model.json alone. The root folder counts only when it holds a model."""
    declared: dict[tuple[str, str], str] = {}
    wanted = endpoints is None or default_endpoint in endpoints
    if wanted and any((root_model_dir / name).is_file() for name in PIPELINE_FILES):
        metadata = read_metadata(root_model_dir)
        declared[(default_endpoint, root_version(metadata))] = first_status(metadata, True)
    for endpoint, version, folder in version_folders(models_dir, endpoints):
        declared[(endpoint, version)] = first_status(read_metadata(folder), False)
    return declared


def next_version(endpoint_dir: Path) -> str:
    """One more than the largest numeric version folder of an endpoint ("1" for a new one);
    non-numeric versions do not count."""
    numbers = [int(p.name) for p in visible_dirs(endpoint_dir) if p.name.isdigit()]
    return str(max(numbers, default=0) + 1)


def version_order(version: str) -> tuple[int, int | str]:
    """Sort key: "10" after "9"; non-numeric versions after numeric ones, by text."""
    return (0, int(version)) if version.isdigit() else (1, version)
