"""Run the notebooks headless, the way a reader would, in a fresh folder."""

import json
import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import joblib
import nbformat
import numpy as np
import pandas as pd
import pytest
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from tests.conftest import make_app
from tests.environment import clean_environ
from tests.samples import PASSENGER, RETRAIN_TOLERANCE

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_FILES = ["pipeline.pickle", "dtypes.pickle", "columns.json", "model.json"]
NOTEBOOKS = ["train.ipynb", "deserialize.ipynb", "bring_your_own_model.ipynb"]

pytestmark = pytest.mark.slow


class ThisPythonKernelManager(AsyncKernelManager):
    """Start ipykernel with the interpreter running the tests, whatever kernelspecs exist."""

    @property
    def kernel_spec(self) -> KernelSpec:
        # A user-wide "python3" kernelspec may point at another interpreter without our packages.
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        return KernelSpec(argv=argv, name="python3", language="python", display_name="Python 3")


def run_notebook(name: str, workdir: Path) -> nbformat.NotebookNode:
    """Execute a repository notebook with its kernel in workdir and return the executed copy."""
    notebook = nbformat.read(REPO_ROOT / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_manager_class=ThisPythonKernelManager,
        resources={"metadata": {"path": str(workdir)}},
    )
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    client.execute(env={**clean_environ(), "PYTHONPATH": pythonpath})
    nbformat.write(notebook, workdir / f"executed-{name}")
    return notebook


def stream_text(notebook: nbformat.NotebookNode) -> str:
    """Return everything the notebook's cells printed."""
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def survival_proba(folder: Path, X: pd.DataFrame) -> np.ndarray:
    """Return the positive-class probabilities of the pipeline stored in folder."""
    pipeline = joblib.load(folder / "pipeline.pickle")
    return pipeline.predict_proba(X)[:, list(pipeline.classes_).index(1)]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_have_no_outputs(name):
    notebook = nbformat.read(REPO_ROOT / name, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None


def test_train_notebook_rebuilds_the_committed_model(tmp_path):
    notebook = run_notebook("train.ipynb", tmp_path)
    for name in MODEL_FILES:
        assert (tmp_path / name).is_file(), name
    X = pd.read_csv(REPO_ROOT / "data" / "titanic.csv")[
        json.loads((tmp_path / "columns.json").read_text())
    ]
    diff = np.abs(survival_proba(tmp_path, X) - survival_proba(REPO_ROOT, X))
    assert diff.max() <= RETRAIN_TOLERANCE
    model = json.loads((tmp_path / "model.json").read_text())
    assert f"accuracy: {model['metrics']['holdout']['accuracy']:.4f}" in stream_text(notebook)


def test_deserialize_notebook_predicts_with_the_committed_model(tmp_path):
    for name in MODEL_FILES:
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    notebook = run_notebook("deserialize.ipynb", tmp_path)
    printed = re.search(r"probability of survival: (\d\.\d{4})", stream_text(notebook))
    assert printed is not None
    with open(REPO_ROOT / "dtypes.pickle", "rb") as handle:
        dtypes = pickle.load(handle)
    observation = {**PASSENGER, "Age": np.nan, "Cabin": np.nan}
    row = pd.DataFrame([observation], columns=list(dtypes.index)).astype(dtypes)
    assert printed.group(1) == f"{survival_proba(REPO_ROOT, row)[0]:.4f}"


def test_bring_your_own_model_notebook_packages_a_folder_the_service_serves(database_url, tmp_path):
    # The reader runs it from the repository root: data/ beside it, models/ written there.
    (tmp_path / "data").symlink_to(REPO_ROOT / "data")
    notebook = run_notebook("bring_your_own_model.ipynb", tmp_path)
    folder = tmp_path / "models" / "adult" / "1"
    assert "wrote models/adult/1" in stream_text(notebook)
    model = json.loads((folder / "model.json").read_text())
    assert f"accuracy: {model['metrics']['holdout']['accuracy']:.4f}" in stream_text(notebook)
    client = make_app(database_url, tmp_path / "models").test_client()
    observation = pd.read_csv(REPO_ROOT / "data" / "adult_test.csv", nrows=1)
    row = json.loads(observation.drop(columns=["income"]).to_json(orient="records"))[0]
    answer = client.post(
        "/api/v1/adult/predict", data=json.dumps({"id": 1, "observation": {**row, "age": 250}})
    )
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["model_version"] == "1"
    assert any("age" in str(w) for w in answer.get_json()["warnings"])
