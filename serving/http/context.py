"""Per-request helpers shared by the blueprints. Scoring and storing predictions go through
the data plane (`services()`); no view reaches the scorer or the writer itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app, g

from serving.http import bodies

if TYPE_CHECKING:  # the components themselves are `serving.load_models`'s to import
    from serving.dataplane import Services
    from serving.decisions.experiments import Experiments
    from serving.decisions.lifecycle import Lifecycle
    from serving.decisions.shadows import Shadows
    from serving.model.registry import Registry


def registry() -> Registry:
    """The model registry of the running app."""
    return current_app.extensions["registry"]


def lifecycle() -> Lifecycle:
    """The app's view of version statuses."""
    return current_app.extensions["lifecycle"]


def experiments() -> Experiments:
    """The app's A/B tests."""
    return current_app.extensions["experiments"]


def shadows() -> Shadows:
    """The app's shadow versions."""
    return current_app.extensions["shadows"]


def services() -> Services:
    """What the data plane needs of the running app (registry, lifecycle, experiments,
    scorer, writer, shadows)."""
    return current_app.extensions["services"]


def body() -> bytes:
    """The raw body, at most MAX_BODY_BYTES however it is framed (413 beyond); read whatever
    the Content-Type says, since curl users forget it."""
    return bodies.read(current_app.config["SETTINGS"].max_body_bytes, "MAX_BODY_BYTES")


def annotate(**fields: object) -> None:
    """Add fields to this request's log line."""
    g.setdefault("log_fields", {}).update(fields)
