"""Settings from the environment: embedded defaults, overrides, and clear misconfiguration."""

import subprocess
import sys
from pathlib import Path

import pytest

from serving.config import REPO_ROOT, Settings, SettingsError
from tests.environment import clean_environ


def test_defaults_serve_locally():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///predictions.db"
    assert settings.port == 5000
    assert settings.admin_token is None


def test_environment_overrides():
    settings = Settings.from_env(
        {
            "PORT": "7000",
            "DB_POOL_WAIT_SECONDS": "2.5",
            "ADMIN_TOKEN": " t ",
            "COMPILE_MODELS": "false",
            "LOG_LEVEL": "debug",
        }
    )
    assert (settings.port, settings.db_pool_wait_seconds, settings.admin_token) == (7000, 2.5, "t")
    assert settings.compile_models is False and settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "message"),
    [("PORT", "PORT must be an integer"), ("BATCH_MAX_WAIT_MS", "must be a number")],
)
def test_a_malformed_number_names_the_variable(name, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env({name: "lots"})


def test_unknown_overrides_are_refused():
    with pytest.raises(ValueError, match="unknown settings: colour"):
        Settings().updated({"colour": "blue"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MIGRATE_ON_START": "flase"}, "MIGRATE_ON_START must be true or false"),
        ({"COMPILE_MODELS": "maybe"}, "COMPILE_MODELS must be true or false"),
        ({"PREDICT_AUTH": "of"}, "PREDICT_AUTH must be true or false"),
        ({"THREADS": "-3"}, "THREADS must be at least 1, got '-3'"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be at least 1"),
        ({"PORT": "70000"}, "PORT must be at most 65535"),
        ({"DB_POOL_WAIT_SECONDS": "nan"}, "DB_POOL_WAIT_SECONDS must be a finite number"),
        ({"STATUS_REFRESH_SECONDS": "-1"}, "STATUS_REFRESH_SECONDS must be at least 0"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL must start with sqlite:///"),
        ({"PREDICTION_RETENTION_DAYS": "-7"}, "PREDICTION_RETENTION_DAYS must be at least 0"),
        (
            {"PREDICTION_RETENTION_DAYS": "99999999"},
            "PREDICTION_RETENTION_DAYS must be at most 36500",
        ),
    ],
)
def test_typos_and_out_of_range_values_are_refused(environ, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)


def test_retention_is_forever_unless_set():
    assert Settings.from_env({}).prediction_retention_days == 0
    assert Settings.from_env({"PREDICTION_RETENTION_DAYS": "90"}).prediction_retention_days == 90


def test_switches_take_the_usual_spellings():
    for word, value in [("on", True), ("YES", True), ("1", True), ("off", False), ("No", False)]:
        assert Settings.from_env({"SKIP_BROKEN_MODELS": word}).skip_broken_models is value


@pytest.mark.slow  # starts a process per command
@pytest.mark.parametrize("command", ["gunicorn", "flask"])
def test_a_bad_setting_stops_start_up_with_one_sentence(command, tmp_path):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    argv = {
        "gunicorn": [str(gunicorn), "-c", "gunicorn.conf.py", "app:app"],
        "flask": [sys.executable, "-m", "flask", "--app", "app", "routes"],
    }[command]
    env = {**clean_environ(), "THREADS": "-3", "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}"}
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "configuration error: THREADS must be at least 1, got '-3'" in done.stderr
    assert "Traceback" not in done.stderr
