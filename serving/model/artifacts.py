"""Writing a model folder: pipeline, dtypes, columns and model.json, every file pinned."""

import hashlib
import json
import pickle
import platform
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
import sklearn

from serving.model import skops_format
from serving.model.runtime import (
    COLUMNS_FILE,
    DTYPES_FILE,
    METADATA_FILE,
    PIPELINE_FILE,
    SKOPS_FILE,
)

__all__ = [
    "COLUMNS_FILE",
    "DTYPES_FILE",
    "METADATA_FILE",
    "MODEL_FILE",
    "PIPELINE_FILE",
    "SKOPS_FILE",
    "library_versions",
    "sha256_file",
    "write_json",
    "write_model",
]

MODEL_FILE = METADATA_FILE
Format = Literal["pickle", "skops"]


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions(format: Format = "pickle") -> dict[str, str]:
    """Return the versions that decide whether the pipeline can be loaded elsewhere."""
    versions = {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }
    if format == "skops":
        import skops

        versions["skops"] = skops.__version__
    return versions


def write_json(path: Path, content: object) -> None:
    """Write JSON with a stable layout so that reruns produce identical bytes."""
    text = json.dumps(content, indent=2, sort_keys=False, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def portable_dtypes(dtypes: pd.Series) -> pd.Series:
    """`dtypes` with every text kept in pandas' own (Python) storage, as pandas 3 keeps it
    where pyarrow is not installed: a model trained where pyarrow is (it reads Parquet)
    writes the same dtypes.pickle, byte for byte, as one trained where it is not, and older
    deployments without pyarrow still load it. Storage never changes what the service checks
    (a text is a text)."""

    def python(dtype: Any) -> Any:
        if isinstance(dtype, pd.StringDtype) and dtype.storage != "python":
            return pd.StringDtype("python", na_value=dtype.na_value)
        return dtype

    portable = pd.Series([python(d) for d in dtypes], index=dtypes.index, dtype=object)
    portable.name = dtypes.name
    index = dtypes.index
    if isinstance(index.dtype, pd.StringDtype):
        portable.index = index.astype(python(index.dtype))
    return portable


def write_model(
    out_dir: Path,
    pipeline: Any,
    X: pd.DataFrame,
    metadata: dict,
    format: Format = "pickle",
) -> dict:
    """Write the four model files into out_dir and return the model.json content written.

    With format="skops" the pipeline goes to pipeline.skops and model.json's `skops_trusted`
    lists exactly the types skops reports as untrusted (SkopsRefused when one of them could
    never be trusted).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if format == "skops":
        data, untrusted = skops_format.dumps(pipeline)
        pipeline_file = SKOPS_FILE
        (out_dir / pipeline_file).write_bytes(data)
        metadata = {**metadata, skops_format.TRUSTED_KEY: untrusted}
    else:
        pipeline_file = PIPELINE_FILE
        joblib.dump(pipeline, out_dir / pipeline_file)
    with open(out_dir / DTYPES_FILE, "wb") as handle:
        pickle.dump(portable_dtypes(X.dtypes), handle)
    write_json(out_dir / COLUMNS_FILE, list(X.columns))
    # Every file the service reads is pinned (the service checks them before unpickling);
    # pipeline_sha256 stays for readers that know only the pipeline's pin.
    digests = {
        name: sha256_file(out_dir / name) for name in (pipeline_file, DTYPES_FILE, COLUMNS_FILE)
    }
    model = {**metadata, "pipeline_sha256": digests[pipeline_file], "sha256": digests}
    write_json(out_dir / MODEL_FILE, model)
    return model
