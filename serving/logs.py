"""Structured logging: one JSON object per line on stdout, and one line per request."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from flask import Flask, Response, g, request

# Attributes every LogRecord has; anything else was passed in `extra` and belongs in the line.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line, keeping fields passed through `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str) -> None:
    """Send every log record to stdout as JSON, once per process."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_serving", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
        handler._serving = True  # type: ignore[attr-defined]
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)


request_logger = logging.getLogger("serving.requests")


def init_app(app: Flask) -> None:
    """Time each request and log it when its response is ready."""

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def log_request(response: Response) -> Response:
        started = g.get("started")
        fields = {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3) if started else None,
            "endpoint": None,
            "model_version": None,
            "observation_id": None,
        }
        fields.update(g.get("log_fields", {}))
        request_logger.info("request", extra=fields)
        return response
