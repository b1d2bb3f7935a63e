"""Converters for the repository's own transformers in custom_transformers/."""

from __future__ import annotations

from typing import Any

import numpy as np

from custom_transformers import CabinDeck, CategoricalImputer, FamilySize
from custom_transformers.text import CellTransformer, map_cells
from serving.compiled.core import Transform, as_matrix, register_transformer


@register_transformer(FamilySize)
def _family_size(step: FamilySize) -> Transform:
    def transform(X: Any) -> np.ndarray:
        values = np.asarray(as_matrix(X), dtype=np.float64)
        return values.sum(axis=1, keepdims=True) + 1.0

    return transform


@register_transformer(CabinDeck)
@register_transformer(CategoricalImputer)
def _cell_transformer(step: CellTransformer) -> Transform:
    # The fitted step's own cell function: one definition, shared with training.
    cell = step._cell

    def transform(X: Any) -> np.ndarray:
        return map_cells(as_matrix(X), cell)

    return transform
