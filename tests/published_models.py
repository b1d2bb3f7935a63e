"""Version folders to publish: written as training writes them, then saved with skops (or
left pickled), with model.json pinning every file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import joblib
import skops.io
from sklearn.tree import DecisionTreeClassifier

from tests.conftest import fit_tiny_model

PUBLISHED_FILES = ("pipeline.skops", "pipeline.pickle", "dtypes.pickle", "columns.json")


def pin(folder: Path, **metadata: object) -> Path:
    """Rewrite model.json with `metadata` added and the sha256 of every other file."""
    current = json.loads((folder / "model.json").read_text())
    pins = {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in PUBLISHED_FILES
        if (folder / name).is_file()
    }
    current.pop("pipeline_sha256", None)
    (folder / "model.json").write_text(json.dumps({**current, **metadata, "sha256": pins}))
    return folder


def as_skops(folder: Path) -> Path:
    """Replace the folder's pipeline.pickle by pipeline.skops, trusting the types it holds
    (this test's own model), and pin every file again."""
    pipeline = joblib.load(folder / "pipeline.pickle")
    (folder / "pipeline.pickle").unlink()
    skops.io.dump(pipeline, folder / "pipeline.skops")
    trusted = skops.io.get_untrusted_types(file=folder / "pipeline.skops")
    return pin(folder, skops_trusted=trusted)


def tiny_version(
    folder: Path, version: str, shift: float = 0.5, skops: bool = True, **metadata: object
) -> Path:
    """The conftest's tiny model (inputs x, k, color) as a version folder to publish."""
    fit_tiny_model(folder, shift=shift, version=version, **metadata)
    return as_skops(folder) if skops else pin(folder)


def income_version(folder: Path, version: str, skops: bool = True, **metadata: object) -> Path:
    """A small decision tree on the income endpoint's inputs, written by
    serving.model.artifacts.write_model (as the bundled versions are), published as `version`."""
    from serving.model import artifacts
    from training import income

    frame, target = income.load(income.TRAIN_PATH)
    tree = DecisionTreeClassifier(max_depth=6, random_state=0)
    pipeline = income.build_pipeline(tree).fit(frame, target)
    artifacts.write_model(
        folder,
        pipeline,
        frame,
        {"name": "income", "endpoint": "income", "version": version, **metadata},
    )
    return as_skops(folder) if skops else pin(folder)


def multipart(folder: Path) -> dict[str, tuple[str, bytes]]:
    """The folder's model files as `requests` sends multipart files, each part named as its
    file."""
    names = (*PUBLISHED_FILES, "model.json")
    return {n: (n, (folder / n).read_bytes()) for n in names if (folder / n).is_file()}
