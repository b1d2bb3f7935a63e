"""Prometheus /metrics: names and bounded labels in one process, and counts that add up across
gunicorn workers (multiprocess mode), a killed worker's included."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from serving import metrics
from serving.model.runtime import LoadedModel
from tests.conftest import REPO_ROOT, fit_tiny_multiclass, fit_tiny_regression, make_app
from tests.environment import clean_environ
from tests.live import gunicorn
from tests.samples import PASSENGER

# Prometheus counters: the same whatever stores the predictions.
pytestmark = pytest.mark.any_database

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when it is absent (a labelled counter before its first count)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def request_labels(route: str, method: str, endpoint: str, version: str, status: int) -> dict:
    return {
        "route": route,
        "method": method,
        "endpoint": endpoint,
        "version": version,
        "status": str(status),
    }


@pytest.fixture
def client(database_url: str, tmp_path: Path):
    root = tmp_path / "models"
    fit_tiny_regression(root / "line" / "1", initial_status="production")
    fit_tiny_multiclass(root / "tiers" / "1", initial_status="production")
    (root / "broken" / "3").mkdir(parents=True)  # no pipeline.pickle
    # Compiled, as served: serving_model_info labels whether the fast path scores.
    yield make_app(database_url, root, skip_broken_models=True, compile_models=True).test_client()
    from serving.store.database import close_all

    close_all()


def scrape(client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.get_data(as_text=True))


def post(client, path: str, body: dict) -> int:
    return client.post(path, data=json.dumps(body)).status_code


def test_requests_are_counted_by_route_method_endpoint_version_and_status(client):
    before = scrape(client)
    assert post(client, "/predict", {"id": 1, "observation": PASSENGER}) == 200
    assert post(client, "/api/v1/default/predict", {"id": 2, "observation": PASSENGER}) == 200
    assert post(client, "/api/v1/default/predict", {"id": 3, "observation": {}}) == 422
    # Made-up names and paths never become label values: the URL rule and "" stand in.
    assert post(client, "/api/v1/made-up-1/predict", {"id": 4, "observation": {}}) == 404
    assert post(client, "/api/v1/made-up-2/predict", {"id": 4, "observation": {}}) == 404
    assert client.get("/no/such/page").status_code == 404
    assert client.open("/predict", method="BREW").status_code == 405
    after = scrape(client)

    expected = {
        ("/predict", "POST", "default", "1", 200): 1,
        ("/api/v1/<endpoint>/predict", "POST", "default", "1", 200): 1,
        ("/api/v1/<endpoint>/predict", "POST", "default", "", 422): 1,
        ("/api/v1/<endpoint>/predict", "POST", "", "", 404): 2,
        ("unmatched", "GET", "", "", 404): 1,
        ("unmatched", "OTHER", "", "", 405): 1,
    }
    for key, count in expected.items():
        labels = request_labels(*key)
        for name in (
            "serving_http_requests_total",
            "serving_http_request_duration_seconds_count",
        ):
            assert value(after, name, **labels) - value(before, name, **labels) == count, key
    # The histogram counts exactly what the counter counts, label set by label set.
    counted = {k: v for k, v in after.items() if k[0] == "serving_http_requests_total"}
    for (_, labels), count in counted.items():
        assert after[("serving_http_request_duration_seconds_count", labels)] == count
    assert not any("made-up" in v or "no/such" in v for _, ls in after for _, v in ls)
    assert not any(v == "BREW" for _, ls in after for _, v in ls)


def test_latency_lands_in_the_buckets(client):
    labels = request_labels("/health", "GET", "", "", 200)
    before = scrape(client)
    for _ in range(3):
        client.get("/health")
    after = scrape(client)
    top = {**labels, "le": "+Inf"}
    bucket = "serving_http_request_duration_seconds_bucket"
    assert value(after, bucket, **top) - value(before, bucket, **top) == 3
    assert value(after, "serving_http_request_duration_seconds_sum", **labels) > value(
        before, "serving_http_request_duration_seconds_sum", **labels
    )
    bounds = {dict(ls)["le"] for n, ls in after if n == bucket}
    assert bounds == {"+Inf", *(repr(b) for b in metrics.LATENCY_BUCKETS)}


def test_predictions_are_counted_by_label_and_warnings_by_feature(client):
    before = scrape(client)
    odd = {**PASSENGER, "Age": 200.0, "Embarked": "X", "favourite_colour": "teal"}
    first = client.post("/predict", data=json.dumps({"id": "p1", "observation": PASSENGER}))
    answer = client.post("/predict", data=json.dumps({"id": "p2", "observation": odd})).json
    assert len(answer["warnings"]) == 3
    regression = {"x": 0.5, "k": 1, "color": "red"}
    assert post(client, "/api/v1/line/predict", {"id": "r", "observation": regression}) == 200
    tiers = client.post(
        "/api/v1/tiers/predict", data=json.dumps({"id": "t", "observation": regression})
    )
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    label = str(first.json["prediction"])  # 0 or 1
    assert answer["prediction"] == first.json["prediction"]
    assert delta("serving_predictions_total", endpoint="default", version="1", label=label) == 2
    assert delta("serving_predictions_total", endpoint="line", version="1", label="") == 1
    tier = tiers.json["prediction"]
    assert delta("serving_predictions_total", endpoint="tiers", version="1", label=tier) == 1
    warning = "serving_prediction_warnings_total"
    common = {"endpoint": "default", "version": "1"}
    assert delta(warning, **common, feature="Age", kind="out_of_range") == 1
    assert delta(warning, **common, feature="Embarked", kind="unseen_category") == 1
    # A field the client made up is counted, but its name is not a label value.
    assert delta(warning, **common, feature="", kind="unknown_field") == 1
    assert not any("favourite_colour" in v for _, ls in after for _, v in ls)


def test_batch_rows_are_counted_like_single_predictions(client):
    before = scrape(client)
    odd = {**PASSENGER, "Age": 200.0}
    rows = [
        {"id": "b1", "observation": PASSENGER},
        {"id": "b2", "observation": odd},
        {"id": "b3", "observation": {**PASSENGER, "Pclass": "first"}},
    ]
    answer = client.post("/api/v1/default/predict/batch", data=json.dumps(rows)).json
    after = scrape(client)
    label = str(answer["results"][0]["prediction"])
    assert answer["results"][1]["prediction"] == answer["results"][0]["prediction"]
    common = {"endpoint": "default", "version": "1"}
    # The invalid third row is not a prediction.
    assert (
        value(after, "serving_predictions_total", **common, label=label)
        - value(before, "serving_predictions_total", **common, label=label)
        == 2
    )
    warning = {**common, "feature": "Age", "kind": "out_of_range"}
    assert (
        value(after, "serving_prediction_warnings_total", **warning)
        - value(before, "serving_prediction_warnings_total", **warning)
        == 1
    )


def test_warning_labels_match_what_the_schema_says():
    model = LoadedModel.load(REPO_ROOT, "default", compile=False)
    odd = {**PASSENGER, "Age": -1.0, "Sex": "other", "extra": 1}
    _, warnings = model.schema.validate(odd)
    found = sorted(metrics.warning_labels(w) for w in warnings)
    assert found == [("", "unknown_field"), ("Age", "out_of_range"), ("Sex", "unseen_category")]
    # Batch answers may name rows: the feature is what follows the first dot.
    batch = {"field": "observations[3].Age", "problem": warnings[1]["problem"]}
    assert metrics.warning_labels(batch)[0] in {"Age", "Sex"}


def test_bulk_recording_equals_one_by_one(client):
    before = scrape(client)
    warned = [{"field": "rows[0].x", "problem": "9 is outside the training range [0, 1]"}]
    metrics.record_predictions("bulk", "7", ["a", "b", "a", True, None], [warned, [], warned])
    metrics.record_prediction("bulk", "7", "a", warned)
    after = scrape(client)
    for label, count in (("a", 3), ("b", 1), ("true", 1), ("", 1)):
        name, labels = "serving_predictions_total", {"endpoint": "bulk", "version": "7"}
        assert (
            value(after, name, **labels, label=label) - value(before, name, **labels, label=label)
            == count
        )
    key = {"endpoint": "bulk", "version": "7", "feature": "x", "kind": "out_of_range"}
    assert value(after, "serving_prediction_warnings_total", **key) == 3


def test_loaded_and_broken_versions(client):
    samples = scrape(client)
    loaded = {
        dict(labels)["endpoint"]: dict(labels)
        for name, labels in samples
        if name == "serving_model_info"
    }
    assert set(loaded) == {"default", "line", "tiers"}
    assert loaded["default"] == {
        "endpoint": "default",
        "version": "1",
        "task": "binary_classification",
        "fast_path": "true",
    }
    assert loaded["line"]["task"] == "regression"
    assert all(samples[("serving_model_info", frozenset(v.items()))] == 1 for v in loaded.values())
    assert value(samples, "serving_model_broken", endpoint="broken", version="3") == 1


def test_openmetrics_when_asked_for(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")


# Under gunicorn: two workers, one killed on the way.


def worker_pids(master: int) -> set[int]:
    """The gunicorn master's live child processes."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # After the command: state, then the parent's pid; a zombie is not a worker.
        if int(fields[1]) == master and fields[0] != "Z":
            pids.add(int(stat.parent.name))
    return pids


def wait_for_workers(master: int, count: int, not_in: set[int] = frozenset()) -> set[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = worker_pids(master)
        if len(pids) == count and not pids & not_in:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not settle on {count} new workers: {worker_pids(master)}")


def send(url: str, ids: range, odd_every: int = 3) -> None:
    """Predict each id on a new connection (so both workers get some), 16 at a time."""

    def one(i: int) -> None:
        observation = {**PASSENGER, "Age": 200.0} if i % odd_every == 0 else PASSENGER
        body = json.dumps({"id": f"live-{i}", "observation": observation})
        response = requests.post(f"{url}/predict", data=body, timeout=60)
        assert response.status_code == 200, response.text

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, ids))


def scrapes(url: str, times: int = 6) -> Iterator[Samples]:
    """/metrics several times, each on a new connection: any worker may answer."""
    for _ in range(times):
        response = requests.get(f"{url}/metrics", timeout=30)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        yield parse(response.text)


PREDICT = request_labels("/predict", "POST", "default", "1", 200)


def assert_counted(url: str, n: int) -> None:
    """Every scrape shows exactly n predictions, however the workers shared them."""
    for samples in scrapes(url):
        assert value(samples, "serving_http_requests_total", **PREDICT) == n
        assert value(samples, "serving_http_request_duration_seconds_count", **PREDICT) == n
        bucket = {**PREDICT, "le": "+Inf"}
        assert value(samples, "serving_http_request_duration_seconds_bucket", **bucket) == n
        assert total(samples, "serving_predictions_total", endpoint="default") == n
        odd = len(range(0, n, 3))
        warnings = {"endpoint": "default", "feature": "Age", "kind": "out_of_range"}
        assert total(samples, "serving_prediction_warnings_total", **warnings) == odd
        assert (
            value(
                samples,
                "serving_model_info",
                endpoint="default",
                version="1",
                task="binary_classification",
                fast_path="true",
            )
            == 1
        )


def counted_pids(directory: Path) -> set[int]:
    return {
        int(m.group(1))
        for p in directory.iterdir()
        if (m := re.fullmatch(r"counter_(\d+)\.db", p.name))
    }


def leave_stale_counts(directory: Path) -> None:
    """What an earlier run could leave behind: 7 /predict requests counted by pid 1."""
    directory.mkdir()
    code = (
        "from prometheus_client import Counter\n"
        "c = Counter('serving_http_requests', 'stale', "
        "['route', 'method', 'endpoint', 'version', 'status'])\n"
        "c.labels('/predict', 'POST', 'default', '1', '200').inc(7)\n"
    )
    env = {**clean_environ(), "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    (stale,) = directory.iterdir()
    stale.rename(directory / "counter_1.db")


@pytest.mark.e2e
@pytest.mark.slow
def test_counts_add_up_across_workers_and_survive_a_killed_worker(database_url, tmp_path):
    directory = tmp_path / "metrics"
    leave_stale_counts(directory)
    env = {"METRICS_DIR": str(directory), "MODELS_DIR": str(tmp_path / "no-more-models")}
    with gunicorn(database_url, tmp_path, workers=2, env=env) as server:
        master = server.process.pid
        workers = wait_for_workers(master, 2)
        assert not (directory / "counter_1.db").exists()  # emptied when the master started

        sent = 0
        # New connections spread over both workers; send more until each has counted some.
        while not workers <= counted_pids(directory) and sent < 1200:
            send(server.url, range(sent, sent + 120))
            sent += 120
        assert workers <= counted_pids(directory), "one worker served every request"
        assert_counted(server.url, sent)

        # A killed worker's counts stay counted; the master starts another in its place.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        workers = wait_for_workers(master, 2, not_in={victim})
        assert (directory / f"counter_{victim}.db").exists()
        assert_counted(server.url, sent)

        # So are those of a worker stopped gracefully, and the new workers count on top.
        os.kill(min(workers), signal.SIGTERM)
        wait_for_workers(master, 2, not_in=workers & {min(workers)})
        send(server.url, range(sent, sent + 60))
        assert_counted(server.url, sent + 60)


@pytest.mark.e2e
@pytest.mark.slow
def test_without_metrics_dir_gunicorn_counts_in_a_temporary_directory(database_url, tmp_path):
    env = {"MODELS_DIR": str(tmp_path / "no-more-models")}
    with gunicorn(database_url, tmp_path, workers=2, env=env) as server:
        send(server.url, range(30))
        assert_counted(server.url, 30)
        found = re.search(r"metrics directory ([^\s\"]+)", server.log())
        assert found, server.log()
        directory = Path(found.group(1))
        assert counted_pids(directory)

        # A reload (SIGHUP) starts new workers that count on in the same directory.
        master = server.process.pid
        before = wait_for_workers(master, 2)
        os.kill(master, signal.SIGHUP)
        wait_for_workers(master, 2, not_in=before)
        send(server.url, range(30, 40))
        assert_counted(server.url, 40)
    assert not directory.exists()  # removed when gunicorn exited, reloaded or not


def samples_of(url: str) -> Samples:
    """One scrape, as Prometheus takes it."""
    response = requests.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200
    return parse(response.text)


def increase(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """What Prometheus' increase() gives between two scrapes: growth of series that exist in
    both (a series first seen at n contributes nothing for its first n)."""
    wanted = set(labels.items())
    return sum(
        v - before[key]
        for key, v in after.items()
        if key[0] == name and wanted <= key[1] and key in before
    )


@pytest.mark.e2e
def test_increase_between_scrapes_counts_every_request(database_url, tmp_path):
    with gunicorn(database_url, tmp_path, workers=2) as server:
        master = server.process.pid
        workers = wait_for_workers(master, 2)
        before = samples_of(server.url)
        # Before any traffic, the series traffic will count into already exist, at 0.
        for label in ("0", "1"):
            key = ("serving_predictions_total", frozenset(
                {"endpoint": "default", "version": "1", "label": label}.items()
            ))  # fmt: skip
            assert before[key] == 0
        assert before[("serving_http_requests_total", frozenset(PREDICT.items()))] == 0
        send(server.url, range(45))
        after = samples_of(server.url)
    assert increase(before, after, "serving_predictions_total", endpoint="default") == 45
    assert increase(before, after, "serving_http_requests_total", **PREDICT) == 45
    # process_* metrics for the master and for every worker, whichever worker answered.
    cpu = {
        int(dict(labels)["pid"]) for (name, labels) in after if name == "process_cpu_seconds_total"
    }
    assert cpu == {master, *workers}
    memory = [v for (name, _), v in after.items() if name == "process_resident_memory_bytes"]
    assert len(memory) == 3 and all(v > 10_000_000 for v in memory)
