"""Writing a model folder: pipeline, dtypes, columns and model.json."""

import hashlib
import json
import pickle
import platform
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.pipeline import Pipeline

PIPELINE_FILE = "pipeline.pickle"
DTYPES_FILE = "dtypes.pickle"
COLUMNS_FILE = "columns.json"
MODEL_FILE = "model.json"


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Return the versions that decide whether the pickle can be loaded elsewhere."""
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


def write_json(path: Path, content: object) -> None:
    """Write JSON with a stable layout so that reruns produce identical bytes."""
    text = json.dumps(content, indent=2, sort_keys=False, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def write_model(out_dir: Path, pipeline: Pipeline, X: pd.DataFrame, metadata: dict) -> dict:
    """Write the four model files into out_dir and return the model.json content written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline_path = out_dir / PIPELINE_FILE
    joblib.dump(pipeline, pipeline_path)
    with open(out_dir / DTYPES_FILE, "wb") as handle:
        pickle.dump(X.dtypes, handle)
    write_json(out_dir / COLUMNS_FILE, list(X.columns))
    # Every file the service reads is pinned (the service checks them before unpickling);
    # pipeline_sha256 stays for readers that know only the pipeline's pin.
    digests = {
        name: sha256_file(out_dir / name) for name in (PIPELINE_FILE, DTYPES_FILE, COLUMNS_FILE)
    }
    model = {**metadata, "pipeline_sha256": digests[PIPELINE_FILE], "sha256": digests}
    write_json(out_dir / MODEL_FILE, model)
    return model
