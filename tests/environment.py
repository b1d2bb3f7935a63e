"""The environment the service reads, kept out of the suite: a developer's exported
ADMIN_TOKEN, DATABASE_URL or MODEL_DIGESTS must not change what a test tests.

The names come from serving/config.py itself (every variable `Settings.from_env` looks up),
plus what gunicorn, Flask's command line and prometheus_client read on their own, so a new
setting is reset without anyone listing it here. conftest.py removes them from os.environ at
the start of the session and around every test; child processes (gunicorn, `flask`, the
notebooks) start from `clean_environ()`, so the same holds for them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from serving.config import Settings


class _Recording(dict[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def get(self, key, default=None):  # type: ignore[override]
        self.names.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.names.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.names.add(key)
        return super().__contains__(key)


def _settings_variables() -> frozenset[str]:
    recording = _Recording()
    Settings.from_env(recording)
    return frozenset(recording.names)


# Read outside serving/config.py: gunicorn.conf.py's own name for its metrics directory,
# gunicorn's extra command line, Flask's command line.
_OTHERS = frozenset(
    {
        "_SERVING_GUNICORN_METRICS_DIR",
        "PROMETHEUS_MULTIPROC_DIR",
        "prometheus_multiproc_dir",
        "GUNICORN_CMD_ARGS",
        "FLASK_APP",
        "FLASK_DEBUG",
        "FLASK_ENV",
        "FLASK_RUN_HOST",
        "FLASK_RUN_PORT",
    }
)
SERVICE_VARIABLES = _settings_variables() | _OTHERS
# Should config.py stop reading these the way this module sees, fail loudly, not reset nothing.
assert {"ADMIN_TOKEN", "PREDICT_TOKEN", "DATABASE_URL", "MODEL_DIGESTS", "METRICS_DIR"} <= (
    SERVICE_VARIABLES
), sorted(SERVICE_VARIABLES)


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without anything the service reads, plus `extra`: a child process's base."""
    base = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    return {**base, **(extra or {})}


def reset() -> list[str]:
    """Remove every service variable from os.environ; return the names that were set."""
    removed = sorted(name for name in SERVICE_VARIABLES if name in os.environ)
    for name in removed:
        del os.environ[name]
    return removed
