"""Settings read from the environment, in this one place only."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent

N = TypeVar("N", int, float)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class SettingsError(ValueError):
    """A setting the service cannot run with; the message names the variable and the fix."""


def _number(
    environ: Mapping[str, str],
    name: str,
    default: N,
    kind: Callable[[str], N],
    minimum: float | None = None,
    maximum: float | None = None,
) -> N:
    raw = environ.get(name, "")
    if not raw.strip():
        return default
    what = "an integer" if kind is int else "a number"
    try:
        value = kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from exc
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(f"{name} must be a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum:g}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be at most {maximum:g}, got {raw!r}")
    return value


# A hundred years: longer is "forever", which 0 already says, and would overflow the date.
MAX_RETENTION_DAYS = 36_500


def _int(
    environ: Mapping[str, str],
    name: str,
    default: int,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    """An integer setting within [minimum, maximum]; anything else stops start-up."""
    return _number(environ, name, default, int, minimum, maximum)


def _float(environ: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    """A finite number setting of at least `minimum`; anything else stops start-up."""
    return _number(environ, name, default, float, minimum)


def _optional_path(environ: Mapping[str, str], *names: str) -> Path | None:
    for name in names:
        raw = environ.get(name, "").strip()
        if raw:
            return Path(raw)
    return None


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """An on/off setting that refuses anything else: a typo (`flase`) must not quietly turn
    a switch off, nor a guard."""
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false (or on/off, yes/no, 1/0), got {raw!r}")


def _choice(environ: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = environ.get(name, "").strip().upper() or default
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _database_url(environ: Mapping[str, str], default: str) -> str:
    raw = environ.get("DATABASE_URL", "").strip() or default
    if not raw.startswith(("sqlite:///", "postgres://", "postgresql://")):
        raise SettingsError(
            "DATABASE_URL must start with sqlite:///, postgres:// or postgresql://, "
            f"got {raw.split('://', 1)[0]!r}://..."
        )
    return raw


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told from outside; embedded defaults run it locally."""

    database_url: str = "sqlite:///predictions.db"
    port: int = 5000
    root_model_dir: Path = REPO_ROOT
    models_dir: Path = REPO_ROOT / "models"
    default_endpoint: str = "default"
    admin_token: str | None = None
    # Viewing the dashboard needs this token when set; unset, the read-only pages are open.
    dashboard_token: str | None = None
    # Client authentication on /predict, /update and /predict/batch (PREDICT_AUTH=on|off):
    # off by default so the tutorial works as it is; unset, on exactly when PREDICT_TOKEN is.
    predict_auth: bool = False
    # One shared client token, the simple option beside `flask keys` API keys.
    predict_token: str | None = None
    # Most rows in one /predict/batch request (MAX_BATCH_ROWS; 413 beyond): the HTTP batch,
    # not the micro-batch of concurrent requests below.
    http_batch_max_rows: int = 10_000
    max_body_bytes: int = 1_000_000
    # A batch of MAX_BATCH_ROWS rows is far larger than one observation.
    max_batch_body_bytes: int = 16_000_000
    # Most columns in a /predict/batch CSV (413 beyond): a model reads tens of columns, and
    # each column costs the parser time whatever its rows hold.
    max_batch_columns: int = 1_000
    # CPU seconds (of the request's own thread) a /predict/batch request may spend reading,
    # checking and scoring before it stores anything; past it: 413, nothing stored. 0: no limit.
    batch_cpu_seconds: float = 20.0
    log_level: str = "INFO"
    web_concurrency: int = 2
    threads: int = 16
    db_pool_size: int = 16
    db_pool_wait_seconds: float = 10.0
    # PostgreSQL: the longest one statement of a request may run, so a stuck database turns
    # into a 503 instead of a hung request. 0: no limit.
    db_statement_timeout_ms: int = 5_000
    # Batch writes (more than a few hundred rows), reports (quality, drift, traffic, shadows)
    # and migrations legitimately run longer; their transactions get this limit. 0: no limit.
    db_long_statement_timeout_ms: int = 120_000
    # PostgreSQL: how long opening one connection may take (libpq counts whole seconds, >= 2).
    db_connect_timeout_seconds: int = 3
    sqlite_busy_timeout_ms: int = 10_000
    migrate_on_start: bool = True
    # Most observations scored, or predictions committed, together by the micro-batcher
    # (BATCH_MAX_ROWS): concurrent requests grouped in one worker.
    micro_batch_max_size: int = 64
    compile_models: bool = True
    skip_broken_models: bool = False
    # The operator's sha256 pins of every model file, kept outside the model folders: a JSON
    # file's path, or the JSON itself (see serving/model/digests.py). Unset: model.json's pins only.
    model_digests: str | None = None
    status_refresh_seconds: float = 2.0
    # How often each worker folds new predictions and ground truths into the hourly rollups
    # the reports read (serving/reports/rollups.py); 0: never (`flask rollups` does it on demand).
    rollup_seconds: float = 60.0
    # Versions published to the running deployment (PUT /api/v1/<endpoint>/versions/<version>,
    # `flask models push`): the largest upload, all files together (413 beyond) ...
    max_model_upload_bytes: int = 200_000_000
    # ... and whether a published version may hold pipeline.pickle. Off: unpickling runs any
    # code the file names, so anyone with the admin token (or write access to the database)
    # could run code in every worker; pipeline.skops is always accepted.
    allow_pickle_uploads: bool = False
    # How long a lone request may wait for company in a micro-batch (BATCH_MAX_WAIT_MS).
    micro_batch_max_wait_ms: float = 0.0
    # prometheus_client's multiprocess directory: gunicorn's workers count into files there.
    metrics_dir: Path | None = None
    # How many days a prediction is kept before `flask prune-predictions` exports it to
    # Parquet and drops it (on PostgreSQL a month's partition goes once all of it is older).
    # 0: kept forever, and the command refuses to run.
    prediction_retention_days: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from environment variables, falling back to the embedded defaults."""
        env = os.environ if environ is None else environ
        defaults = cls()
        token = env.get("ADMIN_TOKEN", "").strip() or None
        predict_token = env.get("PREDICT_TOKEN", "").strip() or None
        return cls(
            database_url=_database_url(env, defaults.database_url),
            port=_int(env, "PORT", defaults.port, minimum=1, maximum=65_535),
            root_model_dir=Path(env.get("ROOT_MODEL_DIR") or defaults.root_model_dir),
            models_dir=Path(env.get("MODELS_DIR") or defaults.models_dir),
            default_endpoint=env.get("DEFAULT_ENDPOINT", "").strip() or defaults.default_endpoint,
            admin_token=token,
            dashboard_token=env.get("DASHBOARD_TOKEN", "").strip() or None,
            predict_auth=_bool(env, "PREDICT_AUTH", bool(predict_token)),
            predict_token=predict_token,
            http_batch_max_rows=_int(
                env, "MAX_BATCH_ROWS", defaults.http_batch_max_rows, minimum=1
            ),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", defaults.max_body_bytes, minimum=1),
            max_batch_body_bytes=_int(
                env, "MAX_BATCH_BODY_BYTES", defaults.max_batch_body_bytes, minimum=1
            ),
            max_batch_columns=_int(env, "MAX_BATCH_COLUMNS", defaults.max_batch_columns, minimum=1),
            batch_cpu_seconds=_float(env, "BATCH_CPU_SECONDS", defaults.batch_cpu_seconds),
            log_level=_choice(env, "LOG_LEVEL", defaults.log_level, LOG_LEVELS),
            web_concurrency=_int(env, "WEB_CONCURRENCY", defaults.web_concurrency, minimum=1),
            threads=_int(env, "THREADS", defaults.threads, minimum=1),
            db_pool_size=_int(env, "DB_POOL_SIZE", defaults.db_pool_size, minimum=1),
            db_pool_wait_seconds=_float(env, "DB_POOL_WAIT_SECONDS", defaults.db_pool_wait_seconds),
            db_statement_timeout_ms=_int(
                env, "DB_STATEMENT_TIMEOUT_MS", defaults.db_statement_timeout_ms
            ),
            db_long_statement_timeout_ms=_int(
                env, "DB_LONG_STATEMENT_TIMEOUT_MS", defaults.db_long_statement_timeout_ms
            ),
            db_connect_timeout_seconds=_int(
                env, "DB_CONNECT_TIMEOUT_SECONDS", defaults.db_connect_timeout_seconds, minimum=1
            ),
            sqlite_busy_timeout_ms=_int(
                env, "SQLITE_BUSY_TIMEOUT_MS", defaults.sqlite_busy_timeout_ms
            ),
            migrate_on_start=_bool(env, "MIGRATE_ON_START", defaults.migrate_on_start),
            micro_batch_max_size=_int(
                env, "BATCH_MAX_ROWS", defaults.micro_batch_max_size, minimum=1
            ),
            compile_models=_bool(env, "COMPILE_MODELS", defaults.compile_models),
            skip_broken_models=_bool(env, "SKIP_BROKEN_MODELS", defaults.skip_broken_models),
            model_digests=env.get("MODEL_DIGESTS", "").strip() or None,
            status_refresh_seconds=_float(
                env, "STATUS_REFRESH_SECONDS", defaults.status_refresh_seconds
            ),
            rollup_seconds=_float(env, "ROLLUP_SECONDS", defaults.rollup_seconds),
            max_model_upload_bytes=_int(
                env, "MAX_MODEL_UPLOAD_BYTES", defaults.max_model_upload_bytes, minimum=1
            ),
            allow_pickle_uploads=_bool(env, "ALLOW_PICKLE_UPLOADS", defaults.allow_pickle_uploads),
            micro_batch_max_wait_ms=_float(
                env, "BATCH_MAX_WAIT_MS", defaults.micro_batch_max_wait_ms
            ),
            metrics_dir=_optional_path(env, "METRICS_DIR", "PROMETHEUS_MULTIPROC_DIR"),
            prediction_retention_days=_int(
                env,
                "PREDICTION_RETENTION_DAYS",
                defaults.prediction_retention_days,
                maximum=MAX_RETENTION_DAYS,
            ),
        )

    def updated(self, overrides: Mapping[str, object]) -> Settings:
        """Return a copy with fields replaced; keys are field names, as tests pass them."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = dict(overrides)
        for key in ("root_model_dir", "models_dir"):
            if key in values:
                values[key] = Path(values[key])
        return replace(self, **values)
