"""Structured logging: one JSON object per line on stdout, and one line per request.

Every request has an id: the caller's `X-Request-ID` when it is a plain token (letters,
digits and `._:-`, at most 128), else a new random one. It is sent back in the response's
`X-Request-ID` header and appears as `request_id` on every log line written while the request
is handled, so one grep finds a request across the app's lines and a proxy's."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any

from flask import Flask, Response, g, request

from serving import metrics

# Attributes every LogRecord has; anything else was passed in `extra` and belongs in the line.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is echoed into headers and logs: only a plain token is taken as it is.
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_id_from(sent: str | None) -> str:
    """The id of a request: the caller's when it is a plain token, else a new random one."""
    if sent and _PLAIN_ID.fullmatch(sent):
        return sent
    # 128 random bits as 32 hex digits, like uuid4().hex without building a UUID.
    return os.urandom(16).hex()


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line, keeping fields passed through `extra` and the id of
    the request being handled, if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created, record.msecs),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            # Which worker wrote it: one container's stream holds every worker's lines.
            "pid": record.process,
        }
        request_id = _request_id.get()
        if request_id is not None:
            line["request_id"] = request_id
        standard = _STANDARD
        line.update({k: v for k, v in record.__dict__.items() if k not in standard})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line)


# One encoder for every line: json.dumps with an argument builds a new one per call.
_encode = json.JSONEncoder(default=str).encode
# The formatted second of the last line, kept per thread: most lines share their second.
_last_second = threading.local()


def _timestamp(created: float, msecs: float) -> str:
    """`created` as 2026-11-30T16:00:00.123Z, the second formatted once per second and thread."""
    second = int(created)
    cached = getattr(_last_second, "value", None)
    if cached is None or cached[0] != second:
        cached = _last_second.value = (
            second,
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
        )
    return f"{cached[1]}.{int(msecs):03d}Z"


# Writes up to this size reach a pipe in one piece (POSIX PIPE_BUF), so lines never interleave.
_ATOMIC_WRITE = 4096


class StdoutHandler(logging.Handler):
    """JSON lines on stdout, each written with one os.write.

    logging's usual handler lock made every request thread queue behind the one writing, and
    under load the threads convoyed on it (throughput halved in some runs). A line that fits
    in one atomic write needs no lock; longer ones, such as tracebacks, still take one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self._long_lines = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and emit without the handler-wide lock."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record as one line."""
        try:
            data = (self.format(record) + "\n").encode()
            if len(data) <= _ATOMIC_WRITE:
                os.write(sys.stdout.fileno(), data)
                return
            with self._long_lines:
                view = memoryview(data)
                while view:
                    view = view[os.write(sys.stdout.fileno(), view) :]
        except Exception:
            self.handleError(record)


def configure(level: str) -> None:
    """Send every log record to stdout as JSON, once per process."""
    root = logging.getLogger()
    if not any(isinstance(h, StdoutHandler) for h in root.handlers):
        root.addHandler(StdoutHandler())
    root.setLevel(level)


request_logger = logging.getLogger("serving.requests")


def init_app(app: Flask) -> None:
    """Time each request, count it (serving.metrics) and log it when its response is ready."""
    count_request = metrics.init_app(app)

    def start_timer() -> None:
        g.started = time.perf_counter()
        g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        _request_id.set(g.request_id)

    # First of all before_request functions: a request another one refuses is timed and
    # carries its id too.
    app.before_request_funcs.setdefault(None, []).insert(0, start_timer)

    @app.teardown_request
    def forget_request_id(_error: BaseException | None) -> None:
        _request_id.set(None)

    @app.after_request
    def log_request(response: Response) -> Response:
        started = g.get("started")
        elapsed = time.perf_counter() - started if started else 0.0
        fields = {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "latency_ms": round(elapsed * 1000, 3) if started else None,
            "endpoint": None,
            "model_version": None,
            "observation_id": None,
        }
        fields.update(g.get("log_fields", {}))
        count_request(request, response.status_code, fields, elapsed)
        if request_logger.isEnabledFor(logging.INFO):
            # Logger.info would walk the stack for the caller's file and line, which the line
            # never shows: the record is made and handled directly (handlers, filters and
            # propagation as usual).
            request_logger.handle(
                request_logger.makeRecord(
                    request_logger.name,
                    logging.INFO,
                    __file__,
                    0,
                    "request",
                    (),
                    None,
                    extra=fields,
                )
            )
        response.headers[REQUEST_ID_HEADER] = g.get("request_id") or request_id_from(None)
        return response
