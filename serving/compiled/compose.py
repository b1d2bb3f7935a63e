"""Converters for the composition steps: Pipeline, ColumnTransformer, FunctionTransformer."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from serving.compiled.core import (
    Frame,
    NotCompilable,
    Transform,
    as_matrix,
    chain,
    compile_transformer,
    flatten_steps,
    n_rows,
    register_transformer,
)


@register_transformer(Pipeline)
def _pipeline(pipeline: Pipeline) -> Transform:
    return chain([compile_transformer(step) for step in flatten_steps(pipeline)])


@register_transformer(FunctionTransformer)
def _function_transformer(step: FunctionTransformer) -> Transform:
    if step.func is not None:
        name = getattr(step.func, "__name__", repr(step.func))
        raise NotCompilable(
            f"no converter for FunctionTransformer(func={name}): only the identity compiles"
        )
    validate = bool(step.validate)

    def transform(X: Any) -> np.ndarray:
        X = as_matrix(X)
        # validate=True runs check_array, whose default dtype turns object arrays numeric.
        if validate and X.dtype == object:
            return X.astype(np.float64)
        return X

    return transform


@register_transformer(ColumnTransformer)
def _column_transformer(ct: ColumnTransformer) -> Transform:
    indices_of = getattr(ct, "_transformer_to_input_indices", None)
    if indices_of is None:
        raise NotCompilable("ColumnTransformer without _transformer_to_input_indices")
    names_in = getattr(ct, "feature_names_in_", None)
    weights = ct.transformer_weights or {}
    branches = []
    # transformers_ is in output order, remainder last, exactly as transform stacks them.
    for name, trans, columns in ct.transformers_:
        indices = list(indices_of.get(name, []))
        if (isinstance(trans, str) and trans == "drop") or not indices:
            continue
        if np.isscalar(columns):
            # A scalar key hands the transformer a 1-D column; none of ours take that.
            raise NotCompilable(f"ColumnTransformer branch {name!r} selects a 1-D column")
        labels = None if names_in is None else [str(names_in[i]) for i in indices]
        branches.append(_branch(compile_transformer(trans), indices, labels, weights.get(name)))

    def transform(X: Any) -> np.ndarray:
        outputs = [branch(X) for branch in branches]
        if not outputs:
            return np.zeros((n_rows(X), 0))
        # Sparse sklearn outputs are dense here: the values, and so the scores, are the same.
        return np.hstack(outputs)

    return transform


def _branch(
    fn: Transform, indices: list[int], labels: list[str] | None, weight: float | None
) -> Transform:
    """One ColumnTransformer branch: select its columns, transform, weight."""

    def run(X: Any) -> np.ndarray:
        if isinstance(X, Frame):
            # Fitted on a DataFrame, sklearn selects by name; otherwise by position.
            sub: Any = X.take(labels if labels is not None else indices)
        else:
            sub = X[:, indices]
        out = as_matrix(fn(sub))
        return out if weight is None else out * weight

    return run
