"""What each dashboard page shows, gathered from the registry, the statuses, traffic, quality,
drift and A/B tests. No Flask here: the views pass the app's components in and render.

A panel whose source refuses (an A/B test on a version this process does not serve, say)
shows that sentence instead of failing the whole page; a database outage still fails it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from serving.decisions.experiments import RUNNING, Experiments
from serving.decisions.lifecycle import PRODUCTION, Lifecycle
from serving.errors import ServiceError, Unavailable
from serving.model.folders import version_order
from serving.model.registry import Registry
from serving.model.runtime import LoadedModel
from serving.reports.drift import model_drift, parse_window
from serving.reports.quality import BINARY_METRICS, REGRESSION_METRICS, performance_report
from serving.reports.traffic import traffic
from serving.store.tables import utcnow

T = TypeVar("T")

METRIC_NAMES = {
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "roc_auc": "ROC AUC",
    "log_loss": "Log loss",
    "brier": "Brier",
    "brier_score": "Brier",
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R²",
}
HISTORY_ROWS = 10


@dataclass(frozen=True)
class Panel:
    """A panel's data, or the sentence saying why it has none."""

    data: Any = None
    error: str | None = None


def _panel(build: Callable[[], T]) -> Panel:
    try:
        return Panel(build())
    except Unavailable:
        raise
    except ServiceError as exc:
        return Panel(error=exc.message)


def metric_names(task: str) -> tuple[str, ...]:
    """The metrics a task is measured by, in display order."""
    return REGRESSION_METRICS if task == "regression" else BINARY_METRICS


def overview(
    registry: Registry,
    lifecycle: Lifecycle,
    experiments: Experiments,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The front page: every endpoint with its versions, statuses and traffic, and the
    A/B tests running now."""
    statuses = lifecycle.statuses()
    endpoints = registry.describe(statuses)
    seen = traffic(_pairs(registry), now)
    for entry in endpoints:
        entry["traffic"] = seen.endpoint_total(entry["endpoint"])
        entry["predictions"] = sum(entry["traffic"])
        entry["production"] = next(
            (v["version"] for v in entry["versions"] if v["status"] == PRODUCTION), None
        )
    return {
        "endpoints": endpoints,
        "traffic": seen,
        "versions": len(registry),
        "running_tests": _panel(lambda: [t for t in experiments.list() if t["state"] == RUNNING]),
        "broken": registry.broken,
        "generated_at": utcnow(),
    }


def endpoint_page(
    registry: Registry,
    lifecycle: Lifecycle,
    experiments: Experiments,
    endpoint: str,
    drift_version: str | None = None,
    window: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """One endpoint: versions and statuses, traffic per version, quality per version with
    calibration and confusion matrix, drift per input, A/B tests, recent status changes."""
    models = registry.endpoint(endpoint)
    ordered = [models[v] for v in sorted(models, key=version_order)]
    statuses = lifecycle.statuses()
    drifted = _drift_model(registry, statuses, endpoint, drift_version)
    parsed_window = parse_window(window)
    seen = traffic([(endpoint, m.version) for m in ordered], now)
    quality = _panel(lambda: performance_report(endpoint, ordered))
    measured = {v["version"]: v for v in (quality.data or {}).get("versions", [])}
    versions = [
        {
            "version": m.version,
            "status": statuses.get((endpoint, m.version)),
            "task": m.task,
            "fast_path": bool(m.fast_path.get("enabled")),
            "training_metrics": _training_metrics(m),
            "lineage": lineage_summary(m),
            "quality": measured.get(m.version),
            "traffic": seen.series(endpoint, m.version),
        }
        for m in ordered
    ]
    tasks = {m.task for m in ordered}
    return {
        "endpoint": endpoint,
        "default": endpoint == registry.default_endpoint,
        "versions": versions,
        "retrained": [v for v in versions if v["lineage"] is not None],
        "traffic": seen,
        "traffic_series": [(v["version"], v["traffic"]) for v in versions],
        "metric_columns": [
            name
            for name in (*BINARY_METRICS, *REGRESSION_METRICS)
            if any(name in metric_names(task) for task in tasks)
        ],
        "quality": quality,
        "drift": _panel(lambda: model_drift(drifted, parsed_window)),
        "drift_version": drifted.version,
        "window": window or "",
        "tests": _panel(lambda: experiments.list(endpoint)),
        "history": _panel(lambda: list(reversed(lifecycle.history(endpoint)))[:HISTORY_ROWS]),
        "generated_at": utcnow(),
    }


def _pairs(registry: Registry) -> list[tuple[str, str]]:
    return [(e, v) for e, versions in registry.models.items() for v in versions]


def _drift_model(
    registry: Registry,
    statuses: dict[tuple[str, str], str],
    endpoint: str,
    wanted: str | None,
) -> LoadedModel:
    """The version whose drift is shown: the one asked for, else production, else the
    newest."""
    if wanted is not None:
        return registry.version(endpoint, wanted)
    models = registry.endpoint(endpoint)
    producing = [v for v in models if statuses.get((endpoint, v)) == PRODUCTION]
    chosen = producing[0] if producing else max(models, key=version_order)
    return models[chosen]


def _training_metrics(model: LoadedModel) -> list[tuple[str, list[tuple[str, float]]]]:
    """model.json's recorded metrics, group by group (holdout, training...), numbers only."""
    recorded = model.metadata.get("metrics")
    if not isinstance(recorded, dict):
        return []
    groups = []
    for group, values in recorded.items():
        if isinstance(values, dict):
            numbers = [
                (name, float(value))
                for name, value in values.items()
                if name != "n" and isinstance(value, int | float) and not isinstance(value, bool)
            ]
            if numbers:
                groups.append((str(group), numbers))
    return groups


def lineage_summary(model: LoadedModel) -> dict[str, Any] | None:
    """What a retrained version's model.json says of where it came from and its gate, or None
    for a version `flask retrain` did not make (or whose lineage is not in that shape)."""
    lineage = model.metadata.get("lineage")
    if not isinstance(lineage, dict):
        return None
    rows, gate = lineage.get("logged_rows"), lineage.get("gate")
    if not isinstance(rows, dict) or not isinstance(gate, dict):
        return None
    fit, held = rows.get("fit") or {}, rows.get("holdout") or {}
    training = lineage.get("training_data") or {}
    mine, theirs = gate.get("candidate") or {}, gate.get("production") or {}
    return {
        "parent": lineage.get("parent_version"),
        "fit": fit,
        "holdout": held,
        "training": training if training.get("used") else None,
        "training_skipped": None if training.get("used") else training.get("reason"),
        "inputs_sha256": lineage.get("inputs_sha256"),
        "retrained_at": lineage.get("retrained_at"),
        "retrained_by": lineage.get("retrained_by"),
        "verdict": gate.get("verdict"),
        "passed": gate.get("passed"),
        "rule": gate.get("rule"),
        "test": gate.get("test"),
        "p_value": gate.get("p_value"),
        "metrics": [(name, value, theirs.get(name)) for name, value in mine.items()],
    }
