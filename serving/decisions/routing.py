"""Which version answers an observation: the one asked for, else the A/B test's arm for its
id, else the production version."""

from __future__ import annotations

from dataclasses import dataclass

from serving.decisions.experiments import Experiments
from serving.decisions.lifecycle import ARCHIVED, Lifecycle
from serving.model.registry import Registry
from serving.model.runtime import LoadedModel


@dataclass(frozen=True)
class Route:
    """The answering model, and the A/B test and arm that chose it (None when none did)."""

    model: LoadedModel
    ab_test: int | None = None
    arm: str | None = None


def choose(
    registry: Registry,
    lifecycle: Lifecycle,
    experiments: Experiments,
    endpoint: str,
    observation_id: str | int,
    version: str | None = None,
    status: str | None = None,
) -> Route:
    """Route one observation. An explicit `version` or `status` bypasses any A/B test: the
    test measures the traffic that would otherwise have gone to production."""
    statuses = lifecycle.statuses()
    # An empty ?version= or ?status= is the same as an absent one.
    if not version and not status:
        test = experiments.running(endpoint)
        if test is not None:
            arm, chosen = test.route(observation_id)
            model = registry.find(endpoint, chosen)
            # A version archived mid-test (or not served here) stops taking test traffic.
            if model is not None and statuses.get((endpoint, chosen)) != ARCHIVED:
                return Route(model, test.id, arm)
    return Route(registry.resolve(endpoint, statuses, version=version, status=status))
