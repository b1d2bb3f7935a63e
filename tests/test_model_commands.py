"""`flask models add` and `flask models check` through Flask's CLI runner, and `flask
set-status`, which changes a row without loading any model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import click
import joblib
import pandas as pd
import pytest

from tests.conftest import REPO_ROOT, fit_tiny_model, make_app
from tests.test_packaging import OLD, TARGET, unfitted


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A fitted pipeline saved with joblib, and small training and holdout CSVs."""
    folder = tmp_path_factory.mktemp("inputs")
    train = pd.read_csv(REPO_ROOT / "data" / "adult.csv", nrows=3000)
    holdout = pd.read_csv(REPO_ROOT / "data" / "adult_test.csv", nrows=1000)
    train.to_csv(folder / "train.csv", index=False)
    holdout.to_csv(folder / "holdout.csv", index=False)
    pipeline = unfitted().fit(train.drop(columns=[TARGET]), train[TARGET])
    joblib.dump(pipeline, folder / "income.joblib")
    return {
        "model": folder / "income.joblib",
        "train": folder / "train.csv",
        "holdout": folder / "holdout.csv",
    }


@pytest.fixture
def app(database_url, tmp_path):
    return make_app(database_url, tmp_path / "models")


def run(app, *args: object):
    return app.test_cli_runner().invoke(args=["models", *map(str, args)])


def add(app, files, *extra: object):
    return run(
        app, "add", files["model"], "--endpoint", "adult", "--training-data", files["train"],
        *extra,
    )  # fmt: skip


def test_add_writes_a_folder_the_service_serves(database_url, tmp_path, files, app):
    result = add(
        app, files, "--target", TARGET, "--holdout-data", files["holdout"],
        "--positive-class", ">50K", "--description", "from the shell",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / "models" / "adult" / "1"
    assert f"wrote {folder}: endpoint adult version 1, binary_classification, 14 inputs" in (
        result.output
    )
    assert "starts as production" in result.output and "holdout metrics: n 1000" in result.output
    model = json.loads((folder / "model.json").read_text())
    assert model["training"]["data"] == "train.csv" and model["training"]["data_sha256"]
    assert model["metrics"]["holdout"]["n"] == 1000 and model["description"] == "from the shell"

    checked = run(app, "check", folder)
    assert checked.exit_code == 0, checked.output
    assert f"{folder} will load: endpoint adult version 1" in checked.output
    assert "rows built from its training profile" in checked.output

    client = make_app(database_url, tmp_path / "models").test_client()
    body = client.post(
        "/api/v1/adult/predict", data=json.dumps({"id": 1, "observation": OLD})
    ).get_json()
    assert body["model_version"] == "1" and body["warnings"]

    again = add(app, files, "--format", "skops", "--status", "staging")
    assert again.exit_code == 0, again.output
    second = tmp_path / "models" / "adult" / "2"
    assert "starts as staging" in again.output and (second / "pipeline.skops").is_file()
    assert run(app, "check", second).exit_code == 0
    taken = add(app, files, "--version", "2")
    assert taken.exit_code == 1
    assert "adult/2 already exists" in taken.output


def test_add_names_what_is_wrong_with_its_inputs(tmp_path, files, app):
    wrong_target = add(app, files, "--target", "wage")
    assert wrong_target.exit_code == 1
    assert "--target 'wage' is not a column of train.csv" in wrong_target.output
    titanic = run(
        app, "add", files["model"], "--endpoint", "adult",
        "--training-data", REPO_ROOT / "data" / "titanic.csv",
    )  # fmt: skip
    assert titanic.exit_code == 1
    assert "titanic.csv lacks columns the pipeline was fitted on" in titanic.output
    no_target = add(app, files, "--holdout-data", files["holdout"])
    assert no_target.exit_code == 2 and "--holdout-data needs --target" in no_target.output
    joblib.dump(unfitted(), tmp_path / "unfitted.joblib")
    unfit = run(
        app, "add", tmp_path / "unfitted.joblib", "--endpoint", "adult",
        "--training-data", files["train"],
    )  # fmt: skip
    assert unfit.exit_code == 1 and "the pipeline is not fitted" in unfit.output
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    junk = run(
        app, "add", tmp_path / "junk.pkl", "--endpoint", "adult", "--training-data", files["train"]
    )
    assert junk.exit_code == 1 and "cannot be loaded as a joblib or pickle file" in junk.output
    assert not (tmp_path / "models").exists()


def test_parquet_needs_pyarrow(tmp_path, files, app):
    data = pd.read_csv(files["train"])
    path = tmp_path / "train.parquet"
    if importlib.util.find_spec("pyarrow") is None:
        path.write_bytes(b"PAR1")
        result = add(app, {**files, "train": path})
        assert result.exit_code == 1
        assert "reading Parquet needs pyarrow, which is not installed here" in result.output
    else:
        data.to_parquet(path)
        result = add(app, {**files, "train": path}, "--target", TARGET)
        assert result.exit_code == 0, result.output


def test_check_says_why_a_folder_would_not_load(tmp_path, app):
    folder = fit_tiny_model(tmp_path / "models" / "tiny" / "1", version="1", pin=True)
    ok = run(app, "check", folder)
    assert ok.exit_code == 0, ok.output
    # No profile: it loads, and the operator learns warnings and drift will be absent.
    assert "has no training profile" in ok.output
    (folder / "pipeline.pickle").write_bytes(b"corrupt")
    corrupt = run(app, "check", folder)
    assert corrupt.exit_code == 1
    assert "pipeline.pickle does not match its sha256 in model.json" in corrupt.output
    assert "start-up would refuse it" in corrupt.output
    other = fit_tiny_model(tmp_path / "models" / "tiny" / "2", version="3")
    mismatch = run(app, "check", other)
    assert mismatch.exit_code == 1
    assert "model.json says version '3' but the folder is named '2'" in mismatch.output
    (other / "columns.json").write_text(json.dumps(["x", "k", "colour"]))
    (other / "model.json").write_text("{}")
    columns = run(app, "check", other)
    assert columns.exit_code == 1 and "disagrees with the columns the pipeline" in columns.output


def command_line_app(database_url: str, models_dir: Path):
    """The app as `flask --app app` builds it: models load only when a command asks."""
    with click.Context(click.Command("flask")):
        return make_app(database_url, models_dir)


def test_set_status_loads_no_model(database_url, tmp_path):
    models_dir = tmp_path / "models"
    fit_tiny_model(models_dir / "tiny" / "1", version="1", initial_status="production")
    fit_tiny_model(models_dir / "tiny" / "2", version="2")
    (models_dir / "tiny" / "2" / "pipeline.pickle").write_bytes(b"corrupt")
    app = command_line_app(database_url, models_dir)
    runner = app.test_cli_runner()
    # A version whose pipeline cannot be unpickled can still be moved (archived, here).
    result = runner.invoke(args=["set-status", "tiny", "2", "archived", "--by", "ops"])
    assert result.exit_code == 0, result.output
    assert "tiny version 2: testing -> archived" in result.output
    assert "registry" not in app.extensions
    unknown = runner.invoke(args=["set-status", "tiny", "9", "staging"])
    assert unknown.exit_code == 1
    assert "Endpoint 'tiny' has no version '9'; known: ['1', '2']" in unknown.output
    nowhere = runner.invoke(args=["set-status", "nope", "1", "staging"])
    assert nowhere.exit_code == 1
    assert "There is no endpoint named 'nope'; known: ['default', 'tiny']" in nowhere.output
    refused = runner.invoke(args=["set-status", "tiny", "1", "testing"])
    assert refused.exit_code == 1 and "promote another version" in refused.output
    # The service, started afterwards on the same database, sees the change.
    fit_tiny_model(models_dir / "tiny" / "2", version="2")
    listed = make_app(database_url, models_dir).test_client().get("/api/v1/tiny").get_json()
    statuses = {v["version"]: v["status"] for v in listed["versions"]}
    assert statuses == {"1": "production", "2": "archived"}
