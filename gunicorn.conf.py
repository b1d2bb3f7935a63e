"""gunicorn settings; the numbers come from serving.config like every other setting."""

import os
import secrets
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from gunicorn import glogging

from serving import logs, metrics
from serving.config import Settings, SettingsError
from serving.model import hot_loading

try:
    _settings = Settings.from_env()
except SettingsError as exc:
    # gunicorn would print a traceback of its config loader; one sentence says it all.
    sys.exit(f"configuration error: {exc}")
# Every worker counts into files in one directory (prometheus_client's multiprocess mode), which
# /metrics adds up. Without METRICS_DIR: a new one under the temporary folder, named here (an
# unguessable name, nothing created yet) and handed to the app through gunicorn's environment,
# which the master sets before it builds the app. A reload (SIGHUP) reads this file again with
# METRICS_DIR still set; the name kept in the master's own environment says the directory is
# the one made here, so the reload keeps it and on_exit still removes it.
_KEPT_NAME = "_SERVING_GUNICORN_METRICS_DIR"
_kept = os.environ.get(_KEPT_NAME)
_temporary_metrics_dir: Path | None = None
if _settings.metrics_dir is None or str(_settings.metrics_dir) == _kept:
    fresh = Path(tempfile.gettempdir()) / f"serving-metrics-{secrets.token_hex(8)}"
    _temporary_metrics_dir = Path(os.environ.setdefault(_KEPT_NAME, str(fresh)))
    raw_env = [f"METRICS_DIR={_temporary_metrics_dir}"]
_metrics_dir: Path = _settings.metrics_dir or _temporary_metrics_dir  # type: ignore[assignment]


def _dual_stack() -> bool:
    # "[::]" takes IPv4 too (as ::ffff:a.b.c.d) unless the kernel says v6only; a host or
    # container without IPv6 cannot bind it at all, and then IPv4 alone it is.
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::", 0))
            return probe.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    except OSError:
        return False


# IPv6 and IPv4 on one socket: Railway's private network is IPv6 only.
bind = f"[::]:{_settings.port}" if _dual_stack() else f"0.0.0.0:{_settings.port}"
workers = _settings.web_concurrency
# Threads let one worker hold many requests in flight while others wait on the database.
worker_class = "gthread"
threads = _settings.threads
# Models load once in the master and are shared copy-on-write by the workers.
preload_app = True
timeout = 60
# Railway's drain time (RAILWAY_DEPLOYMENT_DRAINING_SECONDS) must exceed this.
graceful_timeout = 30
keepalive = 5
# One structured line per request comes from the app; gunicorn's own access log would repeat it.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()


class JsonLogger(glogging.Logger):
    """gunicorn's own lines (boot, worker exits, timeouts) as JSON on stdout, through the
    app's handler, so one stream holds every line. gunicorn's access log stays off: the app
    writes one line per request already (and logconfig_dict would switch it on)."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.addHandler(logs.StdoutHandler())
        self.error_log.propagate = False


logger_class = JsonLogger


def on_starting(server) -> None:
    """Counts start from zero: files an earlier run left behind would add to them."""
    metrics.reset_directory(_metrics_dir)
    server.log.info("metrics directory %s", _metrics_dir)


def post_worker_init(worker) -> None:
    """In each worker, after the fork: watch the database for newly published versions and
    fold the reports' rollups (a thread started in the master would not survive the fork)."""
    # Here, not at the top: the master need not import the reports (scikit-learn's metrics).
    from serving.reports import rollups

    hot_loading.start_watching(worker.wsgi)
    rollups.start_folding(worker.wsgi)


def child_exit(server, worker) -> None:
    """A worker is gone: its live gauges go with it; what it counted stays counted."""
    metrics.worker_exited(worker.pid, _metrics_dir)


def on_exit(server) -> None:
    """Remove the metrics directory this file made (one named by METRICS_DIR stays)."""
    if _temporary_metrics_dir is not None:
        shutil.rmtree(_temporary_metrics_dir, ignore_errors=True)
