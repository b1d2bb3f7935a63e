"""Pinned sha256 digests of model files, checked before anything in a folder is unpickled.

Two kinds of pin:

- in the folder: model.json's `sha256` map (`{"pipeline.pickle": "<hex>", ...}`, written by
  `python -m training`) and its older `pipeline_sha256`. They catch a replaced or corrupted
  file, but not a swapped folder: whoever replaces the files can rewrite model.json too.
- outside the folder: the `MODEL_DIGESTS` manifest, `{"<endpoint>/<version>": {"<file>":
  "<hex>", ...}}`, kept by the operator where the model folders' writer cannot reach (a
  secret, a config map, a read-only mount, a platform variable). When it is set, every
  version served must have an entry pinning its pipeline, dtypes and columns files, so a
  swapped or added folder is refused at start-up.

Why an explicit manifest rather than trust on first use (the database recording each
version's digests at its first load): a manifest pins before the first load, which is
exactly when a poisoned image or volume would arrive, it is reviewed with the deployment
like a lock file with hashes (`pip --require-hashes`), and it needs no database, so
`flask score`, the benchmarks and a fresh replica check the same pins. Retraining a version
in place is then a deliberate step (update the manifest), not a start-up failure the
tutorial flow would trip over: without MODEL_DIGESTS nothing changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from serving.model import folders

logger = logging.getLogger(__name__)

METADATA_MAP = "sha256"
LEGACY_PIPELINE_KEY = "pipeline_sha256"
_HEX = re.compile(r"^[0-9a-f]{64}$")


class DigestError(Exception):
    """A digest pin that is malformed or does not match; the message is a whole sentence."""


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def _checked_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise DigestError(f"{where} must be a JSON object of file name to sha256")
    for name, digest in value.items():
        if not isinstance(digest, str) or not _HEX.match(digest):
            raise DigestError(f"{where}: the digest of {name} must be 64 lowercase hex digits")
    return dict(value)


def check_folder_pins(
    where: str, metadata: Mapping[str, Any], digests: Mapping[str, str], pipeline_file: str
) -> None:
    """Compare the files' digests with the pins model.json holds; a file without a pin is not
    checked (as before the `sha256` map existed). `where` starts each sentence ("model folder
    <path>"). Raises DigestError with a sentence."""
    folder = where
    where = f"{where}: model.json {METADATA_MAP}"
    pins = _checked_map(metadata.get(METADATA_MAP, {}), where)
    for name, expected in pins.items():
        if name not in digests:
            # A pin naming no file would silently check nothing (a typo, a renamed file).
            raise DigestError(f"{where} pins {name}, which is not in the folder")
        if digests[name] != expected:
            raise DigestError(
                f"{folder}: {name} does not match its sha256 in model.json; "
                "the file was replaced or corrupted"
            )
    legacy = metadata.get(LEGACY_PIPELINE_KEY)
    if legacy and digests.get(pipeline_file) != legacy:
        raise DigestError(
            f"{folder}: {pipeline_file} does not match the {LEGACY_PIPELINE_KEY} "
            "in model.json; the file was replaced or corrupted"
        )


def manifest_key(endpoint: str, version: str) -> str:
    """The manifest's key for one version."""
    return f"{endpoint}/{version}"


class Manifest:
    """The operator's pins, read once at start-up from MODEL_DIGESTS (a path or inline JSON)."""

    def __init__(self, entries: Mapping[str, Mapping[str, str]], source: str):
        self.entries = {key: dict(files) for key, files in entries.items()}
        self.source = source
        self.used: set[str] = set()

    @classmethod
    def read(cls, setting: str) -> Manifest:
        """Parse MODEL_DIGESTS: inline JSON when it starts with `{`, else a file's path."""
        text, source = setting, "MODEL_DIGESTS"
        if not setting.lstrip().startswith("{"):
            source = f"MODEL_DIGESTS ({setting})"
            try:
                text = Path(setting).read_text(encoding="utf-8")
            except OSError as exc:
                raise DigestError(f"{source} cannot be read: {exc.strerror or exc}") from exc
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise DigestError(f"{source} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise DigestError(f"{source} must be a JSON object keyed by '<endpoint>/<version>'")
        entries = {
            key: _checked_map(files, f"{source} entry {key!r}") for key, files in raw.items()
        }
        return cls(entries, source)

    def check(
        self, folder: Path, key: str, digests: Mapping[str, str], required: tuple[str, ...]
    ) -> None:
        """Refuse a version the manifest does not know, a required file it does not pin, or
        any file whose digest differs."""
        pins = self.entries.get(key)
        if pins is None:
            raise DigestError(
                f"model folder {folder}: {self.source} has no entry for {key!r}; every served "
                "version must be pinned there"
            )
        self.used.add(key)
        unpinned = [name for name in required if name not in pins]
        if unpinned:
            raise DigestError(f"model folder {folder}: {self.source} does not pin {unpinned}")
        for name, expected in pins.items():
            if name not in digests:
                raise DigestError(
                    f"model folder {folder}: {self.source} pins {name}, which is not in the folder"
                )
            if digests[name] != expected:
                raise DigestError(
                    f"model folder {folder}: {name} does not match its digest in {self.source}; "
                    "the folder was changed since it was pinned"
                )

    def warn_unused(self) -> None:
        """Log entries no loaded folder used: a version removed, or a key misspelled."""
        for key in sorted(set(self.entries) - self.used):
            logger.warning("MODEL_DIGESTS entry matches no model folder", extra={"key": key})


# The files of a model folder (as serving.model.runtime names them), model.json included: it says
# which class is positive, what to reject and which skops types to trust.
MODEL_FILES = ("pipeline.pickle", "pipeline.skops", "dtypes.pickle", "columns.json", "model.json")


def folder_digests(folder: Path) -> dict[str, str]:
    """The digests of the model files a folder holds. Reads bytes only, never unpickles."""
    return {
        name: sha256_hex((folder / name).read_bytes())
        for name in MODEL_FILES
        if (folder / name).is_file()
    }


def manifest_for(root: Path, models_dir: Path, default_endpoint: str) -> dict[str, dict[str, str]]:
    """A MODEL_DIGESTS manifest of the folders as they are now: the root folder as the default
    endpoint, then every models/<endpoint>/<version>/. Review the folders before pinning them."""
    # The root folder's version is model.json's, as serving.model.runtime resolves it.
    version = folders.root_version(folders.read_metadata(root))
    entries = {manifest_key(default_endpoint, version): folder_digests(root)}
    for endpoint, version, folder in folders.version_folders(models_dir):
        entries[manifest_key(endpoint, version)] = folder_digests(folder)
    return entries
