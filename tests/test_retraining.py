"""Retraining from the ground truth the service collected (issue 20): traffic from
data/adult_test.csv through the real app, true incomes sent through /update, `flask retrain`
and its admin route, the gate, then shadow and A/B test with the existing machinery.

The drift is deliberate: below age 30 the true incomes are flipped, so the production
forest (trained on data/adult.csv) is now wrong for most of that band, and a refit on the
logged rows can learn it. The candidate is published to the database, not written under
MODELS_DIR: another app on the same database, built before the retrain (another worker, or
another replica), serves it with no restart, through its hot loader's check (what each
gunicorn worker runs every STATUS_REFRESH_SECONDS) or a request that names it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from serving.model import published
from serving.store.database import close_all
from serving.store.tables import PublishedVersion, ShadowVersion, VersionStatus
from tests.conftest import REPO_ROOT, make_app

TOKEN = "retrain-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ROWS = pd.read_csv(REPO_ROOT / "data" / "adult_test.csv", nrows=2000)
FLIP = {"<=50K": ">50K", ">50K": "<=50K"}

pytestmark = pytest.mark.slow


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """An income endpoint with the bundled version 1 alone; retraining writes beside it."""
    root = tmp_path / "models"
    (root / "income").mkdir(parents=True)
    (root / "income" / "1").symlink_to(REPO_ROOT / "models" / "income" / "1")
    return root


def _app(database_url: str, models_dir: Path):
    return make_app(database_url, models_dir, admin_token=TOKEN)


def drifted(frame: pd.DataFrame) -> list[str]:
    """The true incomes, flipped below age 30."""
    return [
        FLIP[income] if age < 30 else income
        for age, income in zip(frame["age"], frame["income"], strict=True)
    ]


def send(client, first: int, count: int, truths=drifted) -> list[str]:
    """Rows first..first+count of adult_test.csv as one batch of live traffic (ids
    `adult-<row>`), then each row's truth through /update. Returns the truths sent."""
    frame = ROWS.iloc[first : first + count]
    records = json.loads(frame.drop(columns=["income"]).to_json(orient="records"))
    ids = [f"adult-{n}" for n in range(first, first + count)]
    batch = [{"id": i, "observation": o} for i, o in zip(ids, records, strict=True)]
    answer = client.post("/api/v1/income/predict/batch", data=json.dumps(batch))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["counts"]["stored"] == count
    sent = truths(frame)
    for observation_id, truth in zip(ids, sent, strict=True):
        update = client.post(
            "/api/v1/income/update", data=json.dumps({"id": observation_id, "true_class": truth})
        )
        assert update.status_code == 200, update.get_data(as_text=True)
    return sent


def retrain(app, *args: str):
    return app.test_cli_runner().invoke(args=["retrain", "income", *args])


def model_json(version: str) -> dict[str, Any]:
    """A published version's model.json, as the store holds it."""
    stored = published.read("income", version)
    assert stored is not None, f"income version {version} is not published"
    return json.loads(stored.files["model.json"])


def folders(models_dir: Path) -> list[str]:
    """The version folders of income: retraining writes none."""
    return sorted(p.name for p in (models_dir / "income").iterdir() if p.is_dir())


def test_a_drifted_band_is_learnt_gated_shadowed_and_promoted_by_an_ab_test(
    database_url: str, models_dir: Path
):
    app = _app(database_url, models_dir)
    client = app.test_client()
    # Another worker (or replica) on the same database, running before the retrain.
    other = _app(database_url, models_dir)
    send(client, 0, 1000)

    done = retrain(app, "--min-labelled", "800")
    assert done.exit_code == 0, done.output
    assert "Registered income version 2 (testing), retrained from version 1" in done.output
    assert "candidate better" in done.output
    assert "It now shadows version 1." in done.output

    metadata = model_json("2")
    # Published as skops: no pickle of a retrained pipeline is ever stored.
    assert set(published.read("income", "2").files) == {
        "pipeline.skops",
        "dtypes.pickle",
        "columns.json",
        "model.json",
    }
    assert metadata["initial_status"] == "testing"
    lineage = metadata["lineage"]
    assert lineage["parent_version"] == "1"
    # The newest 20% held out, never fitted on.
    assert lineage["logged_rows"]["fit"]["rows"] == 800
    assert lineage["logged_rows"]["holdout"]["rows"] == 200
    assert lineage["logged_rows"]["fit"]["last"] <= lineage["logged_rows"]["holdout"]["first"]
    assert lineage["training_data"] == {"used": False, "reason": "not asked for"}
    gate = lineage["gate"]
    assert gate["passed"] and gate["verdict"] == "candidate better"
    assert gate["test"] == "McNemar's exact test" and gate["p_value"] < 0.05
    assert gate["holdout_rows"] == 200
    assert gate["candidate"]["accuracy"] > gate["production"]["accuracy"]
    assert gate["candidate"]["log_loss"] < gate["production"]["log_loss"]
    # The gate's figures are the held-out rows' own: production's accuracy, recomputed here.
    held = ROWS.iloc[800:1000]
    production = app.extensions["registry"].find("income", "1")
    said = production.pipeline.predict(held.drop(columns=["income"]))
    assert gate["production"]["accuracy"] == pytest.approx(
        float(np.mean(said == np.array(drifted(held)))), abs=1e-9
    )

    history = client.get("/api/v1/income/history").get_json()["history"]
    # One first row: publishing records it with the retrain's reason, nothing after it.
    [entry] = [h for h in history if h["version"] == "2"]
    assert (entry["to"], entry["by"]) == ("testing", "retrain")
    assert "retrained from version 1 on 800 logged rows" in entry["reason"]
    assert "gate: candidate better" in entry["reason"]
    assert [(s.version, s.enabled) for s in ShadowVersion.select()] == [("2", True)]

    # The same window again: nothing new, and it says so.
    again = retrain(app, "--min-labelled", "800")
    assert again.exit_code == 0, again.output
    assert "Nothing new to register: income version 2 was retrained from these same" in (
        again.output
    )
    assert folders(models_dir) == ["1"]
    assert PublishedVersion.select().count() == 1

    # The other app, never restarted, loads it on its hot loader's next check; its traffic
    # is shadowed, and the shadow is judged.
    assert other.extensions["registry"].find("income", "2") is None
    assert other.extensions["hot_loader"].check() == [("income", "2")]
    app, client = other, other.test_client()
    send(client, 1000, 400)
    # The dashboard shows where version 2 came from and its gate.
    page = client.get("/dashboard/income").get_data(as_text=True)
    assert 'id="lineage"' in page
    assert 'data-version="2" data-parent="1" data-verdict="candidate better"' in page
    accuracy = gate["candidate"]["accuracy"]
    assert f'data-side="candidate" data-metric="accuracy" data-value="{accuracy!r}"' in page

    shadow = client.get("/api/v1/income/shadows/2").get_json()
    assert shadow["labelled"] == 400
    assert shadow["verdict"]["result"] == "shadow better"

    # Then an A/B test, stopped on its verdict: the candidate is promoted.
    started = client.post(
        "/api/v1/income/ab-tests",
        headers=ADMIN,
        data=json.dumps({"version_a": "1", "version_b": "2", "split": 0.5}),
    )
    assert started.status_code == 201, started.get_data(as_text=True)
    test_id = started.get_json()["id"]
    send(client, 1400, 600)
    stopped = client.post(f"/api/v1/income/ab-tests/{test_id}/stop", headers=ADMIN)
    assert stopped.status_code == 200, stopped.get_data(as_text=True)
    summary = stopped.get_json()
    assert summary["verdict"]["result"] == "B better"
    assert summary["promoted"] and summary["winner"] == "2"
    statuses = {
        v["version"]: v["status"] for v in client.get("/api/v1/income").get_json()["versions"]
    }
    assert statuses == {"1": "testing", "2": "production"}
    close_all()


def test_too_little_labelled_data_registers_nothing_and_says_how_much(
    database_url: str, models_dir: Path
):
    app = _app(database_url, models_dir)
    client = app.test_client()
    send(client, 0, 120)
    # Predictions without ground truth do not count.
    client.post(
        "/api/v1/income/predict/batch",
        data=json.dumps(
            [
                {"id": f"unlabelled-{n}", "observation": o}
                for n, o in enumerate(
                    json.loads(
                        ROWS.iloc[200:230].drop(columns=["income"]).to_json(orient="records")
                    )
                )
            ]
        ),
    )
    sentence = "Found 120 labelled rows of 'income'; at least 500 are needed to retrain"

    done = retrain(app)
    assert done.exit_code == 1
    assert sentence in done.output

    # A window before any traffic holds nothing.
    early = retrain(app, "--until", "2000-01-01T00:00:00Z")
    assert early.exit_code == 1
    assert "Found 0 labelled rows of 'income' in [the start, 2000-01-01T00:00:00Z)" in (
        early.output
    )

    answer = client.post("/api/v1/income/retrain", headers=ADMIN, data="{}")
    assert answer.status_code == 422
    assert sentence in answer.get_json()["error"]
    assert answer.get_json()["details"] == [
        {"field": "min_labelled", "problem": "120 found, 500 needed"}
    ]
    assert folders(models_dir) == ["1"]
    assert not [r for r in VersionStatus.select() if r.version != "1" and r.endpoint == "income"]
    close_all()


def test_a_worse_candidate_is_refused_by_the_gate(database_url: str, tmp_path: Path):
    # Version 1's model.json pins another digest for its training data: asked to join it,
    # the job skips it and says why.
    root = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "models" / "income" / "1", root / "income" / "1")
    metadata = json.loads((root / "income" / "1" / "model.json").read_text())
    metadata["training"]["data_sha256"] = "0" * 64
    (root / "income" / "1" / "model.json").write_text(json.dumps(metadata))
    app = _app(database_url, root)
    client = app.test_client()
    rng = np.random.default_rng(7)
    # The older rows' truths are noise; the newest 300, held out, are the real incomes.
    send(client, 0, 600, lambda f: list(rng.choice(["<=50K", ">50K"], size=len(f))))
    send(client, 600, 200, lambda f: list(f["income"]))

    done = retrain(app, "--holdout-rows", "200", "--include-training-data")
    assert done.exit_code == 1, done.output
    assert "training data skipped: the training data data/adult.csv has sha256" in done.output
    assert "Nothing registered: the candidate retrained from version 1 is candidate worse" in (
        done.output
    )

    answer = client.post(
        "/api/v1/income/retrain", headers=ADMIN, data=json.dumps({"holdout_rows": 200})
    )
    assert answer.status_code == 409, answer.get_data(as_text=True)
    body = answer.get_json()
    assert "candidate worse" in body["error"]
    fields = [d["field"] for d in body["details"]]
    assert fields == ["gate", "gate.accuracy", "gate.roc_auc", "gate.log_loss"]
    assert folders(root) == ["1"]
    assert PublishedVersion.select().count() == 0
    assert ShadowVersion.select().count() == 0
    close_all()


def test_the_route_registers_and_starts_an_ab_test_and_refuses_bad_options(
    database_url: str, models_dir: Path
):
    app = _app(database_url, models_dir)
    client = app.test_client()
    other = _app(database_url, models_dir).test_client()
    send(client, 0, 600)
    assert client.post("/api/v1/income/retrain").status_code == 401
    for body, field in (
        ({"holdout_fraction": 1.5}, "holdout_fraction"),
        ({"holdout_fraction": 0.2, "holdout_rows": 10}, "holdout_rows"),
        ({"then": "ab:2"}, "then"),
        ({"then": "promote"}, "then"),
        ({"since": "yesterday"}, "since"),
        ({"min_labelled": "many"}, "min_labelled"),
        ({"colour": "blue"}, "colour"),
    ):
        answer = client.post("/api/v1/income/retrain", headers=ADMIN, data=json.dumps(body))
        assert answer.status_code == 422, (body, answer.get_data(as_text=True))
        assert answer.get_json()["details"][0]["field"] == field
    assert client.post("/api/v1/nowhere/retrain", headers=ADMIN).status_code == 404

    answer = client.post(
        "/api/v1/income/retrain",
        headers=ADMIN,
        data=json.dumps({"min_labelled": 500, "then": "ab:0.3", "by": "alice"}),
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    report = answer.get_json()
    assert (report["outcome"], report["version"], report["parent_version"]) == (
        "registered",
        "2",
        "1",
    )
    assert report["gate"]["passed"]
    assert folders(models_dir) == ["1"]
    # The app that started before the retrain, on the same database, answers a request
    # naming version 2 by loading it then (its hot loader has not checked since).
    observation = json.loads(ROWS.iloc[[0]].drop(columns=["income"]).to_json(orient="records"))
    named = other.post(
        "/api/v1/income/predict?version=2",
        data=json.dumps({"id": "named-2", "observation": observation[0]}),
    )
    assert named.status_code == 200, named.get_data(as_text=True)
    assert named.get_json()["model_version"] == "2"
    test = client.get(f"/api/v1/income/ab-tests/{report['then']['ab_test']}").get_json()
    assert (test["arms"]["A"]["version"], test["arms"]["B"]["version"], test["split"]) == (
        "1",
        "2",
        0.3,
    )
    # The same inputs: 200 and the version registered before.
    again = client.post("/api/v1/income/retrain", headers=ADMIN, data='{"then": "none"}')
    assert again.status_code == 200
    assert (again.get_json()["outcome"], again.get_json()["version"]) == ("already registered", "2")
    close_all()


def test_a_regression_candidate_is_gated_on_absolute_errors(tmp_path: Path):
    """No database: the gate alone, on a regression whose candidate learnt from noise."""
    from sklearn.base import clone

    from serving.model.runtime import LoadedModel
    from serving.retraining import gate
    from tests.conftest import _tiny_frame, fit_tiny_regression

    production = LoadedModel.load(fit_tiny_regression(tmp_path / "line"), "line", compile=False)
    frame = _tiny_frame(400)
    truth = list(3 * frame["x"] + frame["k"])
    noise = np.random.default_rng(5).permutation(truth)
    worse = clone(production.pipeline).fit(frame.iloc[:300], noise[:300])
    verdict = gate.judge(production, worse, frame.iloc[300:], truth[300:])
    assert verdict.test == "paired t-test on absolute error"
    assert (verdict.verdict, verdict.passed) == ("candidate worse", False)
    assert verdict.candidate["mae"] > verdict.production["mae"]
    errors = np.abs(production.pipeline.predict(frame.iloc[300:]) - np.array(truth[300:]))
    assert verdict.production["mae"] == pytest.approx(float(errors.mean()), abs=1e-12)

    same = clone(production.pipeline).fit(frame.iloc[:300], truth[:300])
    verdict = gate.judge(production, same, frame.iloc[300:], truth[300:])
    assert verdict.passed and verdict.verdict != "candidate worse"


class _Rounded:
    """A candidate that answers production's predictions moved by float rounding only, as the
    same fit does on a machine with another BLAS kernel."""

    def __init__(self, pipeline, jitter: float) -> None:
        self.pipeline, self.jitter = pipeline, jitter

    def predict(self, X):
        answers = np.asarray(self.pipeline.predict(X), dtype=np.float64)
        return answers + self.jitter * np.abs(answers)


def test_the_regression_gate_calls_rounding_differences_a_tie(tmp_path: Path):
    """Production and a candidate that differ by float rounding alone (relative 1e-13, far
    inside gate.TIE_TOLERANCE) are no different, whichever way the rounding goes; a candidate
    off by 1e-6 of the targets is still judged."""
    from serving.model.runtime import LoadedModel
    from serving.retraining import gate
    from tests.conftest import _tiny_frame, fit_tiny_regression

    production = LoadedModel.load(fit_tiny_regression(tmp_path / "line"), "line", compile=False)
    frame = _tiny_frame(400)
    truth = list(3 * frame["x"] + frame["k"])
    for jitter in (1e-13, -1e-13):
        verdict = gate.judge(production, _Rounded(production.pipeline, jitter), frame, truth)
        assert (verdict.verdict, verdict.passed) == ("no significant difference", True)
    verdict = gate.judge(production, _Rounded(production.pipeline, 1e-6), frame, truth)
    assert (verdict.verdict, verdict.passed) == ("candidate worse", False)


def unchanged(frame: pd.DataFrame) -> pd.DataFrame:
    """A step of the tests' own code: skops can save it, but never trust it."""
    return frame


def test_a_pipeline_skops_cannot_save_is_refused_with_a_sentence(database_url: str, tmp_path: Path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from tests.conftest import _tiny_frame, _tiny_pipeline, write_model

    frame = _tiny_frame(400)
    target = (frame["x"] > 0).astype(int)
    pipeline = make_pipeline(
        FunctionTransformer(unchanged), _tiny_pipeline(LogisticRegression())
    ).fit(frame, target)
    root = tmp_path / "models"
    metadata = {"name": "tiny", "version": "1", "initial_status": "production"}
    write_model(root / "tiny" / "1", pipeline, frame, metadata)
    app = _app(database_url, root)
    client = app.test_client()
    records = json.loads(frame.to_json(orient="records"))
    batch = [{"id": f"tiny-{n}", "observation": o} for n, o in enumerate(records)]
    assert client.post("/api/v1/tiny/predict/batch", data=json.dumps(batch)).status_code == 200
    for n, truth in enumerate(target):
        update = client.post(
            "/api/v1/tiny/update", data=json.dumps({"id": f"tiny-{n}", "true_class": int(truth)})
        )
        assert update.status_code == 200, update.get_data(as_text=True)

    answer = client.post("/api/v1/tiny/retrain", headers=ADMIN, data='{"min_labelled": 100}')
    assert answer.status_code == 409, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["error"].startswith(
        "The candidate of 'tiny' was not registered: a retrained version is published as "
        "pipeline.skops, and skops cannot save a pipeline holding tests.test_retraining.unchanged "
        "(only types from sklearn, numpy, scipy, custom_transformers can be trusted)"
    )
    assert body["details"] == [
        {"field": "pipeline", "problem": "holds types skops can never trust"}
    ]
    assert PublishedVersion.select().count() == 0
    assert not VersionStatus.select().where(VersionStatus.version != "1").count()
    assert sorted(p.name for p in (root / "tiny").iterdir() if p.is_dir()) == ["1"]
    close_all()
