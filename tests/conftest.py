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


def make_app(database_url: str, models_dir: Path, **settings: object):
    """The real app: the bundled model as `default`, the endpoints under `models_dir`, statuses
    re-read on every request; `settings` override any other setting."""
    return create_app(
        {
            "database_url": database_url,
            "root_model_dir": REPO_ROOT,
            "models_dir": models_dir,
            "status_refresh_seconds": 0,
            **settings,
        }
    )


@pytest.fixture
def app(database_url: str, tmp_path: Path):
    """The service on the bundled Titanic model alone and a fresh database."""
    application = make_app(database_url, tmp_path / "no-more-models")
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


def _tiny_frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "k": rng.integers(0, 5, size=n),
            "color": rng.choice(["red", "green", "blue"], size=n).astype(object),
        }
    )


def _tiny_pipeline(estimator):
    return make_pipeline(
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
        estimator,
    )


def write_model(folder: Path, pipeline, frame: pd.DataFrame, metadata: dict) -> Path:
    """Write a model folder the way the training package does."""
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, folder / "pipeline.pickle")
    with (folder / "dtypes.pickle").open("wb") as handle:
        pickle.dump(frame.dtypes, handle)
    (folder / "columns.json").write_text(json.dumps(list(frame.columns)))
    (folder / "model.json").write_text(json.dumps(metadata))
    return folder


def fit_tiny_model(folder: Path, shift: float = 0.5, **metadata) -> Path:
    """A small, valid binary model: two numeric and one text input. `shift` moves its
    decision boundary, so versions fitted with different shifts answer differently."""
    frame = _tiny_frame()
    target = (frame["x"] + (frame["color"] == "red") > shift).astype(int)
    pipeline = _tiny_pipeline(LogisticRegression()).fit(frame, target)
    return write_model(folder, pipeline, frame, {"name": "tiny", "version": "1", **metadata})


def fit_tiny_multiclass(folder: Path, **metadata) -> Path:
    """A three-class model on the same inputs."""
    frame = _tiny_frame()
    target = np.where(frame["x"] < -0.5, "low", np.where(frame["x"] > 0.5, "high", "mid"))
    pipeline = _tiny_pipeline(LogisticRegression()).fit(frame, target)
    return write_model(folder, pipeline, frame, {"name": "tiers", **metadata})


def fit_tiny_regression(folder: Path, **metadata) -> Path:
    """A linear regression on the same inputs, with a training profile for range checks."""
    from sklearn.linear_model import LinearRegression

    frame = _tiny_frame()
    target = 3 * frame["x"] + frame["k"]
    pipeline = _tiny_pipeline(LinearRegression()).fit(frame, target)
    profile = {
        "x": {"kind": "numeric", "min": float(frame["x"].min()), "max": float(frame["x"].max())},
        "color": {"kind": "categorical", "frequencies": {"red": 0.3, "green": 0.3, "blue": 0.4}},
    }
    return write_model(folder, pipeline, frame, {"name": "line", "profile": profile, **metadata})


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A freshly fitted small model folder."""
    return fit_tiny_model(tmp_path / "tiny")
