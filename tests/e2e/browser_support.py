"""Helpers for the browser tests: the real server as a subprocess, headless Chromium with a
fake microphone, word error rate, and subtitle parsing.

Paths come from the repository layout, each overridable from the environment:
WHISPER_API_BIN (server binary), WHISPER_MODEL (model file). The real speech clips are in the
repository, tests/fixtures/speech.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import wave
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO_ROOT = Path(__file__).resolve().parents[2]
STATIC_DIR = REPO_ROOT / "static"
# Debian's packages by default; CHROMIUM_BIN/CHROMEDRIVER_BIN name another pair (GitHub's Ubuntu
# runners ship Google Chrome and its chromedriver, and their `chromium` package is a snap).
CHROMIUM = os.environ.get("CHROMIUM_BIN") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN") or "/usr/bin/chromedriver"

# The model loads in about a second, but a cold page cache on a busy CI machine is slower.
HEALTH_TIMEOUT_S = 120
SHUTDOWN_TIMEOUT_S = 15

# Without these Chromium stalls on this closed network (updates, sync, first-run pages).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1100,860",
    "--lang=en-US",
]


def server_binary() -> Path:
    if os.environ.get("WHISPER_API_BIN"):
        return Path(os.environ["WHISPER_API_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "release" / "whisper-api"


def model_path() -> Path:
    return Path(os.environ.get("WHISPER_MODEL", REPO_ROOT / "models" / "ggml-tiny.en.bin"))


def speech_dir() -> Path:
    return REPO_ROOT / "tests" / "fixtures" / "speech"


def wav_duration_s(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def padded_clip(sources: list[Path], target: Path, gap_s: float, tail_s: float) -> Path:
    """The `sources` (same format) one after another, `gap_s` of digital silence between them
    and `tail_s` after the last.

    Chromium's fake capture does not fall silent when its file ends: it repeats the last 10 ms
    buffer (a 100 Hz buzz, measured with Chromium 156), which a VAD may take for speech. Ending
    the file with real silence makes what repeats silence, as with a person who stops talking."""
    chunks, params = [], None
    for i, source in enumerate(sources):
        with wave.open(str(source), "rb") as src:
            params = params or src.getparams()
            assert src.getparams()[:3] == params[:3], f"{source} differs in format"
            chunks.append(src.readframes(src.getnframes()))
        seconds = tail_s if i == len(sources) - 1 else gap_s
        chunks.append(bytes(int(params.framerate * seconds) * params.sampwidth * params.nchannels))
    with wave.open(str(target), "wb") as dst:
        dst.setparams(params)
        dst.writeframes(b"".join(chunks))
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """The real whisper-api binary on a free loopback port, logging to a file."""

    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @classmethod
    def start(cls, log_dir: Path, port: int | None = None, **env_overrides: str) -> "ServerProcess":
        binary = server_binary()
        if not binary.exists():
            raise FileNotFoundError(f"{binary} is missing: run `cargo build --release` first")
        model = model_path()
        if not model.exists():
            raise FileNotFoundError(f"{model} is missing: run scripts/fetch-model.sh first")
        port = port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env.update(
            HOST="127.0.0.1",
            PORT=str(port),
            WHISPER_MODEL=str(model),
            STATIC_DIR=str(STATIC_DIR),
            PRIMARY_SERVICE="local",
            RUST_LOG=env.get("RUST_LOG", "info"),
            # No admin listener: several servers run at once and would all want 127.0.0.1:9091.
            ADMIN_ADDR="none",
        )
        env.update(env_overrides)
        log_path = log_dir / f"server-{port}.log"
        log = open(log_path, "ab")
        # Run from an empty directory so a developer's .env cannot change the configuration.
        proc = subprocess.Popen(
            [str(binary)], cwd=log_dir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        server = cls(port=port, proc=proc, log_path=log_path)
        server.wait_healthy()
        return server

    def wait_healthy(self) -> dict:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "health", timeout=2) as resp:
                    if resp.status == 200:
                        return json.loads(resp.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"/health not 200 after {HEALTH_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class FakeOpenAI:
    """An OpenAI-compatible transcription endpoint on loopback, the one thing these tests fake.

    The first transcription request succeeds with `text`; every later one is refused with a
    400, which the server does not retry, so its finals fall back to the local text."""

    def __init__(self, text: str):
        self.text = text
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # the deep health check
                self.reply(200, {"object": "list", "data": []})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append(self.headers.get("Content-Type", ""))
                if self.path.endswith("/audio/transcriptions") and len(fake.requests) == 1:
                    self.reply(200, {"text": fake.text})
                else:
                    self.reply(400, {"error": {"message": "refused by the test", "type": "invalid_request_error"}})

            def reply(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Browser:
    """One headless Chromium with its own profile and download directory."""

    driver: webdriver.Chrome
    profile_dir: Path
    download_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.download_dir = self.profile_dir / "downloads"

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile_dir, ignore_errors=True)

    def console_log(self) -> str:
        try:
            entries = self.driver.get_log("browser")
        except Exception as err:  # the log is only a debugging aid
            return f"(no console log: {err})"
        return "\n".join(f"{e['level']} {e['message']}" for e in entries)


def launch_chromium(fake_audio: Path | None = None, extra_args: list[str] | None = None,
                    env: dict | None = None) -> Browser:
    """Headless Chromium through the system chromedriver (never a downloaded one).

    With `fake_audio`, getUserMedia is granted without a prompt and captures that WAV once
    (`%noloop`); see `padded_clip` for what follows the file. `env`: chromedriver's and
    Chromium's environment (e.g. a HOME whose ~/.pki/nssdb trusts a test CA)."""
    profile = Path(tempfile.mkdtemp(prefix="whisper-e2e-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROMIUM_ARGS + [f"--user-data-dir={profile / 'profile'}"] + (extra_args or []):
        options.add_argument(arg)
    if fake_audio is not None:
        options.add_argument("--use-fake-ui-for-media-stream")
        options.add_argument("--use-fake-device-for-media-stream")
        options.add_argument(f"--use-file-for-fake-audio-capture={fake_audio}%noloop")
    downloads = profile / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, env=env), options=options)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    return Browser(driver=driver, profile_dir=profile)


def wait_for_download(directory: Path, suffix: str, timeout_s: float = 10) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = [p for p in directory.glob(f"*{suffix}") if p.is_file()]
        if done:
            return done[0]
        time.sleep(0.1)
    raise TimeoutError(f"no *{suffix} in {directory}: {[p.name for p in directory.iterdir()]}")


def normalise_words(text: str) -> list[str]:
    """Lower case, hyphens as spaces, punctuation and apostrophes dropped."""
    text = text.lower().replace("-", " ").replace("'", "").replace("\u2019", "")
    return re.sub(r"[^a-z0-9]+", " ", text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after normalising both."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, hyp_word in enumerate(hyp, start=1):
            current[j] = min(
                previous[j] + 1,
                current[j - 1] + 1,
                previous[j - 1] + (ref_word != hyp_word),
            )
        previous = current
    return previous[-1] / len(ref)


SRT_TIME = r"(\d{2}):(\d{2}):(\d{2}),(\d{3})"
SRT_CUE = re.compile(rf"^(\d+)\n{SRT_TIME} --> {SRT_TIME}\n(.+)$")


def _ms(h: str, m: str, s: str, ms: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def parse_srt(text: str) -> list[dict]:
    """Strict SubRip parse: every block must be `N`, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, one text line."""
    cues = []
    for block in text.strip("\n").split("\n\n"):
        match = SRT_CUE.match(block)
        if not match:
            raise ValueError(f"not an SRT cue: {block!r}")
        g = match.groups()
        cues.append(
            {"index": int(g[0]), "start_ms": _ms(*g[1:5]), "end_ms": _ms(*g[5:9]), "text": g[9]}
        )
    return cues
