"""Compiled scoring: a fitted pipeline turned into NumPy functions of validated row dicts.

`compile_pipeline` builds a `CompiledPipeline` from a fitted pipeline, its columns and dtypes,
or raises `NotCompilable` naming the first step it has no converter for. `verify` measures how
far the compiled outputs are from the pipeline's on `reference_rows`; the caller uses the
compiled path only when that difference is within its tolerance.

Custom transformers add their own converters with `register_transformer` (final estimators
with `register_estimator`); see serving/compiled/custom.py for examples.
"""

# Importing the converter modules fills the registry; core alone knows no estimators.
from serving.compiled import compose, custom, linear, preprocessing, trees
from serving.compiled.core import (
    COMPILED,
    ESTIMATOR,
    CompiledPipeline,
    Frame,
    Head,
    NotCompilable,
    Transform,
    as_float,
    as_matrix,
    compile_pipeline,
    register_estimator,
    register_transformer,
)
from serving.compiled.reference import reference_rows, typical_row
from serving.compiled.verification import verify

__all__ = [
    "COMPILED",
    "ESTIMATOR",
    "CompiledPipeline",
    "Frame",
    "Head",
    "NotCompilable",
    "Transform",
    "as_float",
    "as_matrix",
    "compile_pipeline",
    "compose",
    "custom",
    "linear",
    "preprocessing",
    "reference_rows",
    "register_estimator",
    "register_transformer",
    "trees",
    "typical_row",
    "verify",
]
