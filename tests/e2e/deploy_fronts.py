"""What stands around a deployment in the deploy suite, for real and on loopback: Debian's
docker-registry (the image pipeline's registry) and Caddy (the HTTPS front, deploy/caddy/Caddyfile,
with its own local CA), plus a Chromium profile home that trusts that CA.

Ports come from this suite's range, so that parallel suites on one machine do not collide."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy_support import REPO, sh

REGISTRY_PORTS = range(18250, 18260)
CADDY_PORTS = range(18260, 18290)
START_TIMEOUT_S = 30
CADDYFILE = REPO / "deploy" / "caddy" / "Caddyfile"


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(ports: range, count: int) -> list[int]:
    found = [p for p in ports if port_is_free(p)][:count]
    assert len(found) == count, f"fewer than {count} free ports in {ports}"
    return found


def require(exe: str, package: str) -> str:
    path = shutil.which(exe)
    if path is None:
        pytest.fail(f"{exe} is not installed (scripts/test-deploy.sh installs Debian's {package})")
    return path


def wait_until(ready, proc: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        assert proc.poll() is None, f"{what} exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} did not start:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def answers(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def loopback_registry(workdir: Path):
    """Yields host:port of a fresh registry (filesystem storage in workdir)."""
    exe = require("docker-registry", "docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(REGISTRY_PORTS, 1)
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {workdir / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    log = workdir / "registry.log"
    with log.open("w") as out:
        proc = subprocess.Popen([exe, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/v2/"), proc, log, "docker-registry")
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


@dataclass
class Https:
    base: str  # https://localhost:PORT
    ca: Path  # Caddy's local root certificate
    log: Path

    @property
    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@contextlib.contextmanager
def caddy_https(workdir: Path, upstream_port: int):
    """deploy/caddy/Caddyfile as shipped, run with `tls internal` (a local CA instead of ACME)
    for localhost, in front of the proxy on 127.0.0.1:upstream_port."""
    exe = require("caddy", "caddy")
    workdir.mkdir(parents=True, exist_ok=True)
    https_port, http_port, admin_port = free_ports(CADDY_PORTS, 3)
    env = {
        "PATH": os.environ["PATH"], "HOME": str(workdir),
        "XDG_DATA_HOME": str(workdir / "data"), "XDG_CONFIG_HOME": str(workdir / "config"),
        "WHISPER_DOMAIN": "localhost", "HTTP_PORT": str(upstream_port), "CADDY_TLS": "tls internal",
        "CADDY_BIND": "bind 127.0.0.1 ::1",
        "CADDY_HTTPS_PORT": str(https_port), "CADDY_HTTP_PORT": str(http_port),
        "CADDY_ADMIN": f"127.0.0.1:{admin_port}", "CADDY_GLOBAL": "skip_install_trust",
    }
    log = workdir / "caddy.log"
    with log.open("w") as out:
        proc = subprocess.Popen([exe, "run", "--adapter", "caddyfile", "--config", str(CADDYFILE)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    https = Https(f"https://localhost:{https_port}", workdir / "data/caddy/pki/authorities/local/root.crt", log)
    try:
        wait_until(lambda: https.ca.is_file() and answers(f"{https.base}/health", https.context), proc, log, "caddy")
        yield https
    finally:
        stop(proc)


def home_trusting(ca: Path, home: Path) -> dict:
    """An environment whose HOME has an NSS database (Chromium's trust store on Linux) that
    trusts `ca` for TLS servers, as an operator's browser trusts a real CA."""
    certutil = require("certutil", "libnss3-tools")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    sh(certutil, "-N", "-d", f"sql:{nssdb}", "--empty-password")
    sh(certutil, "-A", "-d", f"sql:{nssdb}", "-n", "whisper-e2e-caddy-local", "-t", "C,,", "-i", ca)
    return dict(os.environ, HOME=str(home))

