"""Fixtures around the real factory: a real SQLite file or PostgreSQL, real models."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from urllib.parse import urlsplit

import joblib
import numpy as np
import pandas as pd
import peewee
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from serving import create_app

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()


def using_postgres() -> bool:
    """Whether this run of the suite targets PostgreSQL."""
    return urlsplit(TEST_DATABASE_URL).scheme in {"postgres", "postgresql"}


def reset_postgres(url: str) -> None:
    """Empty the test database: every test starts from no tables at all."""
    parts = urlsplit(url)
    database = peewee.PostgresqlDatabase(
        parts.path.lstrip("/"),
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
    )
    with database:
        database.execute_sql("DROP SCHEMA public CASCADE")
        database.execute_sql("CREATE SCHEMA public")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh, empty database: PostgreSQL when TEST_DATABASE_URL names one, else SQLite."""
    if using_postgres():
        reset_postgres(TEST_DATABASE_URL)
        return TEST_DATABASE_URL
    return f"sqlite:///{tmp_path / 'predictions.db'}"


@pytest.fixture
def app(database_url: str):
    """The service on the bundled Titanic model and a fresh database."""
    application = create_app({"database_url": database_url, "root_model_dir": REPO_ROOT})
    yield application
    from serving.database import close_all

    close_all()


@pytest.fixture
def client(app):
    """A Flask test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A runner for the app's `flask` commands."""
    return app.test_cli_runner()


def fit_tiny_model(folder: Path) -> Path:
    """Write a small, valid model folder: two numeric and one text input, binary target."""
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "k": rng.integers(0, 5, size=n),
            "color": rng.choice(["red", "green", "blue"], size=n).astype(object),
        }
    )
    target = (frame["x"] + (frame["color"] == "red") > 0.5).astype(int)
    pipeline = make_pipeline(
        ColumnTransformer(
            [
                ("num", SimpleImputer(), ["x", "k"]),
                (
                    "cat",
                    make_pipeline(
                        SimpleImputer(strategy="constant", fill_value="?"),
                        OneHotEncoder(handle_unknown="ignore"),
                    ),
                    ["color"],
                ),
            ]
        ),
        LogisticRegression(),
    )
    pipeline.fit(frame, target)
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, folder / "pipeline.pickle")
    with (folder / "dtypes.pickle").open("wb") as handle:
        pickle.dump(frame.dtypes, handle)
    (folder / "columns.json").write_text(json.dumps(list(frame.columns)))
    (folder / "model.json").write_text(json.dumps({"name": "tiny", "version": "1"}))
    return folder


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A freshly fitted small model folder."""
    return fit_tiny_model(tmp_path / "tiny")
