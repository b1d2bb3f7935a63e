"""Prometheus metrics: requests, predictions, warnings and the models this process serves.

Under gunicorn every worker is its own process, so each one counts into its own files in
METRICS_DIR (prometheus_client's multiprocess mode) and `/metrics`, whichever worker answers
it, adds up the files of every worker, living or dead. Without METRICS_DIR (the Flask test
client, `python app.py`) the counts live in this one process.

prometheus_client chooses between the two modes once, when it is first imported, from the
PROMETHEUS_MULTIPROC_DIR variable. gunicorn.conf.py imports serving (for its settings) before
that variable can be known, so this module, the only one that uses prometheus_client, imports
it inside `init_app`, after exporting the variable, and never at import.

Every label value is bounded: routes are URL rules, never raw paths; endpoints are the loaded
ones ("" for any other name a client sends); labels are a model's classes; warnings name
features only when the feature is the model's own.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections import Counter as Tally
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask, Request
    from prometheus_client import Counter, Histogram

    from serving.model.registry import Registry

_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Request latency buckets, in seconds: a compiled prediction answers in ~1-2 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_LABELS = ("route", "method", "endpoint", "version", "status")

# What serving.model.schema says in a warning's "problem", and the kind it is counted as.
UNKNOWN_FIELD = "unknown field, ignored"
_WARNING_KINDS = (
    ("outside the training range", "out_of_range"),
    ("not seen in training", "unseen_category"),
)


@dataclass(frozen=True)
class _Instruments:
    requests: Counter
    latency: Histogram
    predictions: Counter
    warnings: Counter


_instruments: _Instruments | None = None
_building = threading.Lock()


def _built() -> _Instruments:
    """The process's metrics, made on first use (prometheus_client registers each name once)."""
    global _instruments
    if _instruments is not None:
        return _instruments
    with _building:
        if _instruments is None:
            # Imported here, never at the top: see the module docstring.
            from prometheus_client import Counter, Histogram, disable_created_metrics

            # The _created series would double the output, and multiprocess mode has none.
            disable_created_metrics()
            _instruments = _Instruments(
                requests=Counter(
                    "serving_http_requests",
                    "HTTP requests answered, by URL rule, method, endpoint, model version and "
                    "status code.",
                    _REQUEST_LABELS,
                ),
                latency=Histogram(
                    "serving_http_request_duration_seconds",
                    "Time from the request's arrival in Flask to its response, in seconds.",
                    _REQUEST_LABELS,
                    buckets=LATENCY_BUCKETS,
                ),
                predictions=Counter(
                    "serving_predictions",
                    "Predictions answered (replays included), by endpoint, model version and "
                    'predicted label ("" for regressions).',
                    ("endpoint", "version", "label"),
                ),
                warnings=Counter(
                    "serving_prediction_warnings",
                    "Warnings in prediction answers, by endpoint, model version, feature and "
                    'kind (out_of_range, unseen_category, unknown_field; feature "" when it '
                    "is not one of the model's).",
                    ("endpoint", "version", "feature", "kind"),
                ),
            )
    return _instruments


def init_app(app: Flask) -> RequestCounter:
    """Make the metrics (in multiprocess mode when the settings name METRICS_DIR) and return
    the counter the request log hook calls once per response."""
    directory = app.config["SETTINGS"].metrics_dir
    if directory is not None:
        _use_directory(Path(directory))
    extensions = app.extensions

    def served() -> Container[str]:
        # Read per request: under the `flask` command line the models load after this.
        registry = extensions.get("registry")
        return registry.models if registry is not None else ()

    return RequestCounter(_built(), served)


def _use_directory(directory: Path) -> None:
    """Point prometheus_client at `directory`; it must not have been imported without it."""
    if "prometheus_client" in sys.modules and _ENV not in os.environ:
        raise RuntimeError(
            f"METRICS_DIR is {directory}, but prometheus_client was imported before it was "
            f"exported as {_ENV}, so it would count in this process only; set {_ENV} before "
            "the process starts"
        )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ[_ENV] = str(directory)


class RequestCounter:
    """Counts each answered request and observes its latency, by bounded labels."""

    def __init__(self, instruments: _Instruments, endpoints: Callable[[], Container[str]]):
        self._instruments = instruments
        self._endpoints = endpoints
        # Labelled children by label values: one dict lookup per request instead of
        # prometheus_client's label checks and locks.
        self._children: dict[tuple[str, str, str, str, int], tuple[Any, Any]] = {}

    def __call__(
        self, request: Request, status: int, fields: Mapping[str, Any], seconds: float
    ) -> None:
        """Count one response; `fields` are its log line's (endpoint, model_version)."""
        rule = request.url_rule
        method = request.method
        endpoint = fields.get("endpoint")
        if not isinstance(endpoint, str) or endpoint not in self._endpoints():
            # A name a client made up: as a label it would grow without bound.
            endpoint = version = ""
        else:
            version = fields.get("model_version") or ""
        key = (
            rule.rule if rule is not None else "unmatched",
            method if method in _METHODS else "OTHER",
            endpoint,
            version,
            status,
        )
        children = self._children.get(key)
        if children is None:
            values = (*key[:4], str(status))
            children = (
                self._instruments.requests.labels(*values),
                self._instruments.latency.labels(*values),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


def label_text(label: Any) -> str:
    """A predicted label as a metric label: strings as they are, other values as JSON
    (1, true, 2.5), None (a regression) as ""."""
    if label is None:
        return ""
    return label if isinstance(label, str) else json.dumps(label)


def warning_labels(warning: Mapping[str, str]) -> tuple[str, str]:
    """(feature, kind) of one warning from serving.model.schema, e.g. ("Age", "out_of_range").

    The feature is the field without its prefix ("observation.Age" -> "Age"). An unknown
    field's name is whatever a client sent, so it is counted with feature "".
    """
    problem = warning.get("problem", "")
    for text, kind in _WARNING_KINDS:
        if text in problem:
            field = warning.get("field", "")
            return field.split(".", 1)[1] if "." in field else field, kind
    return "", "unknown_field" if problem == UNKNOWN_FIELD else "other"


# Labelled children by label values, as in RequestCounter: label lookups cost more than counts.
_prediction_children: dict[tuple[str, str, str], Any] = {}
_warning_children: dict[tuple[str, str, str, str], Any] = {}


def _prediction_child(endpoint: str, version: str, label: str) -> Any:
    key = (endpoint, version, label)
    child = _prediction_children.get(key)
    if child is None:
        child = _prediction_children[key] = _built().predictions.labels(*key)
    return child


def _warning_child(endpoint: str, version: str, feature: str, kind: str) -> Any:
    key = (endpoint, version, feature, kind)
    child = _warning_children.get(key)
    if child is None:
        child = _warning_children[key] = _built().warnings.labels(*key)
    return child


def record_prediction(
    endpoint: str, version: str, label: Any, warnings: Sequence[Mapping[str, str]] = ()
) -> None:
    """Count one prediction answered: its label (None for a regression) and its warnings."""
    _prediction_child(endpoint, version, label_text(label)).inc()
    for warning in warnings:
        _warning_child(endpoint, version, *warning_labels(warning)).inc()


def record_predictions(
    endpoint: str,
    version: str,
    labels: Sequence[Any],
    warnings: Sequence[Sequence[Mapping[str, str]]] = (),
) -> None:
    """`record_prediction` for many rows of one version at once (batch scoring): one
    increment per distinct label and warning instead of one per row."""
    for text, count in Tally(label_text(label) for label in labels).items():
        _prediction_child(endpoint, version, text).inc(count)
    kinds = Tally(warning_labels(w) for row in warnings for w in row)
    for (feature, kind), count in kinds.items():
        _warning_child(endpoint, version, feature, kind).inc(count)


class _ModelInfo:
    """The loaded and broken model versions, read from the registry at each scrape.

    Every worker forks from the master that loaded the models (preload_app), so the answering
    worker's registry speaks for all of them; reading it at scrape time needs no gauge files,
    hence no multiprocess gauge mode, and never shows a version this process does not serve.
    """

    def __init__(self, registry: Registry):
        self._registry = registry

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        loaded = GaugeMetricFamily(
            "serving_model_info",
            "1 for every model version loaded: endpoint, version, task and whether the "
            "compiled fast path scores it.",
            labels=("endpoint", "version", "task", "fast_path"),
        )
        for endpoint, versions in sorted(self._registry.models.items()):
            for version, model in sorted(versions.items()):
                fast = "true" if model.fast_path.get("enabled") else "false"
                loaded.add_metric((endpoint, version, model.task, fast), 1)
        yield loaded
        broken = GaugeMetricFamily(
            "serving_model_broken",
            "1 for every model version skipped at start because its folder is broken "
            "(SKIP_BROKEN_MODELS).",
            labels=("endpoint", "version"),
        )
        for entry in self._registry.broken:
            broken.add_metric((entry["endpoint"], entry["version"]), 1)
        yield broken


# The routes a loaded version answers predictions and ground truth on; the default endpoint
# also answers on the tutorial's own paths.
_MODEL_ROUTES = ("/api/v1/<endpoint>/predict", "/api/v1/<endpoint>/update")
_DEFAULT_ROUTES = ("/predict", "/update")
# The pid and registry generation they were declared for (a fork must again).
_zeros_declared_in: tuple[int, int] | None = None


def declare_zero_series(registry: Registry) -> None:
    """Make, at 0, the series every loaded version will count into: its predictions by
    label, and its answered (200) predict and update requests. A series that first appears
    at 1 loses that first count to Prometheus' increase() and rate(); once per process."""
    global _zeros_declared_in
    # Again in a fork, and again when published versions were added.
    if _zeros_declared_in == (os.getpid(), registry.generation):
        return
    instruments = _built()
    for endpoint, versions in registry.models.items():
        routes = _MODEL_ROUTES + (_DEFAULT_ROUTES if endpoint == registry.default_endpoint else ())
        for version, model in versions.items():
            for label in model.classes or [None]:
                _prediction_child(endpoint, version, label_text(label))
            for route in routes:
                values = (route, "POST", endpoint, version, "200")
                instruments.requests.labels(*values)
                instruments.latency.labels(*values)
    _zeros_declared_in = (os.getpid(), registry.generation)


def _constant(value: int) -> Callable[[], int]:
    """A function that returns `value`: ProcessCollector's pid, fixed per process."""
    return lambda: value


def _process_ids() -> list[int]:
    """The gunicorn master and its live workers (whose parent it is), read from /proc."""
    master = os.getppid()
    pids = [master]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        # "pid (command) state ppid ...": the command may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == master:
            pids.append(int(entry.name))
    return pids


class _Processes:
    """process_* metrics (CPU, memory, file descriptors, start time) of the gunicorn master
    and of every live worker, labelled by pid. prometheus_client's own process collector
    reads only the process it runs in, and multiprocess mode drops it altogether."""

    def collect(self) -> Any:
        from prometheus_client import ProcessCollector
        from prometheus_client.core import Metric

        merged: dict[str, Metric] = {}
        for pid in _process_ids():
            collector = ProcessCollector(pid=_constant(pid), registry=None)
            for family in collector.collect():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from merged.values()


def exposition(app: Flask, accept: str | None) -> tuple[bytes, str]:
    """The metrics in the format `accept` asks for (Prometheus text by default): every
    worker's counts, every gunicorn process's CPU and memory, and the models this process
    serves. Returns the body and content type."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = app.extensions["registry"]
    declare_zero_series(registry)
    collected = CollectorRegistry()
    directory = app.config["SETTINGS"].metrics_dir
    if directory is not None:
        MultiProcessCollector(collected, path=str(directory))
        collected.register(_Processes())
    else:
        # One process: the default registry has its process_* metrics already.
        collected.register(REGISTRY)
    collected.register(_ModelInfo(registry))
    encode, content_type = choose_encoder(accept or "")
    return encode(collected), content_type


def reset_directory(directory: Path) -> None:
    """Empty (or create) the multiprocess directory before the first worker starts: files
    left by an earlier run would add to this run's counts."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def worker_exited(pid: int, directory: Path) -> None:
    """Bookkeeping when a worker exits: its live gauges go; its counters and histograms stay
    in the directory, so nothing it counted is lost."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(directory))
