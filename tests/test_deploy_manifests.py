"""deploy/kubernetes and compose.yaml agree with the service and with themselves.

No cluster here: the manifests are parsed and held against what the service really does (the
probes are requested from the app, the env goes through serving/config.py), the connection
math written in their comments is recomputed from the numbers in the files, and Debian's
pgbouncer starts on each pgbouncer.ini they carry.
"""

from __future__ import annotations

import configparser
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from serving.config import Settings
from tests.environment import SERVICE_VARIABLES
from tests.live import REPO_ROOT, free_port
from tests.test_pgbouncer import pgbouncer_binary

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
COMPOSE = REPO_ROOT / "compose.yaml"
COMPOSE_PGBOUNCER_INI = REPO_ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini"
# What the Secrets hold, in the form the README's `kubectl create secret` gives them.
SECRET_VALUES = {
    "DATABASE_URL": "postgresql://serving:secret@pgbouncer:6432/serving",
    "ADMIN_TOKEN": "an-admin-token",
}


def documents() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object under deploy/kubernetes by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") != "Kustomization":
                key = (document["kind"], document["metadata"]["name"])
                assert key not in found, f"{key} twice"
                found[key] = document
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(comment_prefixes=(";", "#"), interpolation=None)
    parser.read_string(text)
    return parser


def math_lines(path: Path) -> dict[str, str]:
    """The connection math in a file's comments: {"clients": "...", "servers": "..."}."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"#\s+(clients|servers): (.+)$", line)
        if match:
            found[match.group(1)] = match.group(2)
    assert set(found) == {"clients", "servers"}, f"{path.name}: no connection math"
    return found


def check_math(line: str) -> dict[str, int]:
    """Recompute `a x b = c <= d - e = f` as written; return its named numbers."""
    named = {name: int(value) for name, value in re.findall(r"([A-Za-z_]+) (\d+)", line)}
    arithmetic = re.sub(r"[A-Za-z_]+ (\d+)", r"\1", line).replace(" x ", " * ")
    assert re.fullmatch(r"[\d\s()+*\-=<]+", arithmetic), line
    smaller, larger = arithmetic.split("<=")
    values = []
    for side in (smaller, larger):
        results = {eval(part) for part in side.split("=")}  # digits and + - * ( ) only
        assert len(results) == 1, f"{side.strip()} does not add up, in: {line}"
        values.append(results.pop())
    assert values[0] <= values[1], line
    return named


def service_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The container's environment, the Secret references filled in as the README has them."""
    environment = {}
    for variable in container(deployment)["env"]:
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
        else:
            reference = variable["valueFrom"]["secretKeyRef"]
            assert reference["name"] == "serving", variable
            environment[variable["name"]] = SECRET_VALUES[reference["key"]]
    return environment


def test_the_probes_are_routes_the_app_serves(client):
    deployment = documents()[("Deployment", "serving")]
    probes = {
        kind: container(deployment)[kind]["httpGet"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    # Liveness must not fail on a database outage: /health answers without the database.
    assert probes["livenessProbe"]["path"] == "/health"
    assert probes["readinessProbe"]["path"] == "/ready"
    for kind, probe in probes.items():
        answer = client.get(probe["path"])
        assert answer.status_code == 200, (kind, answer.get_data(as_text=True))


def test_the_ports_line_up_with_gunicorns_port():
    objects = documents()
    deployment = objects[("Deployment", "serving")]
    settings = Settings.from_env(service_env(deployment))
    [port] = container(deployment)["ports"]
    assert port["containerPort"] == settings.port
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container(deployment)[kind]["httpGet"]["port"] == port["name"]
    service = objects[("Service", "serving")]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    autoscaler = objects[("HorizontalPodAutoscaler", "serving")]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "serving"
    # The service reaches PgBouncer where its Service listens.
    database = urlsplit(settings.database_url)
    bouncer = objects[("Service", "pgbouncer")]
    assert database.hostname == "pgbouncer"
    assert database.port in [p["port"] for p in bouncer["spec"]["ports"]]
    config = ini(objects[("ConfigMap", "pgbouncer")]["data"]["pgbouncer.ini"])
    assert (
        int(config["pgbouncer"]["listen_port"])
        == container(objects[("Deployment", "pgbouncer")])["ports"][0]["containerPort"]
    )
    assert database.path.lstrip("/") in config["databases"]


def test_the_env_names_settings_the_service_reads_and_keeps_secrets_in_secrets():
    deployment = documents()[("Deployment", "serving")]
    names = [variable["name"] for variable in container(deployment)["env"]]
    assert sorted(set(names) - SERVICE_VARIABLES) == []
    assert len(names) == len(set(names))
    secret = {
        v["name"] for v in container(deployment)["env"] if "secretKeyRef" in v.get("valueFrom", {})
    }
    assert secret == {"DATABASE_URL", "ADMIN_TOKEN"}
    # Every value is one the service accepts, and a request thread never waits for a connection.
    settings = Settings.from_env(service_env(deployment))
    assert settings.db_pool_size >= settings.threads
    assert settings.admin_token == SECRET_VALUES["ADMIN_TOKEN"]
    # A pod is given longer to stop than the pause before it plus gunicorn's graceful timeout.
    spec = deployment["spec"]["template"]["spec"]
    pause = int(container(deployment)["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] > pause + 30


def test_the_kubernetes_connection_math_holds_for_the_manifests():
    objects = documents()
    deployment = objects[("Deployment", "serving")]
    settings = Settings.from_env(service_env(deployment))
    autoscaler = objects[("HorizontalPodAutoscaler", "serving")]
    bouncers = objects[("Deployment", "pgbouncer")]
    config = ini(objects[("ConfigMap", "pgbouncer")]["data"]["pgbouncer.ini"])["pgbouncer"]
    math = math_lines(KUBERNETES / "pgbouncer.yaml")

    clients = check_math(math["clients"])
    assert clients == {
        "maxReplicas": autoscaler["spec"]["maxReplicas"],
        "maxSurge": deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        "WEB_CONCURRENCY": settings.web_concurrency,
        "DB_POOL_SIZE": settings.db_pool_size,
        "max_client_conn": int(config["max_client_conn"]),
    }
    servers = check_math(math["servers"])
    assert servers["pgbouncers"] == bouncers["spec"]["replicas"]
    # A rollout of PgBouncer never runs a third one beside the two.
    assert bouncers["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert servers["max_db_connections"] == int(config["max_db_connections"])
    assert int(config["default_pool_size"]) <= int(config["max_db_connections"])
    assert config["pool_mode"] == "transaction"
    assert servers["max_connections"] == 100  # PostgreSQL's default, as the comment says


def test_the_compose_connection_math_holds_for_compose_yaml():
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    environment = compose["app"]["environment"]
    # `${WEB_CONCURRENCY:-2}`: the default is what the math counts.
    workers = re.fullmatch(r"\$\{WEB_CONCURRENCY:-(\d+)\}", environment["WEB_CONCURRENCY"])
    assert workers, environment["WEB_CONCURRENCY"]
    config = ini(COMPOSE_PGBOUNCER_INI.read_text())
    math = math_lines(COMPOSE)
    clients = check_math(math["clients"])
    assert clients["WEB_CONCURRENCY"] == int(workers.group(1))
    assert clients["DB_POOL_SIZE"] == int(environment["DB_POOL_SIZE"])
    assert int(environment["DB_POOL_SIZE"]) >= int(environment["THREADS"])
    assert clients["max_client_conn"] == int(config["pgbouncer"]["max_client_conn"])
    servers = check_math(math["servers"])
    assert servers["max_db_connections"] == int(config["pgbouncer"]["max_db_connections"])
    assert config["pgbouncer"]["pool_mode"] == "transaction"
    # The app goes through PgBouncer, and PgBouncer to the db service.
    database = urlsplit(environment["DATABASE_URL"])
    assert (database.hostname, database.port) == (
        "pgbouncer",
        int(config["pgbouncer"]["listen_port"]),
    )
    [(name, target)] = config["databases"].items()
    assert database.path.lstrip("/") == name
    assert "host=db " in target + " " and "db" in compose


@pytest.mark.parametrize("where", ["kubernetes", "compose"])
def test_pgbouncer_starts_on_the_configuration_shipped(where, tmp_path):
    """The ini as shipped, but on a free 127.0.0.1 port and with a local auth file: an unknown
    key or a bad value stops pgbouncer at start."""
    binary = pgbouncer_binary()
    if where == "kubernetes":
        text = documents()[("ConfigMap", "pgbouncer")]["data"]["pgbouncer.ini"]
    else:
        text = COMPOSE_PGBOUNCER_INI.read_text()
    port = free_port()
    (tmp_path / "userlist.txt").write_text('"serving" "serving-local-only"\n')
    overrides = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "auth_file": str(tmp_path / "userlist.txt"),
    }
    if os.geteuid() == 0:
        overrides["user"] = "nobody"  # pgbouncer refuses to run as root
    lines = [
        f"{line.split('=')[0].strip()} = {overrides.pop(line.split('=')[0].strip())}"
        if line.split("=")[0].strip() in overrides
        else line
        for line in text.splitlines()
    ]
    lines += [f"{key} = {value}" for key, value in overrides.items()]
    path = tmp_path / "pgbouncer.ini"
    path.write_text("\n".join(lines) + "\n")
    log = tmp_path / "pgbouncer.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, str(path)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(10)
    assert "WARNING" not in log.read_text() and "ERROR" not in log.read_text(), log.read_text()


def test_the_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
