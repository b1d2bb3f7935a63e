"""The `flask` command line starts as fast as each command allows: a command that needs no
database or model touches neither, one that needs one endpoint loads only that one, and one
that changes a row (set-status) loads none."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.environment import clean_environ

# Each test starts `flask` processes: several seconds apiece.
pytestmark = pytest.mark.slow

FLASK = [sys.executable, "-m", "flask", "--app", str(REPO_ROOT / "app.py")]
UNREACHABLE = "postgresql://nobody@127.0.0.1:9/none"


def flask(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one `flask` command in a fresh process, as an operator would."""
    env = {**clean_environ(), "DATABASE_URL": database_url, "LOG_LEVEL": "INFO"}
    return subprocess.run(
        [*FLASK, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def loaded_endpoints(output: str) -> set[str]:
    """The endpoints whose models the command's JSON log says it loaded."""
    loaded = set()
    for line in output.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("message") == "loaded model":
                loaded.add(record["endpoint"])
    return loaded


def test_routes_and_help_need_no_database_and_load_no_model(tmp_path):
    routes = flask("routes", database_url=UNREACHABLE, cwd=tmp_path)
    assert routes.returncode == 0, routes.stderr
    assert "/predict" in routes.stdout
    assert loaded_endpoints(routes.stdout + routes.stderr) == set()
    helped = flask("--help", database_url=UNREACHABLE, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "score" in helped.stdout and "set-status" in helped.stdout and "models" in helped.stdout


def test_set_status_loads_no_model(tmp_path):
    result = flask(
        "set-status", "income", "2", "staging", "--by", "ops",
        database_url=f"sqlite:///{tmp_path / 'p.db'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "income version 2: testing -> staging" in result.stdout
    # Folder names and model.json say which versions exist; no pipeline is unpickled.
    assert loaded_endpoints(result.stdout + result.stderr) == set()


def test_score_loads_only_its_endpoint(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,height\nr1,70\nr2,61\n")
    result = flask(
        "score", str(source), str(tmp_path / "out.csv"), "--endpoint", "heights", "--quiet",
        database_url=f"sqlite:///{tmp_path / 'p.db'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "scored 2 rows" in result.stdout
    assert loaded_endpoints(result.stdout + result.stderr) == {"heights"}
