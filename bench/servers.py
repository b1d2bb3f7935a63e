"""Start the two servers under gunicorn on 127.0.0.1, wait until they answer, always stop them.

Every server runs in its own session (process group), so stopping it means signalling the
group: the gunicorn master and all its workers, whatever happens to the harness.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE, OURS, FLOOR = "baseline", "ours", "floor"
SERVERS = (BASELINE, OURS, FLOOR)
WORKERS = 2
HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 15
LOG_TAIL_LINES = 40

# Process groups still running; atexit sweeps them if a context manager never got to.
_running: dict[int, subprocess.Popen] = {}


class ServerFailed(RuntimeError):
    """A server exited or never answered; the message ends with the tail of its log."""


@dataclass(frozen=True)
class Server:
    """A running server: where to send load and where its output goes."""

    name: str
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines the server printed."""
        return tail(self.log_path, lines)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def command(name: str, port: int) -> list[str]:
    """The gunicorn command line for one server, always bound to 127.0.0.1 only."""
    gunicorn = [sys.executable, "-m", "gunicorn", "--bind", f"{HOST}:{port}"]
    if name == OURS:
        # The service's own settings; --bind overrides the file's [::] or 0.0.0.0.
        return [*gunicorn, "-c", "gunicorn.conf.py", "app:app"]
    if name == FLOOR:
        # The same gunicorn settings (workers, gthread threads, the JSON log) on a Flask app
        # that does nothing: the framework's own cost.
        return [*gunicorn, "-c", "gunicorn.conf.py", "bench.floor_app:app"]
    if name == BASELINE:
        # Default sync workers as a tutorial deploys them. --preload only so the table is
        # created once: two workers racing CREATE TABLE fail on PostgreSQL.
        return [*gunicorn, "--workers", str(WORKERS), "--preload", "bench.baseline_app:app"]
    raise ValueError(f"unknown server {name!r}; expected one of {SERVERS}")


def environment(name: str, model_dir: Path, database_url: str, port: int) -> dict[str, str]:
    """The process environment: the harness's own, plus what each server reads."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url
    if name in (OURS, FLOOR):
        # The configuration users run (`make run`, the Dockerfile): INFO logs, one line per
        # request, metrics on. Only what the harness must pin is set.
        env.pop("LOG_LEVEL", None)
        env.update(
            ROOT_MODEL_DIR=str(model_dir),
            PORT=str(port),
            WEB_CONCURRENCY=str(WORKERS),
            # The baseline has no client authentication: compare like with like, whatever
            # PREDICT_TOKEN the harness's own shell may hold.
            PREDICT_AUTH="off",
        )
    else:
        env["MODEL_DIR"] = str(model_dir)
    return env


def ready_path(name: str) -> str:
    """The GET route that answers once the server can take requests."""
    return "/" if name == BASELINE else "/health"


@contextmanager
def running(name: str, model_dir: Path, database_url: str, log_dir: Path) -> Iterator[Server]:
    """Run one server until the block ends; raise ServerFailed if it does not come up."""
    port = free_port()
    log_path = Path(log_dir) / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command(name, port),
            cwd=REPO_ROOT,
            env=environment(name, model_dir, database_url, port),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _running[process.pid] = process
    server = Server(name, f"http://{HOST}:{port}", process, log_path)
    try:
        wait_until_ready(server)
        yield server
    finally:
        stop(process)


def wait_until_ready(server: Server, seconds: float = START_TIMEOUT_SECONDS) -> None:
    """Poll the server's ready route; fail with its log tail if it dies or stays silent."""
    url = server.url + ready_path(server.name)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerFailed(
                f"{server.name} server exited with status {server.process.returncode} "
                f"before answering {url}; last lines of {server.log_path.name}:\n"
                f"{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise ServerFailed(
        f"{server.name} server did not answer {url} within {seconds:.0f}s; "
        f"last lines of {server.log_path.name}:\n{server.log_tail()}"
    )


def stop(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers; safe to call twice."""
    try:
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        # Workers can outlive a master that died first; the group may still hold them.
        _signal_group(process, signal.SIGKILL)
    finally:
        _running.pop(process.pid, None)


def stop_all() -> None:
    """Stop every server still running; the last line of defence, run at interpreter exit."""
    for process in list(_running.values()):
        stop(process, timeout=5)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    # ProcessLookupError: the whole group is gone already.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a text file, or a note that it is empty."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else "(the log is empty)"


atexit.register(stop_all)
