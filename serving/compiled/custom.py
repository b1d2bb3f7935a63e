"""Converters for the repository's own transformers in custom_transformers/."""

from __future__ import annotations

from typing import Any

import numpy as np

from custom_transformers import CabinDeck, CategoricalImputer, FamilySize
from custom_transformers.text import map_cells
from serving.compiled.core import Transform, as_matrix, register_transformer


@register_transformer(FamilySize)
def _family_size(step: FamilySize) -> Transform:
    def transform(X: Any) -> np.ndarray:
        values = np.asarray(as_matrix(X), dtype=np.float64)
        return values.sum(axis=1, keepdims=True) + 1.0

    return transform


@register_transformer(CabinDeck)
def _cabin_deck(step: CabinDeck) -> Transform:
    # The fitted step's own cell function: one definition of a deck, shared with training.
    deck = step._deck

    def transform(X: Any) -> np.ndarray:
        return map_cells(as_matrix(X), deck)

    return transform


@register_transformer(CategoricalImputer)
def _categorical_imputer(step: CategoricalImputer) -> Transform:
    category = step._category

    def transform(X: Any) -> np.ndarray:
        return map_cells(as_matrix(X), category)

    return transform
