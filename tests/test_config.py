"""Settings from the environment: embedded defaults, overrides, and clear misconfiguration."""

import pytest

from serving.config import Settings


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
