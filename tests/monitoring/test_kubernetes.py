"""deploy/kubernetes offline: rendered with kustomize (`kubectl kustomize`), every resource
validated against the Kubernetes schemas (kubernetes-validate, strict), and the properties the
design depends on checked in the rendered output.

Run by scripts/test-scale.sh kubernetes.
"""

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/kubernetes"
# The oldest release still supported upstream when this was written; strict rejects any
# field the schema does not know.
VERSION = "1.30.0"


def render(path):
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def production():
    # secrets.env is git-ignored; render with the committed example, in a copy.
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "kubernetes"
        shutil.copytree(K8S, copy)
        overlay = copy / "overlays/production"
        shutil.copy(overlay / "secrets.env.example", overlay / "secrets.env")
        yield render(overlay)


@pytest.fixture(scope="module")
def base():
    return render(K8S / "base")


def by_kind(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)}"
    return found[0]


def validate(doc):
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_every_rendered_resource_validates(base, production):
    adapter = list(yaml.safe_load_all((K8S / "prometheus-adapter/adapter-rules.yaml").read_text()))
    for doc in [*base, *production, *adapter]:
        validate(doc)
    kinds = {d["kind"] for d in production}
    assert kinds == {
        "Namespace", "ConfigMap", "Secret", "Service", "Deployment",
        "PodDisruptionBudget", "HorizontalPodAutoscaler", "Ingress",
    }, kinds


def test_the_validator_rejects_a_broken_manifest(base):
    broken = yaml.safe_load(yaml.safe_dump(by_kind(base, "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    broken = yaml.safe_load(yaml.safe_dump(by_kind(base, "Deployment")))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 45  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_deployment_is_hardened_probed_and_drains(production):
    deployment = by_kind(production, "Deployment")
    config = by_kind(production, "ConfigMap")["data"]
    pod = deployment["spec"]["template"]["spec"]
    app = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    for container in [*pod["initContainers"], app]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
    assert app["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert app["livenessProbe"]["httpGet"]["path"] == "/health"
    # preStop delay + SHUTDOWN_GRACE_MS + one utterance's local final (~4 s) fit the grace.
    prestop = app["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop[0] == "sleep"
    grace_s = int(config["SHUTDOWN_GRACE_MS"]) / 1000
    assert pod["terminationGracePeriodSeconds"] >= int(prestop[1]) + grace_s + 4 + 5
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["replicas"] >= 2
    # The model is fetched into the volume the server reads it from.
    model = next(e["value"] for e in app["env"] if e["name"] == "WHISPER_MODEL")
    mounts = {m["name"]: m["mountPath"] for m in app["volumeMounts"]}
    assert model.startswith(mounts["models"] + "/")
    assert pod["initContainers"][0]["volumeMounts"][0]["name"] == "models"


def test_secrets_storage_and_config_reach_the_pod(production):
    deployment = by_kind(production, "Deployment")
    secret = by_kind(production, "Secret")
    app = deployment["spec"]["template"]["spec"]["containers"][0]
    refs = [r for e in app["envFrom"] for r in e.values()]
    assert {"name": secret["metadata"]["name"]} in refs  # the generated, hashed name
    assert {"name": by_kind(production, "ConfigMap")["metadata"]["name"]} in refs
    assert set(secret["data"]) == {"OPENAI_API_KEY", "STORAGE_URL"}
    example = (K8S / "overlays/production/secrets.env.example").read_text()
    assert re.search(r"^STORAGE_URL=postgres://", example, re.M)
    assert "secrets.env" in (ROOT / ".gitignore").read_text()


def test_service_pdb_ingress_and_autoscaler(production):
    labels = by_kind(production, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = by_kind(production, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = by_kind(production, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    annotations = by_kind(production, "Ingress")["metadata"]["annotations"]
    for key in ["proxy-read-timeout", "proxy-send-timeout"]:
        assert int(annotations[f"nginx.ingress.kubernetes.io/{key}"]) >= 3600
    hpa = by_kind(production, "HorizontalPodAutoscaler")
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "whisper_sessions_active"
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    max_sessions = int(by_kind(production, "ConfigMap")["data"]["MAX_SESSIONS"])
    assert int(metrics["Pods"]["pods"]["target"]["averageValue"]) < max_sessions
    adapter = yaml.safe_load((K8S / "prometheus-adapter/adapter-rules.yaml").read_text())
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert any(r["name"]["as"] == "whisper_sessions_active" for r in rules)


def test_prometheus_scrapes_the_admin_listener(production):
    """/metrics is only on the admin listener (ADMIN_ADDR): the scrape annotation names its port,
    and no Service exposes it."""
    template = by_kind(production, "Deployment")["spec"]["template"]
    app = template["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in app["ports"]}
    admin_addr = next(e["value"] for e in app["env"] if e["name"] == "ADMIN_ADDR")
    assert int(admin_addr.rsplit(":", 1)[1]) == ports["admin"]
    assert int(template["metadata"]["annotations"]["prometheus.io/port"]) == ports["admin"]
    service_ports = [p["targetPort"] for p in by_kind(production, "Service")["spec"]["ports"]]
    assert "admin" not in service_ports and ports["admin"] not in service_ports
