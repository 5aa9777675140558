"""The monitoring bundle against real tools: promtool checks and unit-tests the alert rules, a
real Prometheus (Debian's package) scrapes a real whisper-api on loopback and evaluates the
rules, and every metric the rules and the Grafana dashboard use exists in /metrics.

Run by scripts/test-scale.sh monitoring (which installs prometheus when missing and builds the
server); WHISPER_BIN names the server binary, WHISPER_MODEL the model.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "deploy/monitoring"
RULES = MON / "prometheus/rules/whisper-alerts.yml"
RULE_TESTS = MON / "prometheus/rules/whisper-alerts.test.yml"
DASHBOARD = MON / "grafana/dashboards/whisper-api.json"
ALERTS = {
    "WhisperDown",
    "WhisperFallbackRateHigh",
    "WhisperOpenAICircuitOpen",
    "WhisperFinalLatencyHigh",
    "WhisperEngineQueueSaturated",
    "WhisperNoLiveWorkers",
    "WhisperSessionsNearMax",
    "WhisperStorageErrors",
}
# Metric names in PromQL: ours all start with whisper_ or process_ (plus Prometheus's `up`).
METRIC = re.compile(r"\b((?:whisper|process)_[a-z0-9_]+)\b")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def wait_for(what, check, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.25)
    pytest.fail(f"{what} not reached in {timeout}s (last error: {last})")


def sample_names(exposition):
    return {
        line.split("{")[0].split(" ")[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def rule_exprs():
    # The rule file is YAML, but every expr is either one line or a `|` block; promtool has
    # validated its structure, so a small reader is enough here (no YAML module needed).
    exprs, block, indent = [], None, 0
    for line in RULES.read_text().splitlines():
        if block is not None:
            if line.strip() and len(line) - len(line.lstrip()) > indent:
                block.append(line.strip())
                continue
            exprs.append(" ".join(block))
            block = None
        stripped = line.strip()
        if stripped.startswith("expr:"):
            value = stripped[len("expr:"):].strip()
            if value == "|":
                block, indent = [], len(line) - len(line.lstrip())
            else:
                exprs.append(value)
    if block is not None:
        exprs.append(" ".join(block))
    return exprs


def test_promtool_checks_the_rules():
    out = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout, out.stdout


def test_promtool_unit_tests_every_alert():
    text = RULE_TESTS.read_text()
    tested = set(re.findall(r"alertname: (\w+)", text))
    assert tested == ALERTS, f"alerts without a unit test: {ALERTS - tested}"
    out = subprocess.run(
        ["promtool", "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout


def test_promtool_checks_the_shipped_config():
    with tempfile.TemporaryDirectory() as tmp:
        # The config names the rules where the image puts them; point it at the repo's copy.
        config = (MON / "prometheus/prometheus.yml").read_text()
        config = config.replace("/etc/prometheus/rules/*.yml", str(RULES))
        path = Path(tmp) / "prometheus.yml"
        path.write_text(config)
        out = subprocess.run(
            ["promtool", "check", "config", str(path)], capture_output=True, text=True
        )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_is_provisioned_against_the_datasource():
    dash = json.loads(DASHBOARD.read_text())
    datasource = (MON / "grafana/provisioning/datasources/prometheus.yml").read_text()
    assert "uid: prometheus" in datasource
    titles = {p["title"] for p in dash["panels"]}
    for wanted in [
        "Sessions",
        "Utterances per second",
        "Final latency p50 / p95 by source",
        "Partial lag p50 / p95",
        "Fallbacks by reason",
        "OpenAI circuit (1 = open)",
        "Engine queue depth and shed partials",
        "CPU (cores)",
        "Resident memory",
    ]:
        assert wanted in titles, wanted
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("WHISPER_BIN", str(ROOT / "target/release/whisper-api"))
    model = os.environ.get("WHISPER_MODEL", str(ROOT / "models/ggml-tiny.en.bin"))
    port, admin_port = free_port(), free_port()
    env = dict(
        os.environ,
        HOST="127.0.0.1",
        PORT=str(port),
        # /metrics lives on the admin listener, as in the compose files and Kubernetes.
        ADMIN_ADDR=f"127.0.0.1:{admin_port}",
        WHISPER_MODEL=model,
        PRIMARY_SERVICE="local",
        STATIC_DIR=str(ROOT / "static"),
        RUST_LOG="warn",
    )
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.Popen([binary], env=env, cwd=tempfile.gettempdir())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("/ready 200", lambda: http_get(base + "/ready")[0] == 200, 60)
        with pytest.raises(urllib.error.HTTPError) as public_metrics:
            http_get(base + "/metrics")
        assert public_metrics.value.code == 404, "/metrics must not be on the public port"
        yield f"http://127.0.0.1:{admin_port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def prometheus(server):
    port = free_port()
    target = server.removeprefix("http://")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: [{RULES}]\n"
            "scrape_configs:\n  - job_name: whisper-api\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for("Prometheus ready", lambda: http_get(base + "/-/ready")[0] == 200, 30)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def query(prometheus, promql):
    url = prometheus + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    body = json.loads(http_get(url)[1])
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_the_server_and_evaluates_every_rule(server, prometheus):
    def target_up():
        targets = json.loads(http_get(prometheus + "/api/v1/targets")[1])
        active = targets["data"]["activeTargets"]
        return active and all(t["health"] == "up" for t in active)

    wait_for("target up", target_up, 30)
    result = wait_for(
        "whisper_sessions_max ingested",
        lambda: query(prometheus, "whisper_sessions_max"),
        30,
    )
    assert float(result[0]["value"][1]) == 16.0  # MAX_SESSIONS default
    workers = query(prometheus, "whisper_live_workers")
    assert float(workers[0]["value"][1]) >= 1.0

    def rules_evaluated():
        groups = json.loads(http_get(prometheus + "/api/v1/rules")[1])["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == len(ALERTS) and all(
            r["health"] == "ok" and r.get("lastEvaluation", "").startswith("20")
            and not r["lastEvaluation"].startswith("0001") for r in rules
        ) and rules

    rules = wait_for("every rule evaluated", rules_evaluated, 30)
    assert {r["name"] for r in rules} == ALERTS
    # A healthy idle server fires nothing (WhisperDown is the only one that could be pending
    # with `up` at 1, and must not be).
    firing = [r["name"] for r in rules if r["state"] != "inactive"]
    assert firing == [], firing


def test_every_metric_the_rules_and_dashboard_use_is_exposed(server, prometheus):
    exposed = sample_names(http_get(server + "/metrics")[1])
    used = {}
    for source, exprs in [("rules", rule_exprs()), ("dashboard", dashboard_exprs())]:
        assert exprs, source
        for expr in exprs:
            for name in METRIC.findall(expr):
                used.setdefault(name, source)
    assert len(used) >= 15, used
    missing = {n: s for n, s in used.items() if n not in exposed}
    assert not missing, f"used but not in /metrics: {missing}"
    # ...and Prometheus has ingested each of them.
    wait_for(
        "every used metric ingested",
        lambda: all(query(prometheus, f'count({{__name__="{n}"}})') for n in used),
        30,
    )


@pytest.mark.parametrize(
    "files",
    [
        ["docker-compose.yml", "docker-compose.monitoring.yml"],
        ["docker-compose.prod.yml", "docker-compose.monitoring.yml"],
        ["docker-compose.replicas.yml", "docker-compose.monitoring.yml"],
    ],
)
def test_compose_files_with_the_monitoring_profile_are_valid(files):
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is not installed (scripts/test-scale.sh installs it)")
    with tempfile.NamedTemporaryFile("w", suffix=".env") as env_file:
        env = dict(os.environ, APP_ENV_FILE=env_file.name)
        args = ["docker-compose"] + [a for f in files for a in ("-f", f)]
        out = subprocess.run(
            [*args, "--profile", "monitoring", "config"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )
    assert out.returncode == 0, out.stderr
    for service in ["prometheus", "grafana"]:
        assert f"  {service}:" in out.stdout
    assert "--storage.tsdb.retention.time=15d" in out.stdout
