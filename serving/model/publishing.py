"""Publishing a model version to a running deployment: the checks an upload passes before
anything is stored, then the store (serving.model.published). One path for the admin route
(`PUT /api/v1/<endpoint>/versions/<version>`) and `flask models push`.

An upload is refused, with a 4xx naming the problem, unless: the endpoint and version names
are plain; its files are exactly a model folder's (`pipeline.skops` or `pipeline.pickle`,
`dtypes.pickle`, `columns.json`, `model.json`); model.json pins every other file's sha256
and each pin matches the bytes; `pipeline.pickle` is allowed (ALLOW_PICKLE_UPLOADS); no
folder, published version or status history has that endpoint and version already (409:
never overwritten); and the files load as start-up loads a folder. Only then is it stored.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from serving.config import Settings
from serving.decisions import lifecycle
from serving.decisions.lifecycle import TESTING
from serving.errors import Conflict, InvalidInput, detail
from serving.model import folders, published
from serving.model.digests import METADATA_MAP, MODEL_FILES, sha256_hex
from serving.model.registry import Registry, check_metadata, valid_name
from serving.model.runtime import (
    COLUMNS_FILE,
    DTYPES_FILE,
    METADATA_FILE,
    PIPELINE_FILE,
    SKOPS_FILE,
    LoadedModel,
    ModelLoadError,
)

logger = logging.getLogger(__name__)

REQUIRED = (DTYPES_FILE, COLUMNS_FILE, METADATA_FILE)
PIPELINES = (SKOPS_FILE, PIPELINE_FILE)


def where(endpoint: str, version: str) -> str:
    """How error sentences name a published version."""
    return f"published version {endpoint}/{version}"


def check_names(endpoint: str, version: str) -> None:
    """422 naming `endpoint` or `version` when it is not a plain name."""
    for field, name in (("endpoint", endpoint), ("version", version)):
        if not valid_name(name):
            raise InvalidInput(
                f"{name!r} is not a valid {field} name.",
                [
                    detail(
                        field,
                        "1 to 100 letters, digits, '.', '_' or '-', starting with a letter "
                        "or digit",
                    )
                ],
            )


def pickle_refusal(name: str) -> str:
    """Why a published pipeline.pickle is refused on a server that does not allow them."""
    return (
        f"{name} is refused: unpickling runs whatever code the file names, so this server "
        "accepts published pickles only with ALLOW_PICKLE_UPLOADS=true; publish "
        f"{SKOPS_FILE} instead"
    )


def check_files(files: Mapping[str, bytes], settings: Settings) -> dict[str, Any]:
    """The upload's model.json, once the files are exactly a model folder's, allowed, and
    pinned by model.json with digests that match; 422 naming the file otherwise."""
    unknown = sorted(set(files) - set(MODEL_FILES))
    if unknown:
        raise InvalidInput(
            f"{unknown[0]!r} is not a model file; send only {', '.join(MODEL_FILES)}.",
            [
                detail(name, f"unknown file; expected one of {list(MODEL_FILES)}")
                for name in unknown
            ],
        )
    missing = [name for name in REQUIRED if name not in files]
    pipelines = [name for name in PIPELINES if name in files]
    if not pipelines:
        missing.insert(0, f"{SKOPS_FILE} (or {PIPELINE_FILE})")
    if missing:
        raise InvalidInput(
            f"The upload has no {missing[0]}; a version needs {', '.join(missing)} too.",
            [detail(name, "missing") for name in missing],
        )
    if len(pipelines) > 1:
        raise InvalidInput(
            f"The upload holds both {PIPELINE_FILE} and {SKOPS_FILE}; send one.",
            [detail(PIPELINE_FILE, f"send {SKOPS_FILE} or {PIPELINE_FILE}, not both")],
        )
    if PIPELINE_FILE in files and not settings.allow_pickle_uploads:
        raise InvalidInput(
            pickle_refusal(PIPELINE_FILE) + ".",
            [detail(PIPELINE_FILE, "pickles are not accepted (ALLOW_PICKLE_UPLOADS is off)")],
        )
    try:
        metadata = json.loads(files[METADATA_FILE].decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"{METADATA_FILE} is not valid JSON.", [detail(METADATA_FILE, str(exc))]
        ) from exc
    if not isinstance(metadata, dict):
        raise InvalidInput(
            f"{METADATA_FILE} must hold a JSON object.", [detail(METADATA_FILE, "not an object")]
        )
    pins = metadata.get(METADATA_MAP)
    pins = pins if isinstance(pins, dict) else {}
    # A published version travels through a network and a database: every file is pinned,
    # so none can change on the way unnoticed (a folder may leave a file unpinned).
    unpinned = sorted(name for name in files if name != METADATA_FILE and name not in pins)
    if unpinned:
        raise InvalidInput(
            f"{METADATA_FILE} does not pin {', '.join(unpinned)}: a published version needs "
            f"the sha256 of every file in {METADATA_FILE}'s {METADATA_MAP!r} map.",
            [detail(f"{METADATA_FILE}.{METADATA_MAP}.{name}", "missing") for name in unpinned],
        )
    wrong = sorted(
        name
        for name, data in files.items()
        if name != METADATA_FILE and pins.get(name) != sha256_hex(data)
    )
    if wrong:
        raise InvalidInput(
            f"{wrong[0]} does not match its sha256 in {METADATA_FILE}: the file was changed "
            "or corrupted on the way; nothing was stored.",
            [detail(name, f"sha256 differs from {METADATA_FILE}'s pin") for name in wrong],
        )
    return metadata


def folder_versions(settings: Settings, endpoint: str) -> set[str]:
    """The versions of an endpoint that model folders hold, without loading any: its folders
    under MODELS_DIR, and for the default endpoint the root model's version."""
    found: set[str] = set()
    folder = settings.models_dir / endpoint
    found.update(p.name for p in folders.visible_dirs(folder))
    if endpoint == settings.default_endpoint:
        found.add(folders.root_version(folders.read_metadata(settings.root_model_dir)))
    return found


def refuse_conflicts(
    endpoint: str, version: str, settings: Settings, registry: Registry | None
) -> None:
    """409 when the version exists anywhere already: a model folder (loaded or not), the
    store, or the status history (a version once served under that name)."""
    if (registry is not None and registry.has(endpoint, version)) or version in folder_versions(
        settings, endpoint
    ):
        if registry is not None and (endpoint, version) in registry.published:
            raise published.already_published(endpoint, version)
        raise Conflict(
            f"Version {version!r} of {endpoint!r} is a model folder of this deployment; a "
            "published version never replaces a folder: publish it under a new version.",
            [detail("version", "exists as a model folder")],
        )
    if published.exists(endpoint, version):
        raise published.already_published(endpoint, version)
    if (endpoint, version) in lifecycle.latest_statuses():
        raise Conflict(
            f"Version {version!r} of {endpoint!r} has a status history already (it was served "
            "before); publish it under a new version.",
            [detail("version", "has a status history")],
        )


def load(
    endpoint: str, version: str, files: Mapping[str, bytes], settings: Settings
) -> LoadedModel:
    """Load a published version's files as start-up loads a folder (digests first, nothing
    unpickled before they match; skops with model.json's trusted list; the fast path when
    COMPILE_MODELS). ModelLoadError with a sentence when it cannot be served; a pickle is
    refused unless ALLOW_PICKLE_UPLOADS, on every load, not only at upload."""
    place = where(endpoint, version)
    if PIPELINE_FILE in files and not settings.allow_pickle_uploads:
        raise ModelLoadError(f"{place}: {pickle_refusal(PIPELINE_FILE)}")
    model = LoadedModel.from_files(
        files,
        place,
        Path("published") / endpoint / version,
        endpoint,
        version,
        compile=settings.compile_models,
    )
    check_metadata(model, place, version, "it is published as version")
    return model


def publish(
    endpoint: str,
    version: str,
    files: Mapping[str, bytes],
    by: str,
    settings: Settings,
    registry: Registry | None = None,
    reason: str = published.PUBLISHED_REASON,
) -> dict[str, Any]:
    """Check an upload, load it, store it with its first status (`reason`: that history
    row's), and (given this process's `registry`) serve it here at once; other workers and
    replicas load it within STATUS_REFRESH_SECONDS. Returns what was stored. 422, 409 with a
    sentence otherwise."""
    check_names(endpoint, version)
    metadata = check_files(files, settings)
    refuse_conflicts(endpoint, version, settings, registry)
    try:
        model = load(endpoint, version, files, settings)
    except ModelLoadError as exc:
        raise InvalidInput(
            f"The version cannot be served, so nothing was stored: {exc}.",
            [detail("files", str(exc))],
        ) from exc
    declared = metadata.get("initial_status") or TESTING
    stored, status = published.write(endpoint, version, files, by, declared, reason)
    if registry is not None and registry.add(model):
        serving_now(model)
    return {
        **stored.describe(),
        "status": status,
        "task": model.task,
        "fast_path": model.fast_path,
    }


def serving_now(model: LoadedModel) -> None:
    """Log that this process serves a published version from now on (with its pid: each
    worker of each replica says so once)."""
    logger.info(
        "serving published version",
        extra={
            "endpoint": model.endpoint,
            "model_version": model.version,
            "pid": os.getpid(),
            "fast_path": model.fast_path,
        },
    )
