"""Two app replicas behind nginx (docker-compose.replicas.yml) on the real Docker engine, with
live real-time streams: new sessions spread over both (least connections), draining one
(SIGTERM through `docker-compose stop`) sends its sessions' finals and closes them with 1012,
the clients reconnect through the proxy to the other replica within 2 s, no final is lost and
no connection or request is refused.

Reuses the image the container suite builds (whisper-api:e2e, from the layer cache) and the
proxy image built from deploy/nginx; run by scripts/test-scale.sh replicas.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from deploy_support import (
    MODEL, REPO, SPEECH, Load, Session, base_image_args, build_image, free_port, http_get, record_timing,
    require_docker, require_inputs, sh, stream_speech,
)

PROXY_IMAGE = os.environ.get("WHISPER_TEST_PROXY_IMAGE", "whisper-api-proxy:e2e")
CLIENTS = 4
MAX_RECONNECT_S = 2.0


class Replicas:
    def __init__(self, port: int, compose: list[str], env: dict):
        self.base = f"http://127.0.0.1:{port}"
        self.compose = compose
        self.env = env

    def run(self, *args, **kw):
        return sh(*self.compose, *args, env=self.env, cwd=REPO, **kw)

    def container(self, service: str) -> str:
        return self.run("ps", "-q", service).stdout.strip()

    def app_get(self, service: str, path: str, port: int = 8000) -> str:
        """GET on the replica itself (not through the proxy); port 9091 is its admin listener."""
        return sh("docker", "exec", self.container(service), "curl", "-sS", f"http://127.0.0.1:{port}{path}",
                  check=False).stdout

    def active_sessions(self, service: str) -> int:
        for line in self.app_get(service, "/metrics", port=9091).splitlines():
            if line.startswith("whisper_sessions_active "):
                return int(float(line.split()[1]))
        return -1


@pytest.fixture(scope="module")
def replicas():
    require_docker()
    require_inputs()
    image = build_image()
    # The base image scripts/docker-base-images.sh chose (official, or its own local name).
    sh("docker", "build", "-q", *base_image_args(), "-t", PROXY_IMAGE, REPO / "deploy/nginx", timeout=1800)
    port = free_port()
    env_file = Path(tempfile.mkstemp(prefix="whisper-replicas-", suffix=".env")[1])
    env_file.write_text("PRIMARY_SERVICE=local\nMAX_SESSIONS=4\nSHUTDOWN_GRACE_MS=10000\nRUST_LOG=info\n")
    env = dict(os.environ, APP_IMAGE=image, PROXY_IMAGE=PROXY_IMAGE, HTTP_BIND="127.0.0.1",
               HTTP_PORT=str(port), MODELS_DIR=str(MODEL.parent), APP_ENV_FILE=str(env_file))
    project = f"whisper-e2e-replicas-{uuid.uuid4().hex[:6]}"
    compose = ["docker-compose", "-p", project, "-f", str(REPO / "docker-compose.replicas.yml")]
    r = Replicas(port, compose, env)
    started = time.monotonic()
    r.run("up", "-d", timeout=300)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all('"ready"' in r.app_get(s, "/ready") for s in ("app-1", "app-2")):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the replicas did not become ready:\n" + r.run("logs", "--tail", "40", check=False).stdout)
        record_timing("replicas up and ready", time.monotonic() - started)
        yield r
    finally:
        logs = r.run("logs", "--tail", "60", check=False).stdout
        r.run("down", "-v", "-t", "5", check=False, timeout=120)
        env_file.unlink(missing_ok=True)
        print(logs[-6000:])


class Client:
    """A live microphone through the proxy: streams speech at real time without pause, and
    opens a new session right after a 1012 close, as the demo page does."""

    def __init__(self, ws_url: str, stop: threading.Event):
        self.ws_url, self.stop = ws_url, stop
        self.sessions: list[Session] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            session = Session(started=time.monotonic())
            self.sessions.append(session)
            stream_speech(self.ws_url, SPEECH, realtime=True, stop=self.stop, session=session, live=True,
                          timeout=60)
            if session.error or session.close_code != 1012:
                return

    def streaming(self) -> bool:
        """Its current session shows live captions: a partial has come back. After the drain
        one 1-core replica serves all four streams, whose finals would keep its partials
        waiting were an aged partial not let through between finals (engine/queue.rs)."""
        return bool(self.sessions) and bool(self.sessions[-1].of_type("partial"))


def wait(what: str, check, timeout: float, clients: list[Client]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    seen = [[(s.close_code, s.error, len(s.of_type("partial")), [m.get("type") for m in s.messages][-4:])
             for s in c.sessions] for c in clients]
    pytest.fail(f"{what} within {timeout:.0f}s; per client, each session's close code, error, "
                f"partials and last messages: {seen}")


def test_sessions_spread_and_a_drained_replica_hands_its_clients_to_the_other(replicas):
    stop = threading.Event()
    clients = [Client(replicas.base.replace("http://", "ws://") + "/ws", stop) for _ in range(CLIENTS)]
    with Load(replicas.base, speech=False) as probes:
        for client in clients:
            client.thread.start()
            time.sleep(0.5)
        wait("every client streaming", lambda: all(c.streaming() for c in clients), 60, clients)
        spread = {s: replicas.active_sessions(s) for s in ("app-1", "app-2")}
        # least_conn: both replicas get sessions (an exact 2/2 split can tilt when a health
        # probe through the proxy is in flight at the moment a session connects).
        assert sum(spread.values()) == CLIENTS and min(spread.values()) >= 1, f"spread: {spread}"

        drain_started = time.monotonic()
        replicas.run("stop", "-t", "45", "app-1", timeout=120)
        drain_s = time.monotonic() - drain_started
        # The drained clients are back, on app-2, and streaming.
        wait("every client streaming again", lambda: all(c.streaming() for c in clients), 30, clients)
        time.sleep(3)
        after = replicas.active_sessions("app-2")
        stop.set()
        for client in clients:
            client.thread.join(timeout=90)

    record_timing("replica drain (docker-compose stop app-1)", drain_s, spread=spread)
    sessions = [s for c in clients for s in c.sessions]
    assert all(s.error is None for s in sessions), [s.error for s in sessions if s.error]
    drained = [s for s in sessions if s.close_code == 1012]
    assert len(drained) == spread["app-1"], [s.close_code for s in sessions]
    assert after == CLIENTS, f"app-2 has {after} sessions after the drain"
    for s in sessions:
        assert s.ready_at is not None
        assert not s.missing_finals(), f"finals lost: {s.missing_finals()} in {s.messages}"
    assert all(s.finals for s in drained), "a drained session sent its open utterance's final"
    gaps = []
    for c in clients:
        for prev, nxt in zip(c.sessions, c.sessions[1:]):
            assert prev.close_code == 1012 and nxt.ready_at is not None
            gaps.append(nxt.ready_at - prev.closed_at)
    assert len(gaps) == spread["app-1"], gaps
    assert max(gaps) < MAX_RECONNECT_S, f"reconnect gaps {gaps}"
    record_timing("reconnect after drain (max)", max(gaps), gaps=[round(g, 3) for g in gaps])
    # Every HTTP request through the proxy during all of it was answered 200.
    assert probes.probes and not probes.failed_probes(), probes.failed_probes()[:5]
    # The last sessions ended normally, with their finals.
    assert all(c.sessions[-1].close_code == 1000 for c in clients), [c.sessions[-1].close_code for c in clients]
    status, _ = http_get(replicas.base + "/ready")
    assert status == 200
