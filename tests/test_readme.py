"""The README is executable: its shell blocks run, as written and in order, against a live
gunicorn on the bundled models, from a working directory laid out like a fresh clone.

A block runs unless the line before it says `<!-- readme-test: skip (why) -->` (the quick start
itself, or commands that need a container engine). Each block is one `bash -euo pipefail`
script; curl fails the block on any HTTP error (`--fail-with-body`), so an example that
answers 403 or 409 is caught. The only rewrite is the address: `localhost:5000` becomes the
test server's. Lines `# > text` after a command are its expected output: each must appear in
what the block printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.environment import clean_environ
from tests.live import REPO_ROOT, gunicorn, linked_models

pytestmark = pytest.mark.e2e

README = REPO_ROOT / "README.md"
ADMIN_TOKEN = "dev-secret"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\b")
CURL = 'curl() { command curl --silent --show-error --fail-with-body "$@"; echo; }\n'


@dataclass(frozen=True)
class Block:
    line: int
    text: str
    skipped: bool

    @property
    def expected(self) -> list[str]:
        """The `# > ...` lines: output the block must print."""
        return [m.group(1) for m in re.finditer(r"^\s*# > (.*)$", self.text, re.MULTILINE)]


def shell_blocks(markdown: str) -> list[Block]:
    """Every ```sh block of the README, in order, with whether it is marked to skip."""
    blocks = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            start = i
            i += 1
            body = []
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            before = next((x for x in reversed(lines[:start]) if x.strip()), "")
            blocks.append(Block(start + 1, "\n".join(body) + "\n", bool(SKIP.search(before))))
        i += 1
    return blocks


def fresh_clone(tmp_path: Path) -> Path:
    """A working directory that looks like a fresh clone after `make run`: the repository's
    files (linked, never written through) and `.venv` pointing at this interpreter's
    environment. Whatever the README's commands write lands here."""
    work = tmp_path / "clone"
    work.mkdir()
    for entry in REPO_ROOT.iterdir():
        if entry.name in {".git", ".venv", "models"} or entry.name.startswith("predictions.db"):
            continue
        (work / entry.name).symlink_to(entry)
    # A version the README's commands write (`flask retrain`) lands in the clone.
    linked_models(work / "models")
    (work / ".venv").symlink_to(Path(sys.prefix))
    return work


def test_the_readme_names_every_shell_block_it_skips_with_a_reason():
    blocks = shell_blocks(README.read_text())
    assert len([b for b in blocks if not b.skipped]) >= 6
    for block in blocks:
        if block.skipped:
            assert "make run" in block.text or "docker" in block.text or "podman" in block.text, (
                f"README line {block.line}: only the quick start and container commands may skip"
            )


def test_every_shell_block_runs_as_written(database_url: str, tmp_path: Path):
    work = fresh_clone(tmp_path)
    # The server and the commands read the clone's models folder: the service's default is
    # the package's own folder, which a command must never write into.
    env = {
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "STATUS_REFRESH_SECONDS": "0.2",
        "MODELS_DIR": str(work / "models"),
    }
    with gunicorn(database_url, tmp_path, workers=2, env=env) as server:
        address = server.url.removeprefix("http://")
        port = address.rsplit(":", 1)[1]
        # As in the shell where `make run` serves: its DATABASE_URL and PORT.
        shell_env = {**clean_environ(), **env, "DATABASE_URL": database_url, "PORT": port}
        for block in shell_blocks(README.read_text()):
            if block.skipped:
                continue
            script = CURL + block.text.replace("localhost:5000", address)
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=work,
                env=shell_env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            where = f"README block at line {block.line}"
            assert done.returncode == 0, (
                f"{where} failed ({done.returncode}):\n{block.text}\n"
                f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
            )
            for line in block.expected:
                assert line in done.stdout, f"{where}: expected {line!r} in:\n{done.stdout}"
