"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright, against
a live gunicorn server holding seeded predictions, ground truth, an A/B test and drifted
inputs. Every number a chart draws is checked against the JSON API's answer, and the pages
must load without a console error or a failed request. Screenshots go to artifacts/.

Without chromium (or the playwright package) these tests skip and say so; under CI
(`CI=true`) they fail instead, so a CI image missing the browser cannot pass silently.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from serving.config import Settings
from serving.store.database import open_database
from tests.live import REPO_ROOT, gunicorn

# What a browser shows: the numbers come from the queries the API answers, which
# tests/test_dashboard.py compares with the pages on both databases; the layout, the charts
# and the lineage here are the same whichever database served them, so SQLite only.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.any_database]

# Debian's package; CHROMIUM names another build of it.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# The flags the brief of the browser tests names: no sandbox in containers, no GPU, and no
# background traffic that could count as a failed request.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LAPTOP = {"width": 1366, "height": 768}
ARTIFACTS = REPO_ROOT / "artifacts"
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "dashboard.png"
ADMIN_TOKEN = "browser-admin"
DASHBOARD_TOKEN = "browser-dash"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Seeded traffic spans the last ten hours, which the dashboard shows in 15-minute buckets.
SPAN_SECONDS = 10 * 3600
BUCKET_SECONDS = 15 * 60
# Enough labelled rows per arm for the A/B verdict to mean something, and few enough to seed
# in seconds.
ADULT_ROWS = 400


def _unavailable(reason: str, fix: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}, and CI must run the browser tests: {fix}")
    pytest.skip(f"{reason}, so the browser tests are skipped: {fix}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium under Playwright; never a downloaded browser."""
    if not os.path.exists(CHROMIUM):
        _unavailable(f"chromium is not installed at {CHROMIUM}", "apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable(
            "the playwright package is not installed", "pip install -r requirements_dev.txt"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Seeded:
    """The live server and what the test put into it."""

    url: str
    created: dict[str, list[dt.datetime]] = field(default_factory=dict)
    ab_test: int = 0

    def page_url(self, path: str) -> str:
        """A dashboard address carrying the token."""
        joiner = "&" if "?" in path else "?"
        return f"{self.url}{path}{joiner}token={DASHBOARD_TOKEN}"

    def api(self, path: str) -> Any:
        """A JSON API answer."""
        response = requests.get(f"{self.url}{path}", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts; pandas writes a missing value as null."""
    return json.loads(frame.to_json(orient="records"))


def _send(session: requests.Session, url: str, endpoint: str, rows, truths, prefix: str) -> None:
    for i, (row, truth) in enumerate(zip(rows, truths, strict=True)):
        observation_id = f"{prefix}-{i}"
        answer = session.post(
            f"{url}/api/v1/{endpoint}/predict",
            data=json.dumps({"id": observation_id, "observation": row}),
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        if truth is not None:
            update = session.post(
                f"{url}/api/v1/{endpoint}/update",
                data=json.dumps({"id": observation_id, "true_class": truth}),
                timeout=30,
            )
            assert update.status_code == 200, update.text


def _backdate(database_url: str, endpoint: str, moments: list[dt.datetime]) -> None:
    """Spread an endpoint's rows over the past, in the order they were made: a dashboard of
    rows made within one second would draw a single bar."""
    database = open_database(Settings(database_url=database_url))
    with database:
        ids = [
            row[0]
            for row in database.execute_sql(
                f"SELECT id FROM prediction WHERE endpoint = {database.param} ORDER BY id",
                (endpoint,),
            ).fetchall()
        ]
        assert len(ids) == len(moments)
        with database.atomic():
            for row_id, moment in zip(ids, moments, strict=True):
                database.execute_sql(
                    f"UPDATE prediction SET created_at = {database.param} "
                    f"WHERE id = {database.param}",
                    (moment.isoformat(sep=" "), row_id),
                )


def _moments(n: int, seed: int, now: dt.datetime, newest_seconds: float = 60) -> list[dt.datetime]:
    """n instants over the last SPAN_SECONDS, oldest first, with a rush three hours ago."""
    rng = np.random.default_rng(seed)
    ages = np.concatenate(
        [
            rng.uniform(newest_seconds, SPAN_SECONDS - 60, n - n // 3 - 1),
            rng.normal(SPAN_SECONDS * 0.3, 1800, n // 3).clip(newest_seconds, SPAN_SECONDS - 60),
            [SPAN_SECONDS - 60],  # the oldest row fixes the span, hence the bucket width
        ]
    )
    return sorted(now - dt.timedelta(seconds=float(s)) for s in ages)


@pytest.fixture(scope="module")
def seeded(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """gunicorn on the bundled models (Titanic as the default endpoint, income 1 and 2,
    heights), with predictions and ground truth on each, an A/B test on income, drifted
    Titanic inputs, and the rows spread over the last ten hours. It asks for the browser
    first, so a missing one skips before a server starts."""
    tmp = tmp_path_factory.mktemp("dashboard")
    database_url = f"sqlite:///{tmp / 'predictions.db'}"
    env = {
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DASHBOARD_TOKEN": DASHBOARD_TOKEN,
        "STATUS_REFRESH_SECONDS": "0.2",
    }
    with gunicorn(database_url, tmp, workers=2, env=env) as server, requests.Session() as http:
        titanic = pd.read_csv(REPO_ROOT / "data" / "titanic.csv")
        columns = json.loads((REPO_ROOT / "columns.json").read_text())
        usual = titanic.iloc[:140]
        # Older, richer passengers boarding at Queenstown: Age, Fare and Embarked drift.
        drifted = titanic.iloc[140:200].assign(
            Age=lambda f: f["Age"].fillna(30) + 25, Fare=lambda f: f["Fare"] * 6, Embarked="Q"
        )
        frame = pd.concat([usual, drifted])
        _send(
            http,
            server.url,
            "default",
            _records(frame[columns]),
            # Every fifth passenger never gets ground truth.
            [None if i % 5 == 4 else int(s) for i, s in enumerate(frame["Survived"])],
            "titanic",
        )

        started = http.post(
            f"{server.url}/api/v1/income/ab-tests",
            headers=ADMIN,
            data=json.dumps(
                {"version_a": "1", "version_b": "2", "split": 0.5, "name": "extra trees"}
            ),
            timeout=30,
        )
        assert started.status_code == 201, started.text
        # Let every worker see the test (STATUS_REFRESH_SECONDS) before traffic arrives.
        time.sleep(1.0)
        adult = pd.read_csv(REPO_ROOT / "data" / "adult_test.csv").iloc[:ADULT_ROWS]
        income_columns = json.loads(
            (REPO_ROOT / "models" / "income" / "1" / "columns.json").read_text()
        )
        _send(
            http,
            server.url,
            "income",
            _records(adult[income_columns]),
            list(adult["income"]),
            "adult",
        )

        heights = pd.read_csv(REPO_ROOT / "data" / "heights_weights.csv")
        height_columns = json.loads(
            (REPO_ROOT / "models" / "heights" / "1" / "columns.json").read_text()
        )
        target = json.loads((REPO_ROOT / "models" / "heights" / "1" / "model.json").read_text())[
            "target"
        ]
        _send(
            http,
            server.url,
            "heights",
            _records(heights[height_columns]),
            [float(v) for v in heights[target]],
            "heights",
        )

        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        created = {
            "default": _moments(len(frame), 1, now),
            "income": _moments(len(adult), 2, now, newest_seconds=120),
            "heights": _moments(len(heights), 3, now),
        }
        for endpoint, moments in created.items():
            _backdate(database_url, endpoint, moments)
        yield Seeded(server.url, created, started.json()["id"])


@dataclass
class Watched:
    """What went wrong while pages loaded: console errors, page errors, failed requests."""

    problems: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser) -> Iterator[Any]:
    """A fresh laptop-sized page that records every console error and failed request."""
    context = browser.new_context(viewport=LAPTOP)
    tab = context.new_page()
    watched = Watched()
    tab.on(
        "console",
        lambda m: m.type == "error" and watched.problems.append(f"console: {m.text}"),
    )
    tab.on("pageerror", lambda e: watched.problems.append(f"page error: {e}"))
    tab.on("request", lambda r: watched.requested.append(r.url))
    tab.on(
        "requestfailed",
        lambda r: watched.problems.append(f"failed: {r.url} {r.failure}"),
    )
    tab.on(
        "response",
        lambda r: r.status >= 400 and watched.problems.append(f"HTTP {r.status}: {r.url}"),
    )
    tab.watched = watched
    yield tab
    context.close()


def _open(page, url: str) -> None:
    response = page.goto(url, wait_until="networkidle")
    assert response is not None and response.status == 200, url
    # Readable on a laptop: nothing wider than its screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= LAPTOP["width"]


def _clean(page) -> None:
    assert page.watched.problems == []
    # Offline: the page asked nothing of any other host.
    outside = [
        u for u in page.watched.requested if not u.startswith(("http://127.0.0.1:", "data:"))
    ]
    assert outside == []


def _shoot(page, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path


def _data(page, selector: str) -> list[dict[str, str]]:
    """The data-* attributes of every element the selector matches."""
    return page.eval_on_selector_all(selector, "els => els.map(e => ({...e.dataset}))")


def _expected_buckets(moments: list[dt.datetime]) -> Counter:
    epoch = dt.datetime(1970, 1, 1)
    counted: Counter = Counter()
    for moment in moments:
        seconds = int((moment - epoch).total_seconds()) // BUCKET_SECONDS * BUCKET_SECONDS
        counted[(epoch + dt.timedelta(seconds=seconds)).isoformat() + "Z"] += 1
    return counted


def test_overview_lists_endpoints_statuses_traffic_and_the_running_test(seeded: Seeded, page):
    _open(page, seeded.page_url("/"))
    _clean(page)
    rows = {r["endpoint"]: r for r in _data(page, "table.endpoints tbody tr")}
    assert set(rows) == {"default", "income", "heights"}
    listed = {
        e["endpoint"]: {v["version"]: v["status"] for v in e["versions"]}
        for e in seeded.api("/api/v1/endpoints")["endpoints"]
    }
    for endpoint, versions in listed.items():
        shown = _data(page, f'tr[data-endpoint="{endpoint}"] .version')
        assert {v["version"]: v["status"] for v in shown} == versions
        total = page.get_attribute(f'tr[data-endpoint="{endpoint}"] td.predictions', "data-value")
        assert int(total) == len(seeded.created[endpoint])
        bars = _data(page, f'tr[data-endpoint="{endpoint}"] svg.sparkline rect.bar')
        assert Counter({b["start"]: int(b["value"]) for b in bars}) == _expected_buckets(
            seeded.created[endpoint]
        )
    assert "15 minutes" in page.inner_text("#endpoints .lede")

    test = seeded.api(f"/api/v1/income/ab-tests/{seeded.ab_test}")
    row = page.locator(f'table.tests tr[data-test="{seeded.ab_test}"]')
    assert row.locator(".verdict").inner_text() == test["verdict"]["result"]
    requests_text = f"{test['arms']['A']['requests']} / {test['arms']['B']['requests']}"
    assert requests_text in row.inner_text()
    _shoot(page, "dashboard-overview.png")

    # The endpoint links keep the token, so a reader can click through.
    page.click('tr[data-endpoint="default"] th a')
    page.wait_for_load_state("networkidle")
    assert page.url.startswith(f"{seeded.url}/dashboard/default?token=")
    assert page.inner_text("h1").startswith("default")
    _clean(page)


def test_endpoint_page_draws_the_apis_numbers(seeded: Seeded, page):
    _open(page, seeded.page_url("/dashboard/default"))
    _clean(page)

    # Traffic: one column per version and bucket, with the seeded counts.
    assert "15 minutes" in page.inner_text("#traffic .lede")
    bars = _data(page, "#traffic svg.traffic rect.bar")
    assert {b["version"] for b in bars} == {"1"}
    assert Counter({b["start"]: int(b["value"]) for b in bars}) == _expected_buckets(
        seeded.created["default"]
    )

    # Quality: the table shows what /performance answers, exactly and rounded.
    performance = seeded.api("/api/v1/default/performance")["versions"][0]
    assert performance["labelled"] == 160
    for metric in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier"):
        cell = page.locator(f'#quality tr[data-version="1"] td[data-metric="{metric}"]')
        value = performance["metrics"][metric]
        assert float(cell.get_attribute("data-value")) == pytest.approx(value, rel=1e-12)
        assert cell.inner_text() == f"{value:.3f}"
    shown_accuracy = page.inner_text('#quality tr[data-version="1"] td[data-metric="accuracy"]')
    assert shown_accuracy == f"{performance['metrics']['accuracy']:.3f}"

    # Calibration: one point per non-empty bin, at the API's coordinates.
    points = _data(page, '#quality figure[data-version="1"] svg.calibration circle.point')
    bins = [b for b in performance["calibration"] if b["count"]]
    assert len(points) == len(bins) > 3
    for point, expected in zip(points, bins, strict=True):
        assert float(point["lower"]) == expected["lower"]
        assert int(point["count"]) == expected["count"]
        assert float(point["predicted"]) == pytest.approx(expected["mean_predicted"], rel=1e-12)
        assert float(point["observed"]) == pytest.approx(expected["observed_rate"], rel=1e-12)
    matrix = performance["confusion_matrix"]
    cells = _data(page, '#quality figure[data-version="1"] table.confusion td')
    assert [int(c["value"]) for c in cells] == [n for row in matrix["matrix"] for n in row]

    # Drift: each feature's bar is /drift's PSI, and the summary its class.
    drift = seeded.api("/api/v1/default/drift")
    drawn = {d["feature"]: d for d in _data(page, "#drift svg.psi rect.bar")}
    assert set(drawn) == {f["feature"] for f in drift["features"]}
    for feature in drift["features"]:
        assert float(drawn[feature["feature"]]["value"]) == pytest.approx(feature["psi"], 1e-12)
        assert drawn[feature["feature"]]["class"] == feature["class"]
    assert drawn["Fare"]["class"] == "major" and drawn["Embarked"]["class"] == "major"
    summary = page.locator("#drift .drift-summary")
    assert summary.get_attribute("data-class") == drift["summary"]["class"] == "major"
    assert "Fare" in summary.inner_text()
    _shoot(page, "dashboard-default.png")
    _shoot(page, "dashboard-default-screen.png", full_page=False)


def test_ab_test_panel_shows_the_verdict(seeded: Seeded, page):
    _open(page, seeded.page_url("/dashboard/income"))
    _clean(page)
    test = seeded.api(f"/api/v1/income/ab-tests/{seeded.ab_test}")
    article = page.locator(f'article.test[data-test="{seeded.ab_test}"]')
    assert article.get_attribute("data-state") == "running"
    assert article.locator(".verdict").inner_text() == test["verdict"]["result"]
    assert "extra trees" in article.locator("h3").inner_text()
    for arm in ("A", "B"):
        figures = test["arms"][arm]
        requests_cell = article.locator(f'td[data-arm="{arm}"][data-metric="requests"]')
        assert int(requests_cell.get_attribute("data-value")) == figures["requests"]
        accuracy = article.locator(f'td[data-arm="{arm}"][data-metric="accuracy"]')
        estimate = figures["metrics"]["accuracy"]
        assert float(accuracy.get_attribute("data-value")) == pytest.approx(estimate["value"])
        assert accuracy.inner_text().startswith(f"{estimate['value']:.3f}")
        point = _data(page, f'article.test svg.intervals circle[data-arm="{arm}"]')
        assert float(point[0]["value"]) == pytest.approx(estimate["value"])
        assert float(point[0]["low"]) == pytest.approx(estimate["low"])
    assert sum(test["arms"][a]["requests"] for a in "AB") == ADULT_ROWS
    p_value = test["verdict"]["p_value"]
    if p_value is not None:
        assert article.locator(".p-value").inner_text() == f"{p_value:.3g}"
    _shoot(page, "dashboard-income.png")

    # Regression endpoints show their own metrics and no calibration.
    _open(page, seeded.page_url("/dashboard/heights"))
    _clean(page)
    performance = seeded.api("/api/v1/heights/performance")["versions"][0]
    mae = page.locator('#quality tr[data-version="1"] td[data-metric="mae"]')
    assert mae.inner_text() == f"{performance['metrics']['mae']:.3f}"
    assert page.locator("svg.calibration").count() == 0
    _shoot(page, "dashboard-heights.png")


def test_without_the_token_the_page_says_how_to_get_in(seeded: Seeded, page):
    response = page.goto(f"{seeded.url}/dashboard/default", wait_until="networkidle")
    assert response is not None and response.status == 401
    assert "DASHBOARD_TOKEN" in page.inner_text(".error-message")
    # The refusal itself is the only failure (the browser logs it to the console too): its
    # stylesheet still loads.
    assert page.watched.problems == [
        f"HTTP 401: {seeded.url}/dashboard/default",
        "console: Failed to load resource: the server responded with a status of 401 "
        "(UNAUTHORIZED)",
    ]
    assert page.eval_on_selector("body", "b => getComputedStyle(b).backgroundColor") != (
        "rgba(0, 0, 0, 0)"
    )


def test_docs_screenshot(seeded: Seeded, page):
    """The README's picture: the income endpoint (two versions, an A/B test) at laptop width.
    It lands in artifacts/; with UPDATE_DOCS_SCREENSHOT=1 it also replaces docs/dashboard.png,
    which is committed, so ordinary runs leave the tree clean."""
    _open(page, seeded.page_url("/dashboard/income"))
    _clean(page)
    shot = _shoot(page, "dashboard.png")
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)


@pytest.fixture
def retrained(browser, tmp_path: Path) -> Iterator[str]:
    """gunicorn on an income endpoint whose version 2 `flask retrain` made from logged,
    labelled traffic (true incomes flipped below age 30, so the refit wins its gate). The
    traffic is seeded in-process before the server starts; the retrain runs while it serves,
    and the server's worker serves version 2 from its hot loader's next check, no restart."""
    from serving.store.database import close_all
    from tests.conftest import make_app

    database_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    models = tmp_path / "models"
    (models / "income").mkdir(parents=True)
    (models / "income" / "1").symlink_to(REPO_ROOT / "models" / "income" / "1")
    app = make_app(database_url, models)
    client = app.test_client()
    adult = pd.read_csv(REPO_ROOT / "data" / "adult_test.csv").iloc[: ADULT_ROWS + 200]
    ids = [f"adult-{n}" for n in range(len(adult))]
    rows = _records(adult.drop(columns=["income"]))
    answer = client.post(
        "/api/v1/income/predict/batch",
        data=json.dumps([{"id": i, "observation": o} for i, o in zip(ids, rows, strict=True)]),
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    flip = {"<=50K": ">50K", ">50K": "<=50K"}
    for i, age, income in zip(ids, adult["age"], adult["income"], strict=True):
        truth = flip[income] if age < 30 else income
        client.post("/api/v1/income/update", data=json.dumps({"id": i, "true_class": truth}))
    env = {
        "DASHBOARD_TOKEN": DASHBOARD_TOKEN,
        "MODELS_DIR": str(models),
        "STATUS_REFRESH_SECONDS": "1",
    }
    with gunicorn(database_url, tmp_path, workers=1, env=env) as server:
        served = requests.get(f"{server.url}/api/v1/income", timeout=30).json()["versions"]
        assert [v["version"] for v in served] == ["1"]
        done = app.test_cli_runner().invoke(
            args=["retrain", "income", "--min-labelled", "300", "--then", "none"]
        )
        assert done.exit_code == 0, done.output
        close_all()
        deadline = time.monotonic() + 30
        while "2" not in [v["version"] for v in served]:
            assert time.monotonic() < deadline, "the server never loaded version 2"
            time.sleep(0.5)
            served = requests.get(f"{server.url}/api/v1/income", timeout=30).json()["versions"]
        yield server.url


def test_a_retrained_versions_lineage_and_gate_are_on_its_page(retrained: str, page):
    _open(page, f"{retrained}/dashboard/income?token={DASHBOARD_TOKEN}")
    _clean(page)
    response = requests.get(f"{retrained}/api/v1/income/key/lineage?version=2", timeout=30)
    lineage = response.json()["value"]
    gate = lineage["gate"]
    block = page.locator('#lineage article.lineage[data-version="2"]')
    assert block.get_attribute("data-parent") == "1"
    assert block.get_attribute("data-verdict") == gate["verdict"] == "candidate better"
    assert block.locator(".verdict").inner_text() == "candidate better"
    fit_rows = block.locator(".fit-rows").get_attribute("data-value")
    assert int(fit_rows) == lineage["logged_rows"]["fit"]["rows"]
    assert int(block.locator(".holdout-rows").get_attribute("data-value")) == gate["holdout_rows"]
    for metric in ("accuracy", "roc_auc", "log_loss"):
        for side in ("candidate", "production"):
            cell = block.locator(f'td[data-side="{side}"][data-metric="{metric}"]')
            assert float(cell.get_attribute("data-value")) == pytest.approx(
                gate[side][metric], rel=1e-12
            )
            assert cell.inner_text() == f"{gate[side][metric]:.3f}"
    assert block.locator(".p-value").inner_text() == f"{gate['p_value']:.3g}"
    # Version 1, not retrained, has no block.
    assert page.locator('#lineage article.lineage[data-version="1"]').count() == 0
    _shoot(page, "dashboard-lineage.png")
