"""The two batches have names that say which is which inside the code, while the environment
variables users set stay exactly as they were."""

from __future__ import annotations

from serving.config import Settings


def test_the_http_batch_and_the_micro_batch_read_the_same_variables_as_before():
    settings = Settings.from_env(
        {"MAX_BATCH_ROWS": "5000", "BATCH_MAX_ROWS": "32", "BATCH_MAX_WAIT_MS": "1.5"}
    )
    assert settings.http_batch_max_rows == 5000  # /predict/batch's limit
    assert settings.micro_batch_max_size == 32  # concurrent requests grouped in a worker
    assert settings.micro_batch_max_wait_ms == 1.5


def test_defaults_are_unchanged():
    settings = Settings.from_env({})
    assert (settings.http_batch_max_rows, settings.micro_batch_max_size) == (10_000, 64)
    assert settings.micro_batch_max_wait_ms == 0.0
