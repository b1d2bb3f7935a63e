"""The dashboard on the server side: pages render from an empty or a busy database, show the
JSON API's numbers, need DASHBOARD_TOKEN when it is set, answer errors as pages, fetch nothing
from elsewhere; and the traffic query counts right on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape

from serving.config import Settings
from serving.dashboard import charts
from serving.model.profile import profile_frame
from serving.reports.traffic import (
    DAY,
    HOUR,
    MAX_BUCKETS,
    MIN_BUCKETS,
    MINUTE,
    choose_width,
    traffic,
)
from serving.store.tables import Prediction
from tests.conftest import (
    REPO_ROOT,
    _tiny_frame,
    fit_tiny_model,
    fit_tiny_multiclass,
    fit_tiny_regression,
    make_app,
)
from tests.samples import PASSENGER

ADMIN_TOKEN = "admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DASHBOARD_TOKEN = "dash-token"
VOID = {"meta", "link", "br", "hr", "img", "input", "col", "wbr", "source"}


@dataclass
class Element:
    """One start tag of a page, with its attributes and those of its ancestors."""

    tag: str
    attrs: dict[str, str]
    ancestors: list[tuple[str, dict[str, str]]]

    def inside(self, tag: str, **attrs: str) -> bool:
        """Whether an ancestor is a `tag` with these attributes (data_x means data-x)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return any(
            t == tag and all(a.get(k) == v for k, v in wanted.items()) for t, a in self.ancestors
        )


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self._open: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.elements.append(Element(tag, values, list(self._open)))
        if tag not in VOID:
            self._open.append((tag, values))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}, list(self._open)))

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                del self._open[index:]
                return


def parse(html: str) -> list[Element]:
    """Every element of a page, in document order."""
    page = _Page()
    page.feed(html)
    page.close()
    return page.elements


def find(elements: list[Element], tag: str, cls: str | None = None, **attrs: str) -> list[Element]:
    """Elements of a tag, with a class among their classes and these attributes."""
    wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
    return [
        e
        for e in elements
        if e.tag == tag
        and (cls is None or cls in e.attrs.get("class", "").split())
        and all(e.attrs.get(k) == v for k, v in wanted.items())
    ]


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """tiny 1 (production) and 2 (testing) with a training profile, a regression, and a
    three-class model; the bundled Titanic model is the default endpoint."""
    root = tmp_path / "models"
    profile = profile_frame(_tiny_frame())
    for version, shift, status in (("1", 0.5, "production"), ("2", 1.5, "testing")):
        fit_tiny_model(
            root / "tiny" / version,
            shift=shift,
            version=version,
            initial_status=status,
            profile=profile,
            metrics={"holdout": {"accuracy": 0.9, "n": 40}},
        )
    fit_tiny_regression(root / "line" / "1", version="1", initial_status="production")
    fit_tiny_multiclass(root / "tiers" / "1", version="1", initial_status="production")
    return root


def dashboard_app(database_url: str, models_dir: Path, **overrides):
    """The real app on these models, with an admin token."""
    return make_app(database_url, models_dir, admin_token=ADMIN_TOKEN, **overrides)


@pytest.fixture
def app(database_url: str, models_dir: Path):
    """The app of dashboard_app, its connections closed afterwards."""
    application = dashboard_app(database_url, models_dir)
    yield application
    from serving.store.database import close_all

    close_all()


def page(client, path: str, status: int = 200, **kwargs) -> str:
    """A page's HTML, checking its status and that it is HTML."""
    response = client.get(path, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def predict(
    client, endpoint: str, observation_id: str, observation: dict, truth=None, query: str = ""
) -> dict:
    """One prediction through the API and, when `truth` is given, its ground truth."""
    answer = client.post(
        f"/api/v1/{endpoint}/predict{query}",
        data=json.dumps({"id": observation_id, "observation": observation}),
    )
    assert answer.status_code == 200, answer.get_json()
    if truth is not None:
        update = client.post(
            f"/api/v1/{endpoint}/update",
            data=json.dumps({"id": observation_id, "true_class": truth}),
        )
        assert update.status_code == 200, update.get_json()
    return answer.get_json()


def tiny_rows(n: int, seed: int = 3, drift: float = 0.0) -> list[dict]:
    """Observations for the tiny models; `drift` moves x away from its training values."""
    rng = np.random.default_rng(seed)
    return [
        {
            "x": round(float(rng.normal() + drift), 3),
            "k": int(rng.integers(0, 5)),
            "color": str(rng.choice(["red", "green", "blue"])),
        }
        for _ in range(n)
    ]


# Pages from an empty database.


def test_an_empty_database_renders_every_page(client):
    html = page(client, "/")
    elements = parse(html)
    rows = {e.attrs["data-endpoint"]: e for e in find(elements, "tr") if "data-endpoint" in e.attrs}
    assert set(rows) == {"default", "tiny", "line", "tiers"}
    assert [e.attrs["data-value"] for e in find(elements, "td", "predictions")] == ["0"] * 4
    assert find(elements, "rect", "bar") == []
    assert len(find(elements, "svg", "sparkline")) == 4
    assert "No A/B test is running." in html
    statuses = {
        (e.attrs["data-version"], e.attrs["data-status"])
        for e in find(elements, "span", "version")
        if e.inside("tr", data_endpoint="tiny")
    }
    assert statuses == {("1", "production"), ("2", "testing")}

    for endpoint in ("default", "tiny", "line", "tiers"):
        html = page(client, f"/dashboard/{endpoint}")
        elements = parse(html)
        assert find(elements, "svg", "traffic")
        assert find(elements, "p", "drift-summary")[0].attrs["data-class"] == "no_data"
        assert f"No A/B test has run on {endpoint}." in html
        assert find(elements, "svg", "calibration") == []
    assert "no labelled predictions yet" in page(client, "/dashboard/tiny")


# Pages with data: the numbers are the API's.


def test_the_endpoint_page_shows_the_apis_numbers(client):
    rows = tiny_rows(120) + tiny_rows(60, seed=4, drift=2.5)
    for i, row in enumerate(rows):
        truth = int(row["x"] + (row["color"] == "red") > 0.8) if i % 4 else None
        predict(client, "tiny", f"t{i}", row, truth)
    for i in range(5):
        predict(client, "tiny", f"v2-{i}", rows[i], 1, query="?version=2")

    elements = parse(page(client, "/dashboard/tiny"))
    performance = client.get("/api/v1/tiny/performance").get_json()
    for measured in performance["versions"]:
        version = measured["version"]
        cells = {
            e.attrs["data-metric"]: e
            for e in find(elements, "td")
            if "data-metric" in e.attrs and e.inside("tr", data_version=version)
        }
        assert set(cells) == {
            "accuracy",
            "precision",
            "recall",
            "f1",
            "roc_auc",
            "log_loss",
            "brier",
        }
        for name, cell in cells.items():
            value = measured["metrics"][name]
            assert cell.attrs["data-value"] == ("" if value is None else repr(value))
        points = [
            e for e in find(elements, "circle", "point") if e.inside("figure", data_version=version)
        ]
        bins = [b for b in measured["calibration"] if b["count"]]
        assert [int(p.attrs["data-count"]) for p in points] == [b["count"] for b in bins]
        assert [float(p.attrs["data-observed"]) for p in points] == [
            b["observed_rate"] for b in bins
        ]
    assert performance["versions"][0]["labelled"] == 135

    drift = client.get("/api/v1/tiny/drift").get_json()
    bars = {
        e.attrs["data-feature"]: e.attrs
        for e in find(elements, "rect", "bar")
        if e.inside("svg", **{"class": "chart psi"})
    }
    assert {f: float(a["data-value"]) for f, a in bars.items()} == {
        f["feature"]: f["psi"] for f in drift["features"]
    }
    assert bars["x"]["data-class"] == "major"
    summary = find(elements, "p", "drift-summary")[0]
    assert summary.attrs["data-class"] == drift["summary"]["class"] == "major"

    # Traffic: every prediction of each version is in a bar of its color.
    counted = Counter()
    for bar in find(elements, "rect", "bar"):
        if bar.inside("svg", **{"class": "chart traffic"}):
            counted[bar.attrs["data-version"]] += int(bar.attrs["data-value"])
    assert counted == {"1": 180, "2": 5}


def test_drift_follows_the_chosen_version_and_window(client):
    for i, row in enumerate(tiny_rows(30)):
        predict(client, "tiny", f"a{i}", row)
    html = page(client, "/dashboard/tiny?version=2&window=10m")
    assert "Drift of v2 against its training profile" in html
    assert find(parse(html), "p", "drift-summary")[0].attrs["data-class"] == "no_data"
    # The version links keep the window.
    assert '/dashboard/tiny?version=1&amp;window=10m#drift"' in html


def test_an_ab_test_shows_its_verdict_everywhere(client):
    started = client.post(
        "/api/v1/tiny/ab-tests",
        headers=ADMIN,
        data=json.dumps({"version_a": "1", "version_b": "2", "split": 0.5, "name": "<shift>"}),
    )
    assert started.status_code == 201, started.get_json()
    test_id = started.get_json()["id"]
    for i, row in enumerate(tiny_rows(80)):
        predict(client, "tiny", f"ab{i}", row, int(row["x"] > 0))
    test = client.get(f"/api/v1/tiny/ab-tests/{test_id}").get_json()

    overview = page(client, "/")
    row = [
        e
        for e in find(parse(overview), "span", "verdict")
        if e.inside("tr", data_test=str(test_id))
    ]
    assert row[0].attrs["data-value"] == test["verdict"]["result"]
    # Names come from people: escaped, never markup.
    assert "&lt;shift&gt;" in overview and "<shift>" not in overview

    elements = parse(page(client, "/dashboard/tiny"))
    article = [e for e in find(elements, "article", "test") if e.attrs["data-test"] == str(test_id)]
    assert article[0].attrs["data-state"] == "running"
    verdicts = [e for e in find(elements, "span", "verdict") if e.inside("article")]
    assert verdicts[0].attrs["data-value"] == test["verdict"]["result"]
    for arm in ("A", "B"):
        [cell] = find(elements, "td", data_arm=arm, data_metric="requests")
        assert int(cell.attrs["data-value"]) == test["arms"][arm]["requests"]
        [accuracy] = find(elements, "td", data_arm=arm, data_metric="accuracy")
        assert accuracy.attrs["data-value"] == repr(
            test["arms"][arm]["metrics"]["accuracy"]["value"]
        )
    assert sum(test["arms"][a]["requests"] for a in "AB") == 80

    stopped = client.post(
        f"/api/v1/tiny/ab-tests/{test_id}/stop", headers=ADMIN, data=json.dumps({"promote": False})
    )
    assert stopped.status_code == 200
    assert "No A/B test is running." in page(client, "/")
    elements = parse(page(client, "/dashboard/tiny"))
    assert find(elements, "article", "test")[0].attrs["data-state"] == "stopped"


def test_a_panel_that_cannot_be_built_says_why_and_the_page_still_renders(
    client, database_url, models_dir, tmp_path
):
    started = client.post(
        "/api/v1/tiny/ab-tests",
        headers=ADMIN,
        data=json.dumps({"version_a": "1", "version_b": "2", "split": 0.5}),
    )
    assert started.status_code == 201, started.get_json()
    # Another process serves these models without version 2 (its folder was removed):
    # the running test cannot be measured there, but the rest of the page can.
    fewer = tmp_path / "fewer"
    shutil.copytree(models_dir, fewer)
    shutil.rmtree(fewer / "tiny" / "2")
    other = dashboard_app(database_url, fewer).test_client()
    refused = other.get("/api/v1/tiny/ab-tests")
    assert refused.status_code == 409
    overview = page(other, "/")
    assert len(find(parse(overview), "p", "panel-error")) == 1
    assert f'<p class="panel-error">{escape(refused.get_json()["error"])}</p>' in overview
    # The endpoints panel above it is whole.
    assert find(parse(overview), "a", href="/dashboard/tiny")


def test_regression_pages_show_errors_not_calibration(client):
    for i, row in enumerate(tiny_rows(20)):
        predict(client, "line", f"l{i}", row, 3 * row["x"] + row["k"] + 0.5)
    elements = parse(page(client, "/dashboard/line"))
    performance = client.get("/api/v1/line/performance").get_json()["versions"][0]
    for name in ("mae", "rmse", "r2"):
        [cell] = find(elements, "td", data_metric=name)
        assert cell.attrs["data-value"] == repr(performance["metrics"][name])
    assert find(elements, "svg", "calibration") == []
    assert find(elements, "td", data_metric="accuracy") == []


def test_multiclass_pages_show_the_apis_accuracy(client):
    for i, row in enumerate(tiny_rows(30)):
        truth = "low" if row["x"] < -0.5 else "high" if row["x"] > 0.5 else "mid"
        predict(client, "tiers", f"m{i}", row, truth if i % 3 else "mid")
    elements = parse(page(client, "/dashboard/tiers"))
    performance = client.get("/api/v1/tiers/performance").get_json()["versions"][0]
    [accuracy] = find(elements, "td", data_metric="accuracy")
    assert accuracy.attrs["data-value"] == repr(performance["metrics"]["accuracy"])
    # The top label's calibration, and every label in the confusion matrix.
    points = find(elements, "circle", "point")
    bins = [b for b in performance["calibration"] if b["count"]]
    assert [float(p.attrs["data-predicted"]) for p in points] == [b["mean_predicted"] for b in bins]
    cells = find(elements, "td", data_true="low")
    assert [int(c.attrs["data-value"]) for c in cells] == performance["confusion_matrix"]["matrix"][
        performance["confusion_matrix"]["labels"].index("low")
    ]


def test_the_default_endpoint_and_its_training_metrics(client):
    predict(client, "default", "p1", PASSENGER, 0)
    html = page(client, "/dashboard/default")
    assert '<span class="tag">default</span>' in html
    recorded = json.loads((REPO_ROOT / "model.json").read_text())["metrics"]["holdout"]
    assert f"Accuracy {recorded['accuracy']:.3f}" in html
    elements = parse(html)
    [labelled] = find(elements, "td", "labelled")
    assert labelled.attrs["data-value"] == "1"


# Works offline, read-only.


def test_pages_fetch_nothing_from_elsewhere_and_run_no_script(client):
    predict(client, "tiny", "o1", tiny_rows(1)[0], 1)
    for path in ("/", "/dashboard/tiny", "/dashboard/nope"):
        response = client.get(path)
        elements = parse(response.get_data(as_text=True))
        assert find(elements, "script") == []
        for element in elements:
            for name in ("src", "href"):
                target = element.attrs.get(name, "")
                assert not target.startswith(("http:", "https:", "//")), (path, target)
        [stylesheet] = find(elements, "link", rel="stylesheet")
        with client.get(stylesheet.attrs["href"]) as css:
            assert css.status_code == 200 and css.mimetype == "text/css"
            assert "url(" not in css.get_data(as_text=True)
        assert response.headers["X-Frame-Options"] == "DENY"


def test_pages_are_read_only(client):
    for path in ("/", "/dashboard/tiny"):
        assert client.post(path).status_code == 405


# DASHBOARD_TOKEN.


def test_without_a_token_setting_pages_are_open(client):
    page(client, "/")
    assert "token=" not in page(client, "/dashboard/tiny")


def test_the_token_setting_guards_every_page(database_url, models_dir):
    app = dashboard_app(database_url, models_dir, dashboard_token=DASHBOARD_TOKEN)
    try:
        client = app.test_client()
        for path in ("/", "/dashboard/tiny", "/dashboard/nope"):
            refused = client.get(path)
            assert refused.status_code == 401
            assert refused.mimetype == "text/html"
            assert refused.headers["WWW-Authenticate"] == "Bearer"
            assert "DASHBOARD_TOKEN" in refused.get_data(as_text=True)
            wrong = client.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert client.get(f"{path}?token=nope").status_code == 401
        # The admin token is not the dashboard's.
        assert client.get("/", headers=ADMIN).status_code == 401

        html = page(client, f"/?token={DASHBOARD_TOKEN}")
        # Links carry the token along, so a reader can click through.
        assert f'href="/dashboard/tiny?token={DASHBOARD_TOKEN}"' in html
        page(client, "/dashboard/tiny", headers={"Authorization": f"Bearer {DASHBOARD_TOKEN}"})
        page(client, f"/dashboard/nope?token={DASHBOARD_TOKEN}", status=404)
        # The stylesheet is no secret, and the API does not need the dashboard's token.
        with client.get("/dashboard/static/dashboard.css") as css:
            assert css.status_code == 200
        assert client.get("/api/v1/endpoints").status_code == 200
        assert (
            client.post(
                "/predict", data=json.dumps({"id": 1, "observation": PASSENGER})
            ).status_code
            == 200
        )
    finally:
        from serving.store.database import close_all

        close_all()


def test_the_token_setting_is_read_from_the_environment():
    assert Settings.from_env({"DASHBOARD_TOKEN": " s3cret "}).dashboard_token == "s3cret"
    assert Settings.from_env({"DASHBOARD_TOKEN": "  "}).dashboard_token is None
    assert Settings.from_env({}).dashboard_token is None


# Errors are pages.


@pytest.mark.parametrize(
    ("path", "status", "sentence"),
    [
        ("/dashboard/nope", 404, "There is no endpoint named &#39;nope&#39;."),
        ("/dashboard/tiny?version=9", 404, "has no version &#39;9&#39;"),
        ("/dashboard/tiny?window=soon", 400, "&#39;window&#39; must be"),
    ],
)
def test_errors_are_pages_with_the_apis_status_and_sentence(client, path, status, sentence):
    html = page(client, path, status=status)
    assert sentence in html
    [message] = find(parse(html), "section", "error-page")
    assert message.attrs["data-status"] == str(status)
    assert 'href="/"' in html


# The traffic query, on SQLite and PostgreSQL.

NOW = dt.datetime(2026, 11, 24, 13, 37, 21, 500_000)


def _store(created: list[tuple[str, str, dt.datetime]]) -> None:
    Prediction.insert_many(
        [
            {
                "endpoint": endpoint,
                "model_version": version,
                "observation_id": f"row-{i}",
                "observation": "{}",
                "created_at": moment,
            }
            for i, (endpoint, version, moment) in enumerate(created)
        ]
    ).execute()


def _by_hand(created, pairs, width: int, starts: list[dt.datetime]) -> dict:
    epoch = dt.datetime(1970, 1, 1)
    index = {start: i for i, start in enumerate(starts)}
    expected: dict = {}
    for endpoint, version, moment in created:
        seconds = int((moment - epoch).total_seconds()) // width * width
        start = epoch + dt.timedelta(seconds=seconds)
        if (endpoint, version) in pairs and start in index:
            expected.setdefault((endpoint, version), [0] * len(starts))[index[start]] += 1
    return expected


def test_traffic_counts_each_version_per_bucket(app):
    boundary = dt.datetime(2026, 11, 24, 12, 0, 0)
    created = [
        ("tiny", "1", NOW - dt.timedelta(hours=3)),  # the oldest: a 3-hour span
        ("tiny", "1", boundary),  # exactly on a bucket's start: that bucket
        ("tiny", "1", boundary - dt.timedelta(microseconds=1)),  # the bucket before
        ("tiny", "1", boundary + dt.timedelta(minutes=4, seconds=59, microseconds=999_999)),
        ("tiny", "2", boundary + dt.timedelta(minutes=1)),
        ("tiny", "2", NOW),  # the last bucket holds now
        ("line", "1", NOW - dt.timedelta(minutes=30)),
        ("tiny", "3", NOW - dt.timedelta(minutes=3)),  # not asked for
        ("other", "1", NOW - dt.timedelta(minutes=3)),
    ]
    created += [("tiny", "1", NOW - dt.timedelta(seconds=37 * i)) for i in range(150)]
    _store(created)
    pairs = {("tiny", "1"), ("tiny", "2"), ("line", "1")}
    seen = traffic(pairs, now=NOW)

    assert seen.width == 5 * MINUTE == choose_width(3 * 3600)
    assert seen.width_label == "5 minutes"
    assert seen.starts[-1] <= NOW < seen.starts[-1] + dt.timedelta(seconds=seen.width)
    assert seen.starts[0] <= NOW - dt.timedelta(hours=3) < seen.starts[1]
    epoch = dt.datetime(1970, 1, 1)
    assert all((s - epoch).total_seconds() % seen.width == 0 for s in seen.starts)
    assert seen.counts == _by_hand(created, pairs, seen.width, seen.starts)
    assert sum(seen.series("tiny", "1")) == 154
    assert seen.endpoint_total("tiny") == [
        a + b for a, b in zip(seen.series("tiny", "1"), seen.series("tiny", "2"), strict=True)
    ]
    assert seen.series("tiny", "9") == [0] * len(seen.starts)


def test_traffic_shows_only_the_last_buckets_of_a_long_history(app):
    created = [
        ("tiny", "1", NOW - dt.timedelta(days=400)),  # beyond the widest window
        ("tiny", "1", NOW - dt.timedelta(days=300)),
        ("tiny", "1", NOW - dt.timedelta(days=2)),
        ("tiny", "2", NOW - dt.timedelta(hours=1)),
    ]
    _store(created)
    pairs = {("tiny", "1"), ("tiny", "2")}
    seen = traffic(pairs, now=NOW)
    assert seen.width == 7 * DAY and len(seen.starts) == MAX_BUCKETS
    assert seen.counts == _by_hand(created, pairs, seen.width, seen.starts)
    assert sum(seen.series("tiny", "1")) == 2


def test_traffic_of_nothing_is_a_short_empty_axis(app):
    seen = traffic([("tiny", "1")], now=NOW)
    assert seen.width == MINUTE and len(seen.starts) == MIN_BUCKETS and seen.counts == {}
    assert seen.starts[-1] <= NOW < seen.starts[-1] + dt.timedelta(minutes=1)
    assert traffic([], now=NOW).counts == {}


@pytest.mark.parametrize(
    ("span", "width"),
    [
        (0, MINUTE),
        (46 * MINUTE, MINUTE),
        (47 * MINUTE, 5 * MINUTE),
        (3 * HOUR, 5 * MINUTE),
        (10 * HOUR, 15 * MINUTE),
        (40 * HOUR, HOUR),
        (2 * DAY, 3 * HOUR),
        (30 * DAY, DAY),
        (3 * 365 * DAY, 7 * DAY),
    ],
)
def test_the_bucket_width_fits_the_span(span, width):
    assert choose_width(span) == width


# Charts.


def test_count_axis_steps_are_whole_numbers():
    assert charts.count_axis(0) == (1, 1)
    assert charts.count_axis(2) == (1, 2)
    assert charts.count_axis(25) == (10, 30)
    assert charts.count_axis(1234) == (500, 1500)


def test_charts_escape_names_and_say_what_they_show():
    psi = charts.psi_chart(
        [{"feature": "<img src=x>", "psi": 0.3, "class": "major"}], moderate=0.1, major=0.25
    )
    assert "<img" not in psi and "&lt;img src=x&gt;" in psi
    assert 'role="img"' in psi and "Population stability index per input" in psi
    start = dt.datetime(2026, 11, 24, 12, 0)
    bars = charts.traffic_chart([("a<b", [1, 0, 3])], [start] * 3, 60, "1 minute")
    assert 'data-version="a&lt;b"' in bars and "version a&lt;b: 4" in bars
    assert charts.number(None) == "—" and charts.number(float("nan")) == "—"
    assert charts.number(0.12345) == "0.123" and charts.number(12345) == "12,345"
    assert charts.exact(0.1) == "0.1" and charts.exact(None) == ""
