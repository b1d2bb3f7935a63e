"""Transformers that the bundled pipelines import when they are unpickled."""

from custom_transformers.cabin import CabinDeck
from custom_transformers.categorical import CategoricalImputer
from custom_transformers.family import FamilySize

__all__ = ["CabinDeck", "CategoricalImputer", "FamilySize"]
