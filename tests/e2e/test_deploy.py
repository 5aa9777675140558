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
import sqlite3
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from browser_support import launch_chromium, padded_clip
from deploy_fronts import caddy_https, home_trusting, loopback_registry
from deploy_support import (
    MODEL, REPO, SPEECH, Load, SshServer, base_image_args, build_image, free_port, http_get, local_sshd,
    record_timing, require_docker, require_inputs, sh, stream_speech,
)

GIT = ["git", "-c", "user.name=CI", "-c", "user.email=ci@example.invalid", "-c", "init.defaultBranch=main"]
REVISION_LABEL = "org.whisper-api.revision"


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
    # (session id, utterance, text) of finals streamed through the proxy, for the backup checks.
    streamed: list = field(default_factory=list)
    kept_backup: Path | None = None  # a backup with those finals, copied out of pruning's reach
    later_sessions: list = field(default_factory=list)  # session ids stored after that backup

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

    def revert(self, rev: str) -> str:
        """Pushes a commit undoing `rev`, so that later deploys of main build again."""
        sh(*GIT, "revert", "--no-edit", rev, cwd=self.seed)
        sh(*GIT, "push", "-q", "origin", "main", cwd=self.seed)
        return sh("git", "rev-parse", "HEAD", cwd=self.seed).stdout.strip()

    def deploy(self, env: str = "production", **extra: str) -> subprocess.CompletedProcess:
        """Runs the deploy workflow's SSH step, with the workflow's secrets as environment."""
        environ = {
            "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
            "SERVER_HOST": self.ssh.host, "SERVER_PORT": str(self.ssh.port), "SERVER_USER": self.ssh.user,
            "CI_SSH_KEY": self.ssh.key.read_text(), "SSH_KNOWN_HOSTS": self.ssh.known_hosts,
            "PROJECT_PATH": str(self.server), "OPENAI_API_KEY": self.key,
            "SLACK_WEBHOOK_URL": f"{self.hooks.url}/slack", "TELEGRAM_BOT_TOKEN": "123:e2e-token",
            "TELEGRAM_CHAT_ID": "42", "HEALTH_PORT": str(self.ports[env]),
            "GITHUB_ACTOR": "e2e-actor", "GITHUB_RUN_ID": "4242",
            **extra,
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
        f"COMPOSE_PROJECT_PREFIX={prefix}\nAPP_IMAGE_NAME=whisper-api-{prefix}\n"
        f"HEALTH_TIMEOUT_S=120\nSTOP_GRACE_S=40\nBACKUP_KEEP=3\nTELEGRAM_API_URL={hooks.url}/telegram\n"
    )
    for env, port in ports.items():
        # The env files, as an operator prepares them: OpenAI is primary, but its URL stays on
        # loopback (refused), so every final falls back to local and no test reaches the real API.
        sample = (server / ".env.prod.sample").read_text()
        sample = re.sub(r"(?m)^OPENAI_BASE_URL=.*$", "OPENAI_BASE_URL=http://127.0.0.1:9/v1", sample)
        sample = re.sub(r"(?m)^OPENAI_TIMEOUT_MS=.*$", "OPENAI_TIMEOUT_MS=1500", sample)
        # The published address and port, from the env file (the sample's commented lines).
        sample = re.sub(r"(?m)^#HTTP_PORT=.*$", f"HTTP_PORT={port}", sample)
        sample = re.sub(r"(?m)^#HTTP_BIND=.*$", "HTTP_BIND=127.0.0.1", sample)
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
    result = stack.deploy(DEPLOY_REF=rev)
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
    log = logs[-1].read_text()
    assert "actor=e2e-actor run=4242" in log and f"ref={rev}" in log, log[:2000]
    assert "app image " in log and ": id sha256:" in log, "the image digest is not in the deploy log"
    # HTTP_BIND=127.0.0.1 in the env file: the proxy is published on loopback only.
    proxy = sh("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={stack.prefix}-production",
               "--filter", "label=com.docker.compose.service=proxy").stdout.split()
    bindings = sh("docker", "port", proxy[0], "80").stdout.split()
    assert bindings == [f"127.0.0.1:{stack.ports['production']}"], bindings


def page_finals(driver) -> str:
    return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, "#transcript li.final")).lower()


def test_https_front_serves_wss_and_the_demo_page(stack, tmp_path_factory):
    """deploy/caddy/Caddyfile in front of the loopback-bound proxy (its local CA standing in for
    ACME): a streaming session over wss:// with real speech, and the demo page over https:// in
    headless Chromium that trusts the CA, where it streams the same speech from a fake microphone."""
    work = tmp_path_factory.mktemp("https")
    with caddy_https(work / "caddy", stack.ports["production"]) as https:
        started = time.monotonic()
        session = stream_speech(https.base.replace("https://", "wss://") + "/ws", ssl_context=https.context)
        record_timing("streaming session over wss:// through Caddy", time.monotonic() - started)
        spoken = " ".join(f["text"] for f in session.finals).lower()
        assert session.close_code == 1000 and session.of_type("done"), (session.error, session.messages[-3:])
        assert "country" in spoken, spoken

        clip = padded_clip([SPEECH], work / "clip.wav", 0, 3.0)
        browser = launch_chromium(fake_audio=clip, env=home_trusting(https.ca, work / "home"))
        driver = browser.driver
        try:
            driver.get(https.base + "/")
            WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.ready"),
                                            message=f"the demo page did not load over HTTPS: {driver.title!r}")
            assert driver.execute_script("return window.isSecureContext && location.protocol") == "https:"
            driver.find_element(By.ID, "start").click()
            WebDriverWait(driver, 60).until(lambda d: "country" in page_finals(d), message="no final over wss://")
        except Exception:
            print(browser.console_log())
            raise
        finally:
            browser.quit()


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
    stack.streamed = [(s.of_type("ready")[0]["session"], f["utterance"], f["text"])
                      for s in load.sessions if s.of_type("ready") for f in s.finals if f["text"].strip()]
    assert stack.streamed, "no final with text was streamed"


def snapshot_finals(db: Path) -> set:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return set(conn.execute("SELECT session_id, utterance, text FROM finals"))


def test_rerun_is_idempotent(stack):
    """Also: its backup holds the transcript database as a consistent SQLite snapshot, with
    the finals streamed before it."""
    before = stack.state()
    result = stack.deploy()
    assert_deployed(result, stack)
    assert "nothing to do" in result.stdout
    assert stack.state()["ACTIVE_IMAGE"] == before["ACTIVE_IMAGE"]
    backup = sorted((stack.server / "backups" / "production").iterdir())[-1]
    snapshot = backup / "transcripts.db"
    assert snapshot.is_file(), f"no database snapshot in {backup}: {sorted(p.name for p in backup.iterdir())}"
    assert snapshot.stat().st_mode & 0o077 == 0, "the snapshot is readable by others"
    with sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    missing = set(stack.streamed) - snapshot_finals(snapshot)
    assert not missing, f"finals streamed before the deploy are not in its backup: {sorted(missing)[:5]}"
    assert "transcripts.db" not in sh("tar", "-tzf", backup / "storage.tar.gz").stdout
    stack.kept_backup = stack.root / "kept-backup"
    shutil.copytree(backup, stack.kept_backup)


def test_next_deploy_prunes_old_images_and_backups(stack):
    """Also: the requested SHA is deployed even though main moved on after it was pushed."""
    first_image = stack.state()["PREVIOUS_IMAGE"]
    assert image_exists(first_image)
    rev = stack.commit("docs: another change", "docs/e2e-deploy-note.txt", "and another\n")
    later = stack.commit("docs: pushed while the first was tested", "docs/e2e-deploy-note.txt", "later\n")
    result = stack.deploy(DEPLOY_REF=rev)
    assert_deployed(result, stack)
    assert stack.served_revision() == rev != later
    assert stack.state()["ACTIVE_REVISION"] == rev
    assert "has moved on" in result.stdout
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
    assert stack.served_revision("production") == stack.state()["ACTIVE_REVISION"]
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
    env_before = (stack.server / ".env").read_text()
    # Not production's active revision: staging shares the checkout and moved it on.
    head_before = sh("git", "rev-parse", "HEAD", cwd=stack.server).stdout.strip()
    try:
        with Load(stack.base()) as load:
            load.wait_until_streaming()
            result = stack.deploy(OPENAI_API_KEY=f"{stack.key}-rotated")  # the new env file
    finally:
        stack.revert(bad_rev)
    output = result.stdout + result.stderr
    record_timing("failed deploy with automatic rollback", result.seconds)
    assert result.returncode != 0, output[-4000:]
    assert "rolled back" in output and stack.key not in output
    assert (stack.server / ".env").read_text() == env_before, "the failed deploy's env file was left in place"
    assert stack.served_revision() == good_rev
    assert stack.state()["ACTIVE_IMAGE"] == good["ACTIVE_IMAGE"]
    head = sh("git", "rev-parse", "HEAD", cwd=stack.server).stdout.strip()
    assert head == head_before != bad_rev, "the checkout did not return to where it was"
    running = sh("docker", "ps", "--format", "{{.Image}}").stdout.split()
    assert stack.image(bad_rev) not in running
    assert not load.failed_probes(), load.failed_probes()[:5]
    assert not [s.error for s in load.sessions if s.error]
    assert all(not s.missing_finals() for s in load.sessions)
    assert any("failed" in t for t in stack.hooks.texts("slack"))
    # Sessions with a final are stored (a final is stored before it is sent).
    stack.later_sessions = [s.of_type("ready")[0]["session"] for s in load.sessions if s.of_type("ready") and s.finals]


def test_manual_rollback_returns_to_the_previous_image(stack):
    state = stack.state()
    result = subprocess.run([str(stack.server / "scripts" / "deploy.sh"), "production", "--rollback"],
                            capture_output=True, text=True, cwd=stack.server, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert stack.state()["ACTIVE_IMAGE"] == state["PREVIOUS_IMAGE"]
    assert stack.served_revision() == state["PREVIOUS_REVISION"]
    # The transcripts streamed before the deploys are still served after the rollback.
    for session_id, _, text in stack.streamed[:3]:
        status, body = http_get(f"{stack.base()}/v1/sessions/{session_id}/transcript?format=txt")
        assert status == 200 and text.strip() in body, (status, body[:500])


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with loopback_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


def registry_images(repo: str) -> list[str]:
    return sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", repo).stdout.split()


def test_deploy_pulls_the_ci_image_from_a_registry_by_digest_and_label(stack, registry):
    """What the workflow does: the image job builds the commit once and pushes it; the deploy job
    deploys that SHA and image (IMAGE_REPO/IMAGE_TAG/IMAGE_DIGEST). An image whose revision label
    is not the commit is refused; the pulled registry names are pruned."""
    serving = stack.state()
    repo = f"{registry}/{stack.prefix}/whisper-api"
    rev = stack.commit("docs: built once by CI", "docs/e2e-deploy-note.txt", "from the registry\n")
    wrong = f"{repo}:{rev[:12]}-wrong"  # another commit's image under this commit's name
    sh("docker", "tag", serving["ACTIVE_IMAGE"], wrong)
    sh("docker", "push", wrong, timeout=300)
    sh("docker", "rmi", wrong)
    result = stack.deploy(DEPLOY_REF=rev, IMAGE_REPO=repo, IMAGE_TAG=f"{rev[:12]}-wrong")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert f"labelled revision '{serving['ACTIVE_REVISION']}', not {rev}: refusing it" in output, output[-4000:]
    assert stack.served_revision() == serving["ACTIVE_REVISION"]

    started = time.monotonic()
    tag = f"{repo}:{rev[:12]}"
    sh("docker", "build", "-q", *base_image_args(), "--build-arg", f"GIT_REVISION={rev}",
       "--label", f"{REVISION_LABEL}={rev}", "-t", tag, stack.seed, timeout=1800)
    sh("docker", "push", tag, timeout=300)
    digest = sh("docker", "image", "inspect", "-f", "{{index .RepoDigests 0}}", tag).stdout.strip().split("@")[1]
    sh("docker", "rmi", tag)  # the server has only what it pulls
    assert not registry_images(repo)
    record_timing("CI image build (cached) and push to the loopback registry", time.monotonic() - started)

    result = stack.deploy(DEPLOY_REF=rev, IMAGE_REPO=repo, IMAGE_TAG=rev[:12], IMAGE_DIGEST=digest)
    assert_deployed(result, stack)
    record_timing("deploy of a pulled image over SSH", result.seconds)
    assert f"pulling {repo}@{digest}" in result.stdout, result.stdout[-3000:]
    assert f"building {stack.image(rev)}" not in result.stdout
    assert stack.served_revision() == rev
    state = stack.state()
    assert state["ACTIVE_IMAGE"] == stack.image(rev)
    label = sh("docker", "image", "inspect", "-f", f'{{{{ index .Config.Labels "{REVISION_LABEL}" }}}}',
               stack.image(rev)).stdout.strip()
    assert label == rev
    assert not registry_images(repo), "the registry names of pulled images were not pruned"


def test_restore_transcripts_from_a_backup_snapshot(stack):
    """scripts/restore-transcripts.sh (docs/deploy.md, "Rollback"): the database goes back to the
    snapshot: the finals it holds are served, the sessions stored after it are gone."""
    assert stack.kept_backup and stack.later_sessions
    for session_id in stack.later_sessions:
        assert http_get(f"{stack.base()}/v1/sessions/{session_id}")[0] == 200
    started = time.monotonic()
    result = subprocess.run([str(stack.server / "scripts" / "restore-transcripts.sh"), "production",
                             str(stack.kept_backup)], capture_output=True, text=True, cwd=stack.server, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    record_timing("transcript database restore from a backup snapshot", time.monotonic() - started)
    for session_id, _, text in stack.streamed[:3]:
        status, body = http_get(f"{stack.base()}/v1/sessions/{session_id}/transcript?format=txt")
        assert status == 200 and text.strip() in body, (status, body[:500])
    for session_id in stack.later_sessions:
        assert http_get(f"{stack.base()}/v1/sessions/{session_id}")[0] == 404, "a later session survived the restore"
    assert list((stack.server / "storage").glob("transcripts.db.replaced-*")), "the replaced database was not kept"
