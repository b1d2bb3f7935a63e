"""Which code was measured: the git revision, and a fingerprint of the files the servers run.

The fingerprint is taken before every cell, so a run during which someone edits the service
says which cells measured which code instead of silently mixing them.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from bench.servers import REPO_ROOT

# What `gunicorn app:app` imports; edits anywhere else do not change what is measured.
SERVED = ("app.py", "gunicorn.conf.py", "serving", "custom_transformers", "bench/baseline_app.py")


def fingerprint(root: Path = REPO_ROOT) -> str:
    """A short hash of the served Python files' paths and contents, committed or not."""
    digest = hashlib.sha256()
    for path in _served_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def git_revision(root: Path = REPO_ROOT) -> str:
    """The commit, and how many paths differ from it, or a note that this is no checkout."""

    def git(*args: str) -> str:
        completed = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False
        )
        return completed.stdout.strip() if completed.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "not a git checkout"
    changed = len(git("status", "--porcelain").splitlines())
    # The service may be measured with uncommitted edits; say so next to the commit.
    return f"git {commit}" + (f" plus {changed} uncommitted or untracked paths" if changed else "")


def _served_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for name in SERVED:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
    return sorted(files)
