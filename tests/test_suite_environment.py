"""The suite's own guard: nothing the service reads leaks in from the developer's shell."""

from __future__ import annotations

import os
import subprocess
import sys

from serving.config import Settings
from tests.environment import SERVICE_VARIABLES, clean_environ


def test_every_test_starts_without_the_services_variables():
    assert not SERVICE_VARIABLES & set(os.environ)
    assert Settings.from_env() == Settings()


def test_a_variable_a_test_leaves_behind_is_gone_for_the_next():
    os.environ["ADMIN_TOKEN"] = "left behind on purpose"  # the autouse fixture removes it


def test_the_next_test_does_not_see_it():
    assert "ADMIN_TOKEN" not in os.environ


def test_child_processes_start_from_a_clean_base(monkeypatch):
    monkeypatch.setenv("MODEL_DIGESTS", "/nowhere.json")
    monkeypatch.setenv("PREDICT_TOKEN", "from the shell")
    env = clean_environ({"LOG_LEVEL": "DEBUG"})
    assert "MODEL_DIGESTS" not in env and "PREDICT_TOKEN" not in env
    assert env["LOG_LEVEL"] == "DEBUG" and env["PATH"] == os.environ["PATH"]
    seen = subprocess.run(
        [sys.executable, "-c", "import os; print(sorted(os.environ))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "MODEL_DIGESTS" not in seen and "PREDICT_TOKEN" not in seen
