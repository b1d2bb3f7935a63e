"""Bring your own model, end to end (issue 18's whole path): a pipeline fitted in this process
on data/adult.csv is packaged with the public `package()` (skops), pushed with `flask models
push --url` to a live gunicorn of two workers, promoted through the status route, and then
served by every worker (and, on PostgreSQL, by a second replica) through /predict and through
tritonclient, without any restart; its range warnings and drift work from the profile that
`package()` wrote. These are the README's "Bring your own model" and "Publish to a running
deployment" steps, in one run."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import numpy as np
import pandas as pd
import pytest
import requests
import tritonclient.http as triton
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from serving.model.packaging import package
from tests.conftest import using_postgres
from tests.environment import clean_environ
from tests.live import GUNICORN, REPO_ROOT, eventually, gunicorn
from tests.test_v2_live import triton_inputs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOKEN = "bring-your-own-token"
ENV = {"ADMIN_TOKEN": TOKEN, "STATUS_REFRESH_SECONDS": "1"}
FLASK = GUNICORN.with_name("flask")
TARGET = "income"
# A new version of the bundled income endpoint, so that it has to be promoted.
VERSION = "3"
TOLERANCE = 1e-9  # the answers are the pipeline's own probabilities, up to float printing


def fitted(rows: int = 3000) -> tuple[object, pd.DataFrame, pd.Series]:
    """A pipeline as a data scientist writes it in a notebook, on the first rows of adult.csv."""
    train = pd.read_csv(REPO_ROOT / "data" / "adult.csv").head(rows)
    X, y = train.drop(columns=[TARGET]), train[TARGET]
    pipeline = make_pipeline(
        make_column_transformer(
            (StandardScaler(), make_column_selector(dtype_include="number")),
            (
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                make_column_selector(dtype_exclude="number"),
            ),
        ),
        LogisticRegression(max_iter=1000),
    )
    return pipeline.fit(X, y), X, y


def test_a_packaged_model_is_pushed_promoted_and_served_without_a_restart(database_url, tmp_path):
    pipeline, X, y = fitted()
    holdout = pd.read_csv(REPO_ROOT / "data" / "adult_test.csv").dropna().head(40)
    X_holdout, y_holdout = holdout.drop(columns=[TARGET]), holdout[TARGET]
    folder = package(
        pipeline,
        X,
        y,
        X_holdout,
        y_holdout,
        endpoint="income",
        version=VERSION,
        models_dir=tmp_path / "packaged",
        initial_status="testing",
        positive_class=">50K",
        format="skops",
    )
    expected = pipeline.predict_proba(X_holdout)
    positive = list(pipeline.classes_).index(">50K")

    with ExitStack() as stack:
        server = stack.enter_context(gunicorn(database_url, tmp_path, workers=2, env=ENV))
        # A second replica shares the database only on PostgreSQL (SQLite is one host's file).
        replicas = [server]
        if using_postgres():
            replicas.append(stack.enter_context(gunicorn(database_url, tmp_path, env=ENV)))

        pushed = subprocess.run(
            [str(FLASK), "--app", "app", "models", "push", str(folder), "--url", server.url],
            cwd=REPO_ROOT,
            env={**clean_environ(), "ADMIN_TOKEN": TOKEN, "DATABASE_URL": database_url},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert "published income version 3 (testing" in pushed.stdout
        promoted = requests.put(
            f"{server.url}/api/v1/income/versions/{VERSION}/status",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"status": "production", "by": "alice", "reason": "bring your own model"},
            timeout=60,
        )
        assert promoted.status_code == 200, promoted.text

        rows = X_holdout.to_dict("records")

        def predict(url: str, i: int) -> dict:
            body = {"id": f"byom-{url}-{i}", "observation": rows[i % len(rows)]}
            answer = requests.post(f"{url}/api/v1/income/predict", json=body, timeout=60)
            assert answer.status_code == 200, answer.text
            return answer.json()

        # Every worker of every replica answers with the pushed version within the refresh
        # window: concurrent requests reach both workers of each.
        for replica in replicas:
            assert eventually(
                lambda url=replica.url: all(
                    a["model_version"] == VERSION
                    for a in ThreadPoolExecutor(8).map(lambda i: predict(url, i), range(16))
                )
            ), replica.log()[-3000:]
        answers = [predict(server.url, i) for i in range(len(rows))]
        probabilities = np.array([a["proba"] for a in answers])
        np.testing.assert_allclose(probabilities, expected[:, positive], rtol=0, atol=TOLERANCE)

        # tritonclient, with its defaults, on the same version.
        client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
        assert client.is_model_ready("income", VERSION)
        frame = X_holdout.head(6).reset_index(drop=True)
        result = client.infer(
            "income", triton_inputs(frame), request_id="byom-triton", model_version=VERSION
        )
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), expected[:6], rtol=0, atol=TOLERANCE
        )

        # The profile package() wrote: an age far outside training warns, and drift compares.
        odd = {**rows[0], "age": 250}
        warned = requests.post(
            f"{server.url}/api/v1/income/predict",
            json={"id": "byom-age-250", "observation": odd},
            timeout=60,
        ).json()
        assert any("age" in str(w) and "training range" in str(w) for w in warned["warnings"])
        drift = requests.get(
            f"{server.url}/api/v1/income/drift", params={"version": VERSION}, timeout=60
        ).json()
        assert drift["rows"] > len(rows) and drift["features"], drift
        assert drift["summary"]["max_psi"] is not None, drift

    # Published to the database: a server started afterwards still serves it.
    with gunicorn(database_url, tmp_path, workers=1, env=ENV) as restarted:
        assert predict(restarted.url, 0)["model_version"] == VERSION
