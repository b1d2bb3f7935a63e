"""Writing a model folder: pipeline, dtypes, columns and model.json, every file pinned."""

import functools
import hashlib
import io
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
    "NotPortable",
    "library_versions",
    "portable_dtypes",
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
    Path(path).write_bytes(_json_bytes(content))


class NotPortable(ValueError):
    """A column's dtype has no equivalent among pandas' own dtypes, so a model folder with it
    would load only where pyarrow is installed, or be refused by the service's unpickler."""

    def __init__(self, column: Any, dtype: Any, category: bool = False):
        self.column = column
        what = "categories of dtype" if category else "dtype"
        super().__init__(
            f"column {column!r} has {what} {dtype}, which has no equivalent among pandas' own "
            "dtypes (only Arrow integers, float32, float64, booleans and text have one): "
            "convert the column before training, e.g. with astype"
        )


# pandas' nullable dtypes: rebuilt from their class alone.
_MASKED = (
    pd.BooleanDtype,
    pd.Int8Dtype,
    pd.Int16Dtype,
    pd.Int32Dtype,
    pd.Int64Dtype,
    pd.UInt8Dtype,
    pd.UInt16Dtype,
    pd.UInt32Dtype,
    pd.UInt64Dtype,
    pd.Float32Dtype,
    pd.Float64Dtype,
)


@functools.cache
def _arrow_equivalents() -> dict[Any, Any]:
    """Each Arrow type that has one -> pandas' own (nullable) dtype that means the same."""
    import pyarrow as pa

    text = pd.StringDtype("python", na_value=pd.NA)
    return {
        pa.bool_(): pd.BooleanDtype(),
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.uint8(): pd.UInt8Dtype(),
        pa.uint16(): pd.UInt16Dtype(),
        pa.uint32(): pd.UInt32Dtype(),
        pa.uint64(): pd.UInt64Dtype(),
        pa.float32(): pd.Float32Dtype(),
        pa.float64(): pd.Float64Dtype(),
        pa.string(): text,
        pa.large_string(): text,
        pa.string_view(): text,
    }


def _portable(column: Any, dtype: Any, category: bool = False) -> Any:
    """One dtype as pandas' own, a new instance for every pandas dtype: an instance pickles
    with what it cached (`numpy_dtype` once a column was cast to it, say) and with every
    other place it is shared, which would make the bytes depend on the frame's history."""
    if isinstance(dtype, pd.ArrowDtype):
        equivalent = _arrow_equivalents().get(dtype.pyarrow_dtype)
        if equivalent is None:
            raise NotPortable(column, dtype, category)
        dtype = equivalent
    if isinstance(dtype, pd.StringDtype):
        return pd.StringDtype("python", na_value=dtype.na_value)
    if isinstance(dtype, _MASKED):
        # Categories never hold a missing value, so numpy's dtype carries them exactly.
        return dtype.numpy_dtype if category else type(dtype)()
    if isinstance(dtype, pd.CategoricalDtype) and dtype.categories is not None:
        categories = dtype.categories
        if isinstance(categories.dtype, (pd.StringDtype, pd.ArrowDtype, *_MASKED)):
            values, storage = (
                categories.to_numpy(dtype=object),
                _portable(column, categories.dtype, category=True),
            )
        else:
            values, storage = categories.to_numpy(copy=True), categories.dtype
        # Always a new Index, numeric categories too: two columns sharing one dtype would
        # otherwise share its Index, which pickles as a back-reference, and the bytes would
        # differ from two equal dtypes of their own.
        return pd.CategoricalDtype(pd.Index(values, dtype=storage), ordered=dtype.ordered)
    return dtype


def portable_dtypes(dtypes: pd.Series) -> pd.Series:
    """`dtypes` in pandas' own dtypes and storage only, as pandas 3 has them where pyarrow is
    not installed: a model trained where pyarrow is (it reads Parquet) writes the same
    dtypes.pickle, byte for byte, as one trained where it is not, and deployments without
    pyarrow still load it. Nothing the service checks changes meaning:

    - text (column names, string columns, a categorical's categories) moves to Python
      storage, keeping its missing-value marker; a categorical keeps its categories, their
      order and its `ordered` flag;
    - an Arrow column (`pd.ArrowDtype`) becomes pandas' nullable dtype for it: int64[pyarrow]
      -> Int64, float64[pyarrow] -> Float64, bool[pyarrow] -> boolean, string[pyarrow] ->
      string (Python storage, missing values as pd.NA). Nullable, not numpy's int64 or
      float64: an Arrow column holds missing values as NA, so the service keeps accepting
      null for an integer there. Numeric categories (Arrow or nullable), which never hold a
      missing value, take numpy's dtype instead;
    - any other Arrow type (timestamps, decimals, lists, dictionaries, float16, ...) raises
      NotPortable naming the column: none of pandas' own dtypes means the same.
    """
    portable = pd.Series(
        [_portable(name, d) for name, d in dtypes.items()], index=dtypes.index, dtype=object
    )
    portable.name = dtypes.name
    index = dtypes.index
    if isinstance(index.dtype, pd.StringDtype):
        portable.index = pd.Index(
            index.to_numpy(dtype=object), dtype=_portable(None, index.dtype), name=index.name
        )
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

    Every file is built in memory before the first is written, so whatever refuses (a
    dtype that is NotPortable, an untrusted skops type, a pipeline that cannot be pickled,
    metadata that is not JSON) leaves out_dir as it was: no empty dtypes.pickle beside a
    new pipeline and an older model.json.
    """
    out_dir = Path(out_dir)
    if format == "skops":
        pipeline_data, untrusted = skops_format.dumps(pipeline)
        pipeline_file = SKOPS_FILE
        metadata = {**metadata, skops_format.TRUSTED_KEY: untrusted}
    else:
        pipeline_file = PIPELINE_FILE
        buffer = io.BytesIO()
        # The same bytes joblib writes to a file (checked: identical digests).
        joblib.dump(pipeline, buffer)
        pipeline_data = buffer.getvalue()
    files = {
        pipeline_file: pipeline_data,
        DTYPES_FILE: pickle.dumps(portable_dtypes(X.dtypes)),
        COLUMNS_FILE: _json_bytes(list(X.columns)),
    }
    # Every file the service reads is pinned (the service checks them before unpickling);
    # pipeline_sha256 stays for readers that know only the pipeline's pin.
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    model = {**metadata, "pipeline_sha256": digests[pipeline_file], "sha256": digests}
    files[MODEL_FILE] = _json_bytes(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    # model.json last: a folder whose writing stopped half-way (a full disk) has no pins
    # that vouch for the files before it.
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    return model


def _json_bytes(content: object) -> bytes:
    """`content` as `write_json` writes it."""
    text = json.dumps(content, indent=2, sort_keys=False, allow_nan=False)
    return (text + "\n").encode("utf-8")
