"""Helpers for the container and deploy tests: the real Docker engine, the production image,
a WebSocket client that streams real speech, background load with a record of every
connection, and a local sshd.

Nothing here is a stand-in for the project: the image is built from the Dockerfile, the server
is the real binary with the real tiny.en model, and the deploy runs the real scripts over SSH.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[2]
# The test clips live in the repository (tests/fixtures/speech/README.md).
SPEECH_DIR = REPO / "tests" / "fixtures" / "speech"
SPEECH = SPEECH_DIR / "short" / "jfk_inaugural_1961.wav"
MODEL = REPO / "models" / "ggml-tiny.en.bin"
IMAGE = os.environ.get("WHISPER_TEST_IMAGE", "whisper-api:e2e")
CHUNK_MS = 100
TIMINGS_FILE = Path(os.environ.get("WHISPER_TEST_TIMINGS", "/tmp/whisper-e2e-timings.jsonl"))


def record_timing(name: str, seconds: float, **extra) -> None:
    """Appends a measured figure, printed at the end of scripts/test-deploy.sh."""
    with TIMINGS_FILE.open("a") as out:
        out.write(json.dumps({"name": name, "seconds": round(seconds, 2), **extra}) + "\n")


def sh(*cmd, check=True, timeout=600, env=None, cwd=None, input=None) -> subprocess.CompletedProcess:
    """Runs a command; on failure the test fails with its output (not a bare exit code)."""
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, input=input
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def require_docker() -> None:
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is not installed: these tests need a real Docker engine")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if info.returncode != 0:
        pytest.fail(
            "the Docker engine is unavailable, so the container and deploy tests cannot run: "
            f"{info.stderr.strip()[:400]} (start dockerd, or run as a user in the docker group)"
        )


def require_inputs() -> None:
    if not MODEL.is_file():
        pytest.fail(f"{MODEL} is missing: run scripts/fetch-model.sh first")
    if not SPEECH.is_file():
        pytest.fail(f"{SPEECH} is missing: the test clips are part of the repository (tests/fixtures/speech)")


_built: dict[str, float] = {}


def base_image_args() -> list[str]:
    """--build-arg pairs naming the base images scripts/docker-base-images.sh chose."""
    lines = sh(REPO / "scripts" / "docker-base-images.sh", "--print").stdout.split()
    return [arg for line in lines for arg in ("--build-arg", line)]


def build_image(tag: str = IMAGE, context: Path = REPO) -> str:
    """Builds the production image from the Dockerfile once per run (then the layer cache)."""
    require_docker()
    if tag not in _built:
        sh(REPO / "scripts" / "docker-base-images.sh", timeout=1800)
        started = time.monotonic()
        sh("docker", "build", *base_image_args(), "-t", tag, context, timeout=3600)
        _built[tag] = time.monotonic() - started
        # A tag on the builder stage keeps its layers (the compiled dependencies) from being
        # pruned as dangling images, so later builds, the deploys' included, stay warm.
        sh("docker", "build", "-q", *base_image_args(), "--target", "builder", "-t", "whisper-api-builder:cache", context,
           timeout=600)
        record_timing("docker build (this run)", _built[tag], image=tag)
    return tag


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Loopback only: never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); raises only when no HTTP answer came back."""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def wait_for_health(base: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = http_get(f"{base}/health", timeout=3)
            if status == 200:
                return json.loads(body)
            last = f"{status} {body[:200]}"
        except OSError as err:
            last = repr(err)
        time.sleep(0.5)
    pytest.fail(f"{base}/health did not answer 200 within {timeout:.0f}s (last: {last})")


@dataclass
class Container:
    name: str
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        out = sh("docker", "logs", self.name, check=False)
        return out.stdout + out.stderr


@contextlib.contextmanager
def run_container(image: str, env: dict | None = None, host_network: bool = False, mount_model: bool = True,
                  extra: list[str] | None = None):
    """Starts the image detached; the app port is published on loopback (or, with host
    networking, the server listens on a free loopback port itself)."""
    name = f"whisper-e2e-{uuid.uuid4().hex[:8]}"
    args = ["docker", "run", "-d", "--name", name]
    port = 0
    if host_network:
        port = free_port()
        args += ["--network", "host", "-e", "HOST=127.0.0.1", "-e", f"PORT={port}"]
    else:
        args += ["-p", "127.0.0.1::8000"]
    if mount_model:
        args += ["-v", f"{MODEL.parent}:/app/models:ro"]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    args += extra or []
    args.append(image)
    sh(*args)
    try:
        if not host_network:
            mapping = sh("docker", "port", name, "8000/tcp").stdout.split()[0]
            port = int(mapping.rsplit(":", 1)[1])
        yield Container(name, port)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def pcm_of(wav_path: Path) -> tuple[bytes, int]:
    with wave.open(str(wav_path)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, "expected 16-bit mono speech"
        return w.readframes(w.getnframes()), w.getframerate()


@dataclass
class Session:
    """What one WebSocket session saw."""

    started: float
    ready_at: float | None = None
    closed_at: float | None = None
    close_code: int | None = None
    messages: list[dict] = field(default_factory=list)
    error: str | None = None

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def finals(self) -> list[dict]:
        return self.of_type("final")

    def missing_finals(self) -> set[int]:
        """Utterances that showed partials (so were open) but never got their final."""
        opened = {m["utterance"] for m in self.messages if m.get("type") in ("partial", "final")}
        return opened - {m["utterance"] for m in self.finals}


def stream_speech(url: str, wav_path: Path = SPEECH, realtime: bool = False, stop: threading.Event | None = None,
                  timeout: float = 120.0, session: Session | None = None, live: bool = False,
                  ssl_context: ssl.SSLContext | None = None) -> Session:
    """Streams a WAV as PCM frames (at real time, or as fast as possible), then `eof`, and
    records everything until the server closes (into `session` as it arrives, when given).
    `live`: like a microphone, the speech repeats until `stop` is set, then `eof`.
    `ssl_context`: for wss:// URLs (e.g. one trusting a test CA).
    A 1012 close (a server draining for a deploy) ends the session early."""
    pcm, rate = pcm_of(wav_path)
    step = rate * 2 * CHUNK_MS // 1000
    session = session or Session(started=time.monotonic())
    tls = {"ssl": ssl_context} if ssl_context is not None else {}
    try:
        ws = connect(f"{url}?sample_rate={rate}", open_timeout=10, close_timeout=5, max_size=None, proxy=None,
                     **tls)
    except (OSError, InvalidHandshake, TimeoutError) as err:
        session.error = f"connect: {err!r}"
        session.closed_at = time.monotonic()
        return session
    finished_sending = threading.Event()

    def sender():
        try:
            t0, sent = time.monotonic(), 0
            while True:
                for off in range(0, len(pcm), step):
                    if stop is not None and stop.is_set():
                        break
                    ws.send(pcm[off:off + step])
                    sent += 1
                    if realtime:
                        time.sleep(max(0.0, t0 + sent * CHUNK_MS / 1000 - time.monotonic()))
                if not live or stop is None or stop.is_set():
                    break
            ws.send(json.dumps({"type": "eof"}))
        except ConnectionClosed:
            pass  # the server closed first (1012 during a drain): the receiver records it
        finally:
            finished_sending.set()

    thread = threading.Thread(target=sender, daemon=True)
    with ws:
        thread.start()
        deadline = None if live else time.monotonic() + timeout
        try:
            while True:
                if deadline is None and finished_sending.is_set():
                    deadline = time.monotonic() + timeout
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    raw = ws.recv(timeout=max(0.1, min(remaining, 1.0)))
                except TimeoutError:
                    continue
                msg = json.loads(raw)
                msg["_t"] = time.monotonic()
                if msg.get("type") == "ready":
                    session.ready_at = msg["_t"]
                session.messages.append(msg)
        except ConnectionClosed as closed:
            session.close_code = closed.rcvd.code if closed.rcvd is not None else None
            if session.close_code is None:
                session.error = f"closed without a close frame: {closed!r}"
        session.closed_at = time.monotonic()
    thread.join(timeout=5)
    if session.close_code is None and session.error is None:
        session.error = "no close within the timeout"
    return session


class Load:
    """Background traffic through the proxy during a deploy: a live WebSocket session streaming
    speech at real time without pause, as a microphone does (a 1012 close leads straight to a
    new session, as the demo page reconnects), and a prober opening a new HTTP connection to
    /health every 50 ms."""

    def __init__(self, base: str, speech: bool = True):
        self.base = base
        self.ws_url = base.replace("http://", "ws://") + "/ws"
        self.stop = threading.Event()
        self.sessions: list[Session] = []
        self.probes: list[tuple[float, int | None, str]] = []  # (time, status, error)
        self.threads = [threading.Thread(target=self._probe, daemon=True)]
        if speech:
            self.threads.append(threading.Thread(target=self._stream, daemon=True))

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def _stream(self) -> None:
        while not self.stop.is_set():
            session = Session(started=time.monotonic())
            self.sessions.append(session)
            stream_speech(self.ws_url, realtime=True, stop=self.stop, session=session, live=True, timeout=60)

    def _probe(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            try:
                status, _ = http_get(f"{self.base}/health", timeout=5)
                self.probes.append((now, status, ""))
            except OSError as err:
                self.probes.append((now, None, repr(err)))
            time.sleep(0.05)

    def wait_until_streaming(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(s.of_type("partial") or s.finals for s in list(self.sessions)):
                return
            time.sleep(0.2)
        pytest.fail(f"no partial or final arrived through the proxy within {timeout:.0f}s")

    def failed_probes(self) -> list[tuple[float, int | None, str]]:
        return [p for p in self.probes if p[1] != 200]

    def longest_probe_gap(self) -> float:
        ok = [t for t, status, _ in self.probes if status == 200]
        return max((b - a for a, b in zip(ok, ok[1:])), default=0.0)

    def reconnect_gaps(self) -> list[float]:
        """Seconds from each 1012 close to the next session's `ready`."""
        gaps = []
        for prev, nxt in zip(self.sessions, self.sessions[1:]):
            if prev.close_code == 1012 and prev.closed_at and nxt.ready_at:
                gaps.append(nxt.ready_at - prev.closed_at)
        return gaps


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    key: Path
    known_hosts: str


@contextlib.contextmanager
def local_sshd(workdir: Path):
    """A real OpenSSH server on a loopback port, with a host key and one authorised client key
    made here. `UsePAM no` and `StrictModes no` let it run from a temporary directory."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd):
        pytest.fail("sshd is missing: apt-get install openssh-server (scripts/test-deploy.sh does)")
    workdir.mkdir(parents=True, exist_ok=True)
    host_key, client_key = workdir / "host_ed25519", workdir / "ci_ed25519"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e-host", "-f", host_key)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "whisper-ci-deploy", "-f", client_key)
    authorized = workdir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    port, user = free_port(), getpass.getuser()
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {workdir}/sshd.pid\n"
        f"AuthorizedKeysFile {authorized}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        f"AllowUsers {user}\nLogLevel VERBOSE\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    log = (workdir / "sshd.log").open("w")
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {(workdir / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.1)
        host_pub = host_key.with_suffix(".pub").read_text().split()
        yield SshServer("127.0.0.1", port, user, client_key, f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
