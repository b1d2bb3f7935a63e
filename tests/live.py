"""Real gunicorn servers on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.environment import clean_environ

REPO_ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def linked_models(folder: Path) -> Path:
    """A models folder of its own at `folder`: a real folder per endpoint, each bundled
    version linked to the repository's. A server or command pointed at it (MODELS_DIR) reads
    the bundled models and writes any new version (`flask retrain`, the retrain route) here,
    never into the repository."""
    for endpoint in (p for p in (REPO_ROOT / "models").iterdir() if p.is_dir()):
        (folder / endpoint.name).mkdir(parents=True)
        for version in (p for p in endpoint.iterdir() if p.is_dir()):
            (folder / endpoint.name / version.name).symlink_to(version)
    return folder


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")


def wait_ready(url: str, process: subprocess.Popen, log_path: Path, seconds: float = 60) -> None:
    """Poll /health until it answers; fail with the server's log if it dies or never answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not answer within {seconds}s:\n{log_path.read_text()}")


@contextmanager
def gunicorn(
    database_url: str,
    log_dir: Path,
    workers: int = 2,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    command: Sequence[str] | None = None,
    cwd: Path = REPO_ROOT,
) -> Iterator[Server]:
    """Run `gunicorn -c gunicorn.conf.py app:app` on a free port until the block ends."""
    port = free_port()
    environment = {
        **clean_environ(),
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "WEB_CONCURRENCY": str(workers),
        "LOG_LEVEL": "INFO",
        **(env or {}),
    }
    log_path = log_dir / f"gunicorn-{port}.log"
    argv = (
        list(command)
        if command
        else [
            str(GUNICORN),
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            *extra_args,
            "app:app",
        ]
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log_path)
        yield Server(url, process, log_path)
    finally:
        stop(process)


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the server's whole process group, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def eventually(check: Callable[[], bool], seconds: float = 30) -> bool:
    """Poll `check` until it holds or `seconds` pass; its last answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return check()
