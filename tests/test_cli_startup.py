"""The `flask` command line starts as fast as each command allows: a command that needs no
database or model touches neither, one that needs one endpoint loads only that one, and one
that changes a row (set-status) loads none. Nor do they import what only models and requests
need (pandas, NumPy, SciPy, scikit-learn: seconds of CPU before anything happens), while a
serving app imports all of it before its first request, as gunicorn builds it before forking."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from serving import REQUEST_MODULES
from tests.conftest import REPO_ROOT
from tests.environment import clean_environ
from tests.samples import PASSENGER

# Each test starts `flask` processes: several seconds apiece.
pytestmark = pytest.mark.slow

# -X importtime: every module the process imports is a line of its stderr.
FLASK = [sys.executable, "-X", "importtime", "-m", "flask", "--app", str(REPO_ROOT / "app.py")]
UNREACHABLE = "postgresql://nobody@127.0.0.1:9/none"
# What scoring needs and a command that loads no model must not import.
HEAVY = ("numpy", "pandas", "scipy", "sklearn", "joblib")


def flask(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one `flask` command in a fresh process, as an operator would (its imports listed
    on stderr: see `imported`)."""
    env = {**clean_environ(), "DATABASE_URL": database_url, "LOG_LEVEL": "INFO"}
    return subprocess.run(
        [*FLASK, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def loaded_endpoints(output: str) -> set[str]:
    """The endpoints whose models the command's JSON log says it loaded."""
    loaded = set()
    for line in output.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("message") == "loaded model":
                loaded.add(record["endpoint"])
    return loaded


def imported(stderr: str) -> set[str]:
    """The modules a process run with -X importtime imported."""
    prefix = "import time:"
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    # The first line is the header ("self [us] | cumulative | imported package").
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}


def heavy(modules: set[str]) -> set[str]:
    """Which of HEAVY the modules include (as packages)."""
    return {name for name in HEAVY if any(m.split(".")[0] == name for m in modules)}


def test_routes_and_help_need_no_database_and_load_no_model(tmp_path):
    routes = flask("routes", database_url=UNREACHABLE, cwd=tmp_path)
    assert routes.returncode == 0, routes.stderr
    assert "/predict" in routes.stdout
    assert loaded_endpoints(routes.stdout + routes.stderr) == set()
    assert "serving.http.predictions" in imported(routes.stderr)
    assert heavy(imported(routes.stderr)) == set()
    helped = flask("--help", database_url=UNREACHABLE, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "score" in helped.stdout and "set-status" in helped.stdout and "models" in helped.stdout
    assert heavy(imported(helped.stderr)) == set()


def test_set_status_loads_no_model(tmp_path):
    result = flask(
        "set-status", "income", "2", "staging", "--by", "ops",
        database_url=f"sqlite:///{tmp_path / 'p.db'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "income version 2: testing -> staging" in result.stdout
    # Folder names and model.json say which versions exist; no pipeline is unpickled.
    assert loaded_endpoints(result.stdout + result.stderr) == set()
    assert heavy(imported(result.stderr)) == set()
    keys = flask("keys", "list", database_url=f"sqlite:///{tmp_path / 'p.db'}", cwd=tmp_path)
    assert keys.returncode == 0, keys.stderr
    assert heavy(imported(keys.stderr)) == set()


def test_score_loads_only_its_endpoint(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,height\nr1,70\nr2,61\n")
    result = flask(
        "score", str(source), str(tmp_path / "out.csv"), "--endpoint", "heights", "--quiet",
        database_url=f"sqlite:///{tmp_path / 'p.db'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "scored 2 rows" in result.stdout
    assert loaded_endpoints(result.stdout + result.stderr) == {"heights"}
    # It does import what scoring needs: `heavy` sees these libraries when they are there.
    assert {"numpy", "pandas", "sklearn"} <= heavy(imported(result.stderr))


# Builds the app as gunicorn does (outside a `flask` command), lists sys.modules, sends one
# request to each kind of route, and lists sys.modules again.
SERVING = """
import json, sys
from serving import create_app
app = create_app({"database_url": sys.argv[1], "models_dir": sys.argv[2],
                  "compile_models": False})
started = sorted(sys.modules)
client = app.test_client()
statuses = {}
for method, path, body in json.loads(sys.argv[3]):
    response = client.open(path, method=method, json=body)
    statuses[f"{method} {path}"] = response.status_code
print(json.dumps({"started": started, "served": sorted(sys.modules), "statuses": statuses}))
"""
REQUESTS = [
    ("POST", "/predict", {"id": "a", "observation": PASSENGER}),
    ("POST", "/update", {"id": "a", "true_class": 1}),
    ("POST", "/predict/batch", [{"id": "b", "observation": PASSENGER}]),
    ("GET", "/api/v1/default/performance", None),
    ("GET", "/api/v1/default/drift", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("GET", "/", None),
    ("GET", "/dashboard/default", None),
]


def lazy_imports(folder: Path) -> set[str]:
    """The serving modules imported inside functions (not under TYPE_CHECKING) by the modules
    under `folder`: what their routes import when first called."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("serving"):
                    for alias in inner.names:
                        submodule = f"{inner.module}.{alias.name}"
                        as_file = REPO_ROOT / Path(*submodule.split("."))
                        is_module = as_file.with_suffix(".py").is_file() or as_file.is_dir()
                        found.add(submodule if is_module else str(inner.module))
                elif isinstance(inner, ast.Import):
                    found.update(a.name for a in inner.names if a.name.startswith("serving"))
    return found


@pytest.mark.database
def test_serving_imports_what_requests_need_before_the_first_one(database_url, tmp_path):
    env = {**clean_environ(), "LOG_LEVEL": "WARNING"}
    result = subprocess.run(
        [sys.executable, "-c", SERVING, database_url, str(tmp_path / "none"), json.dumps(REQUESTS)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    # Each request succeeded, so it went through its route's lazy imports.
    assert {k: v for k, v in report["statuses"].items() if v >= 400} == {}
    started, served = set(report["started"]), set(report["served"])
    assert {"numpy", "pandas", "scipy.stats", "sklearn.metrics", *REQUEST_MODULES} <= started
    # Every module a route imports in its function is there before the first request...
    views = lazy_imports(REPO_ROOT / "serving" / "http")
    views |= lazy_imports(REPO_ROOT / "serving" / "dashboard")
    assert "serving.dataplane" in views and "serving.openapi" in views
    assert views - started == set()
    # ...and requests import none of ours.
    assert {m for m in served - started if m.startswith("serving")} == set()
