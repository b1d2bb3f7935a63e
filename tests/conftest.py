"""Fixtures around the real factory: a real SQLite file or PostgreSQL, real models."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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
from tests import environment

REPO_ROOT = Path(__file__).resolve().parent.parent
# The PostgreSQL *server* of this run (its database is only where we connect to create ours).
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
THROWAWAY_PREFIX = "sklearn_serving_test_"
_throwaway: list[str] = []  # this process's own database, once made


_running: list[pytest.Item] = []  # the test being set up, run or torn down


def using_postgres() -> bool:
    """Whether this run of the suite targets PostgreSQL. Only tests marked `database` may
    ask (the PostgreSQL pass runs only those): one that asks unmarked fails, in either pass.
    Those marked `any_database` run on a SQLite file whatever TEST_DATABASE_URL says."""
    if _running and _running[0].get_closest_marker("any_database"):
        return False
    if _running and not _running[0].get_closest_marker("database"):
        raise RuntimeError(
            f"{_running[0].nodeid} depends on the database under test but is not marked: "
            "use the database_url fixture or @pytest.mark.database, or the PostgreSQL pass "
            "will never run it"
        )
    return urlsplit(TEST_DATABASE_URL).scheme in {"postgres", "postgresql"}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _running[:] = [item]


def _server(url: str) -> peewee.PostgresqlDatabase:
    parts = urlsplit(url)
    return peewee.PostgresqlDatabase(
        parts.path.lstrip("/") or "postgres",
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
    )


def _outside_transactions(url: str, statement: str) -> None:
    # CREATE and DROP DATABASE refuse to run inside a transaction block, so this speaks to
    # the server through psycopg2 in autocommit mode rather than through peewee.
    import psycopg2

    parts = urlsplit(url)
    connection = psycopg2.connect(
        dbname=parts.path.lstrip("/") or "postgres",
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def postgres_url() -> str:
    """This run's own throwaway database, created on first use on the server that
    TEST_DATABASE_URL names and dropped when the session ends. The suite never writes to the
    database the URL names: two checkouts testing on one server never touch each other."""
    if not _throwaway:
        name = f"{THROWAWAY_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        _outside_transactions(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"')
        _throwaway.append(urlunsplit(urlsplit(TEST_DATABASE_URL)._replace(path=f"/{name}")))
    return _throwaway[0]


def drop_throwaway_database() -> None:
    """Drop this run's database, if it made one (connections still open are ended)."""
    if not _throwaway:
        return
    name = urlsplit(_throwaway.pop()).path.lstrip("/")
    _outside_transactions(TEST_DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_sessionfinish(session, exitstatus) -> None:
    drop_throwaway_database()


# What a developer's shell exported that the service would read: removed for the whole run
# (before any fixture, module-scoped ones included, starts a server), and again around every
# test, so no test sees another's leftovers. Child processes start from clean_environ().
_RESET_AT_START = environment.reset()


def pytest_report_header(config) -> str | None:
    if not _RESET_AT_START:
        return None
    return "ignored from your environment (the service would read them): " + ", ".join(
        _RESET_AT_START
    )


@pytest.fixture(autouse=True)
def _service_environment() -> Iterator[None]:
    """Every test starts with none of the variables the service reads set, and leaves none."""
    environment.reset()
    yield
    environment.reset()


def pytest_collection_modifyitems(config, items) -> None:
    """Mark `database` every test that touches the database under test: those that use the
    `database_url` fixture (directly or through another fixture), unless marked
    `any_database`, and the PostgreSQL-only ones. The PostgreSQL pass of scripts/run-tests
    runs these alone (`-m database`); the others do the same thing whatever
    TEST_DATABASE_URL says."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        # any_database: a database only because the service needs one to start; what the test
        # asserts (a document, a log line, a counter, a limit, a layout) is the same on both.
        incidental = item.get_closest_marker("any_database") is not None
        if ("database_url" in fixtures and not incidental) or item.get_closest_marker(
            "postgres_only"
        ):
            item.add_marker(pytest.mark.database)
    # Long files first: scripts/run-tests spreads files over parallel workers in this order,
    # and a minute-long file handed out last would run alone at the end while the others idle.
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def cost(item: pytest.Item) -> int:
        if item.path.name in LONGEST_FILES:
            return 0
        return 1 if item.path in slow_files else 2

    items.sort(key=cost)


# The files that take a minute or more each (README blocks, schemathesis's thousands of cases).
LONGEST_FILES = ("test_readme.py", "test_schemathesis.py")


def reset_postgres(url: str) -> None:
    """Empty this run's throwaway database: every test starts from no tables at all."""
    if not urlsplit(url).path.lstrip("/").startswith(THROWAWAY_PREFIX):
        raise RuntimeError(f"refusing to empty {url}: the suite only empties its own databases")
    with _server(url) as database:
        database.execute_sql("DROP SCHEMA public CASCADE")
        database.execute_sql("CREATE SCHEMA public")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A fresh, empty database: this run's own PostgreSQL database when TEST_DATABASE_URL
    names a server, else a SQLite file."""
    if using_postgres():
        url = postgres_url()
        reset_postgres(url)
        return url
    return f"sqlite:///{tmp_path / 'predictions.db'}"


def make_app(database_url: str, models_dir: Path, **settings: object):
    """The real app: the bundled model as `default`, the endpoints under `models_dir`, statuses
    re-read on every request; `settings` override any other setting.

    The fast path is off unless a test asks (`compile_models=True`): compiling and verifying
    it costs a second or two per app, and it gives the pipeline's own answers within 1e-6, so
    what most tests check does not depend on it. tests/test_compiled.py and test_runtime.py
    cover it (through HTTP too, both ways), and a test that looks at it turns it on."""
    return create_app(
        {
            "database_url": database_url,
            "root_model_dir": REPO_ROOT,
            "models_dir": models_dir,
            "status_refresh_seconds": 0,
            "compile_models": False,
            **settings,
        }
    )


@pytest.fixture
def app(database_url: str, tmp_path: Path):
    """The service on the bundled Titanic model alone and a fresh database."""
    application = make_app(database_url, tmp_path / "no-more-models")
    yield application
    from serving.store.database import close_all

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


def write_model(
    folder: Path, pipeline, frame: pd.DataFrame, metadata: dict, pin: bool = False
) -> Path:
    """Write a model folder the way the training package does; with `pin`, model.json pins
    every file's sha256 as training does (off by default: many tests edit a file afterwards
    to see the error that file causes, not a digest mismatch)."""
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, folder / "pipeline.pickle")
    with (folder / "dtypes.pickle").open("wb") as handle:
        pickle.dump(frame.dtypes, handle)
    (folder / "columns.json").write_text(json.dumps(list(frame.columns)))
    if pin:
        names = ("pipeline.pickle", "dtypes.pickle", "columns.json")
        metadata = {
            **metadata,
            "sha256": {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names},
        }
    (folder / "model.json").write_text(json.dumps(metadata))
    return folder


def fit_tiny_model(folder: Path, shift: float = 0.5, pin: bool = False, **metadata) -> Path:
    """A small, valid binary model: two numeric and one text input. `shift` moves its
    decision boundary, so versions fitted with different shifts answer differently; `pin`
    pins its files' digests in model.json."""
    frame = _tiny_frame()
    target = (frame["x"] + (frame["color"] == "red") > shift).astype(int)
    pipeline = _tiny_pipeline(LogisticRegression()).fit(frame, target)
    metadata = {"name": "tiny", "version": "1", **metadata}
    return write_model(folder, pipeline, frame, metadata, pin=pin)


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
