"""The zero-downtime deploy, end to end and for real: a local sshd on a loopback port, a bare git
"origin", a server checkout in a temporary directory, and the very SSH command the deploy
workflow runs (scripts/deploy-remote.sh, which runs scripts/deploy.sh on the "server"), while a
client keeps streaming speech through the nginx proxy.

The tests run in order and share one server: first deploy, deploy under load, re-run, image
pruning, staging beside production, a build whose health check fails (automatic rollback), and
a manual rollback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy_support import (
    MODEL, REPO, Load, SshServer, build_image, free_port, http_get, local_sshd, record_timing, require_docker,
    require_inputs, sh,
)

GIT = ["git", "-c", "user.name=CI", "-c", "user.email=ci@example.invalid", "-c", "init.defaultBranch=main"]


class Webhooks:
    """Captures what deploy.sh posts to Slack and Telegram (the real endpoints are not reachable
    here; these stand at the URLs the settings name, on loopback)."""

    def __init__(self):
        self.posts: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                outer.posts.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self, kind: str) -> list[str]:
        return [body for path, body in self.posts if kind in path]


@dataclass
class Stack:
    root: Path
    seed: Path
    server: Path
    ssh: SshServer
    ports: dict
    prefix: str
    image_name: str
    key: str
    hooks: Webhooks

    def base(self, env: str = "production") -> str:
        return f"http://127.0.0.1:{self.ports[env]}"

    def commit(self, message: str, path: str, append: str) -> str:
        target = self.seed / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a") as out:
            out.write(append)
        sh(*GIT, "add", path, cwd=self.seed)
        sh(*GIT, "commit", "-q", "-m", message, cwd=self.seed)
        sh(*GIT, "push", "-q", "origin", "main", cwd=self.seed)
        return sh("git", "rev-parse", "HEAD", cwd=self.seed).stdout.strip()

    def deploy(self, env: str = "production") -> subprocess.CompletedProcess:
        """Runs the deploy workflow's SSH step, with the workflow's secrets as environment."""
        environ = {
            "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
            "SERVER_HOST": self.ssh.host, "SERVER_PORT": str(self.ssh.port), "SERVER_USER": self.ssh.user,
            "CI_SSH_KEY": self.ssh.key.read_text(), "SSH_KNOWN_HOSTS": self.ssh.known_hosts,
            "PROJECT_PATH": str(self.server), "OPENAI_API_KEY": self.key,
            "SLACK_WEBHOOK_URL": f"{self.hooks.url}/slack", "TELEGRAM_BOT_TOKEN": "123:e2e-token",
            "TELEGRAM_CHAT_ID": "42", "HEALTH_PORT": str(self.ports[env]),
        }
        started = time.monotonic()
        result = subprocess.run([str(REPO / "scripts" / "deploy-remote.sh"), env], capture_output=True, text=True,
                                env=environ, cwd=REPO, timeout=1200)
        result.seconds = time.monotonic() - started
        return result

    def served_revision(self, env: str = "production") -> str:
        status, body = http_get(f"{self.base(env)}/build.json")
        assert status == 200, body
        return json.loads(body)["revision"]

    def state(self, env: str = "production") -> dict:
        text = (self.server / ".deploy" / env / "state").read_text()
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def image(self, rev: str) -> str:
        return f"{self.image_name}:{rev[:12]}"


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def assert_deployed(result: subprocess.CompletedProcess, stack: Stack) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert stack.key not in output, "the OpenAI key was echoed"


def seed_files() -> list[str]:
    """The repository as it is now (tracked and new files, not ignored ones)."""
    listed = sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout
    return [p for p in listed.split("\0") if p and (REPO / p).is_file()]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    require_docker()
    require_inputs()
    build_image()  # warms the layer cache the server's own builds start from
    root = tmp_path_factory.mktemp("deploy")
    seed, origin, server = root / "seed", root / "origin.git", root / "server"
    for rel in seed_files():
        (seed / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, seed / rel)
    sh(*GIT, "init", "-q", cwd=seed)
    sh(*GIT, "add", "-A", cwd=seed)
    sh(*GIT, "commit", "-q", "-m", "seed: the repository under test", cwd=seed)
    sh(*GIT, "clone", "-q", "--bare", seed, origin)
    sh(*GIT, "remote", "add", "origin", origin, cwd=seed)
    sh(*GIT, "clone", "-q", origin, server)  # server preparation, as docs/deploy.md describes it
    (server / "models").mkdir(exist_ok=True)
    shutil.copy2(MODEL, server / "models" / MODEL.name)

    hooks = Webhooks()
    prefix = f"e2e{uuid.uuid4().hex[:6]}"
    ports = {"production": free_port(), "staging": free_port()}
    # Server-local settings (kept out of git): loopback ports, names that cannot clash with a
    # real deployment on this host, a small backup count, notification endpoints.
    (server / ".deploy" / "production").mkdir(parents=True)
    (server / ".deploy" / "staging").mkdir(parents=True)
    (server / ".deploy" / "settings").write_text(
        f"COMPOSE_PROJECT_PREFIX={prefix}\nAPP_IMAGE_NAME=whisper-api-{prefix}\nHTTP_BIND=127.0.0.1\n"
        f"HEALTH_TIMEOUT_S=120\nSTOP_GRACE_S=40\nBACKUP_KEEP=3\nTELEGRAM_API_URL={hooks.url}/telegram\n"
    )
    for env, port in ports.items():
        (server / ".deploy" / env / "settings").write_text(f"HTTP_PORT={port}\n")
        # The env files, as an operator prepares them: OpenAI is primary, but its URL stays on
        # loopback (refused), so every final falls back to local and no test reaches the real API.
        sample = (server / ".env.prod.sample").read_text()
        sample = re.sub(r"(?m)^OPENAI_BASE_URL=.*$", "OPENAI_BASE_URL=http://127.0.0.1:9/v1", sample)
        sample = re.sub(r"(?m)^OPENAI_TIMEOUT_MS=.*$", "OPENAI_TIMEOUT_MS=1500", sample)
        env_file = server / (".env" if env == "production" else ".env.staging")
        env_file.write_text(sample)
        env_file.chmod(0o600)

    with local_sshd(root / "ssh") as ssh:
        yield Stack(root, seed, server, ssh, ports, prefix, f"whisper-api-{prefix}",
                    f"sk-e2e-{uuid.uuid4().hex}", hooks)
    for env in ports:
        project = f"{prefix}-{env}"
        ids = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        nets = sh("docker", "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
        if nets:
            subprocess.run(["docker", "network", "rm", *nets], capture_output=True)
    images = sh("docker", "images", "-q", f"whisper-api-{prefix}").stdout.split()
    if images:
        subprocess.run(["docker", "rmi", "-f", *set(images)], capture_output=True)


def test_first_deploy_over_ssh(stack):
    rev = sh("git", "rev-parse", "HEAD", cwd=stack.seed).stdout.strip()
    result = stack.deploy()
    assert_deployed(result, stack)
    record_timing("first deploy over SSH (image build cached)", result.seconds)
    assert stack.served_revision() == rev
    assert http_get(f"{stack.base()}/health")[0] == 200
    logs = sorted((stack.server / "logs").glob("deployment-*.log"))
    assert logs and "deployed" in logs[-1].read_text()
    assert stack.key not in logs[-1].read_text()
    env_text = (stack.server / ".env").read_text()
    assert f"OPENAI_API_KEY={stack.key}" in env_text, "the key from CI did not reach the server's .env"
    assert (stack.server / ".env").stat().st_mode & 0o077 == 0, ".env is readable by others"
    assert "deep health: status=" in result.stdout and "openai" in result.stdout
    assert any("succeeded" in t for t in stack.hooks.texts("slack"))
    assert any("succeeded" in t for t in stack.hooks.texts("telegram"))
    assert '"openai"' in result.stdout or "healthy" in result.stdout  # deploy-remote's verification


def new_colour_final(load: Load, after: float) -> bool:
    drained = [s.closed_at for s in list(load.sessions) if s.close_code == 1012 and s.closed_at]
    return bool(drained) and any(
        s.started >= min(drained) and any(f["_t"] > after for f in s.finals) for s in list(load.sessions))


def summary(load: Load) -> list:
    return [(round(s.started, 1), s.close_code, s.error, [(m["type"], m.get("utterance")) for m in s.messages][-4:])
            for s in list(load.sessions)]


def test_deploy_while_streaming_refuses_nothing_and_loses_no_final(stack):
    old = stack.state()
    with Load(stack.base()) as load:
        load.wait_until_streaming()
        rev = stack.commit("docs: a change to deploy", "docs/e2e-deploy-note.txt", "deployed under load\n")
        result = stack.deploy()
        assert_deployed(result, stack)
        # Keep streaming until the new colour has sent a final: one from a session that began
        # after the old colour's drain (its 1012), arriving after the deploy finished.
        deployed_at = time.monotonic()
        deadline = deployed_at + 120
        while not new_colour_final(load, deployed_at):
            assert time.monotonic() < deadline, f"no final from the new colour: {summary(load)}"
            time.sleep(0.5)
    record_timing("deploy under load over SSH", result.seconds)

    assert stack.served_revision() == rev
    new = stack.state()
    assert new["ACTIVE_COLOR"] != old["ACTIVE_COLOR"] and new["ACTIVE_IMAGE"] == stack.image(rev)

    refused = [s.error for s in load.sessions if s.error]
    assert not refused, f"connections failed during the deploy: {refused}"
    assert not load.failed_probes(), f"/health probes failed: {load.failed_probes()[:5]}"
    assert any(s.close_code == 1012 for s in load.sessions), "no session was drained by the old container"
    for session in load.sessions:
        assert session.close_code in (1000, 1012), session.close_code
        assert not session.missing_finals(), f"finals lost: {session.missing_finals()} in {session.messages}"
        drained = session.close_code == 1012
        assert drained or session.of_type("done"), "a session ended without done"
    gaps = load.reconnect_gaps()
    record_timing("longest gap between successful /health probes during the switch", load.longest_probe_gap(),
                  probes=len(load.probes))
    record_timing("reconnect after 1012 until the new session's ready", max(gaps, default=0.0), count=len(gaps))
    assert max(gaps, default=0.0) < 2.0, gaps


def test_rerun_is_idempotent(stack):
    before = stack.state()
    result = stack.deploy()
    assert_deployed(result, stack)
    assert "nothing to do" in result.stdout
    assert stack.state()["ACTIVE_IMAGE"] == before["ACTIVE_IMAGE"]


def test_next_deploy_prunes_old_images_and_backups(stack):
    first_image = stack.state()["PREVIOUS_IMAGE"]
    assert image_exists(first_image)
    rev = stack.commit("docs: another change", "docs/e2e-deploy-note.txt", "and another\n")
    result = stack.deploy()
    assert_deployed(result, stack)
    assert stack.served_revision() == rev
    state = stack.state()
    assert image_exists(state["ACTIVE_IMAGE"]) and image_exists(state["PREVIOUS_IMAGE"])
    assert not image_exists(first_image), "the image two deploys back was not pruned"
    assert f"pruned image {first_image}" in result.stdout
    backups = list((stack.server / "backups" / "production").iterdir())
    assert len(backups) == 3, backups  # BACKUP_KEEP=3 after four deploys
    assert all((b / "revision").is_file() and (b / "env").is_file() for b in backups)


def test_staging_runs_beside_production(stack):
    result = stack.deploy("staging")
    assert_deployed(result, stack)
    rev = sh("git", "rev-parse", "HEAD", cwd=stack.seed).stdout.strip()
    assert stack.served_revision("staging") == rev
    assert stack.served_revision("production") == rev
    assert sorted((stack.server / "staging" / "logs").glob("deployment-*.log"))
    projects = sh("docker", "ps", "--format", '{{.Label "com.docker.compose.project"}}').stdout.split()
    assert f"{stack.prefix}-production" in projects and f"{stack.prefix}-staging" in projects


def test_failing_health_check_rolls_back_and_the_old_version_keeps_serving(stack):
    good = stack.state()
    good_rev = good["ACTIVE_REVISION"]
    # A build that never becomes healthy: its command carries an invalid setting, so the
    # server refuses to start (and the container keeps restarting).
    bad_rev = stack.commit("break: invalid VAD setting", "Dockerfile",
                           'CMD ["whisper-api", "--vad-aggressiveness", "9"]\n')
    with Load(stack.base()) as load:
        load.wait_until_streaming()
        result = stack.deploy()
    output = result.stdout + result.stderr
    record_timing("failed deploy with automatic rollback", result.seconds)
    assert result.returncode != 0, output[-4000:]
    assert "rolled back" in output and stack.key not in output
    assert stack.served_revision() == good_rev
    assert stack.state()["ACTIVE_IMAGE"] == good["ACTIVE_IMAGE"]
    head = sh("git", "rev-parse", "HEAD", cwd=stack.server).stdout.strip()
    assert head == good_rev != bad_rev, "the checkout did not return to the previous revision"
    running = sh("docker", "ps", "--format", "{{.Image}}").stdout.split()
    assert stack.image(bad_rev) not in running
    assert not load.failed_probes(), load.failed_probes()[:5]
    assert not [s.error for s in load.sessions if s.error]
    assert all(not s.missing_finals() for s in load.sessions)
    assert any("failed" in t for t in stack.hooks.texts("slack"))


def test_manual_rollback_returns_to_the_previous_image(stack):
    state = stack.state()
    result = subprocess.run([str(stack.server / "scripts" / "deploy.sh"), "production", "--rollback"],
                            capture_output=True, text=True, cwd=stack.server, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert stack.state()["ACTIVE_IMAGE"] == state["PREVIOUS_IMAGE"]
    assert stack.served_revision() == state["PREVIOUS_REVISION"]
