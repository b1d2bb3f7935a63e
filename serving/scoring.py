"""Scoring: validated observations in, one score each out, in one vectorised call per model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serving.runtime import LoadedModel, Score


def score(model: LoadedModel, observations: Sequence[dict[str, Any]]) -> list[Score]:
    """Score a batch of validated observations with one model version, in input order."""
    return model.predict(observations)
