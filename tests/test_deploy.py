"""The image's install step is complete: a clean virtualenv with requirements_prod.txt alone runs
the Dockerfile's own CMD on the files the image would hold, and serves a prediction."""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.live import REPO_ROOT, gunicorn
from tests.samples import PASSENGER

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def dockerfile_instruction(name: str) -> str:
    """The last instruction of a kind, with continuation lines joined."""
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(name + " ")]
    assert lines, f"Dockerfile has no {name}"
    return lines[-1][len(name) + 1 :].strip()


def image_files(destination: Path) -> Path:
    """Copy the build context as `COPY . .` sees it through .dockerignore."""
    patterns = [
        line.strip().removeprefix("**/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignore(_folder: str, names: list[str]) -> list[str]:
        return [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]

    return Path(shutil.copytree(REPO_ROOT, destination, ignore=ignore))


@pytest.fixture(scope="module")
def prod_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("prod") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "-r",
            str(REPO_ROOT / "requirements_prod.txt"),
        ],
        check=True,
        timeout=900,
    )
    return venv


def test_dockerfile_cmd_serves_from_prod_requirements_alone(prod_venv, tmp_path):
    command = json.loads(dockerfile_instruction("CMD"))
    executable = shutil.which(command[0], path=str(prod_venv / "bin"))
    assert executable, f"{command[0]} is not installed by requirements_prod.txt"
    app_dir = image_files(tmp_path / "app")
    assert not (app_dir / "tests").exists()

    database_url = f"sqlite:///{tmp_path / 'container.db'}"
    with gunicorn(
        database_url, tmp_path, command=[executable, *command[1:]], cwd=app_dir
    ) as server:
        predicted = requests.post(
            f"{server.url}/predict",
            timeout=30,
            data=json.dumps({"id": 0, "observation": PASSENGER}),
        )
        assert predicted.status_code == 200
        assert 0 < predicted.json()["proba"] < 1
        updated = requests.post(
            f"{server.url}/update", timeout=30, data=json.dumps({"id": 0, "true_class": 0})
        )
        assert updated.status_code == 200

        healthcheck = json.loads(dockerfile_instruction("HEALTHCHECK").split("CMD", 1)[1])
        port = server.url.rsplit(":", 1)[1]
        probe = subprocess.run(
            [str(prod_venv / "bin" / "python"), *healthcheck[1:]],
            env={"PORT": port},
            timeout=30,
            capture_output=True,
        )
        assert probe.returncode == 0, probe.stderr
