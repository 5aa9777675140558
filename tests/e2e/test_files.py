"""The OpenAI-compatible file endpoint through the official `openai` Python SDK, and stored
transcripts read back through real SRT/WebVTT parsers (`srt`, `webvtt-py`).

The real server binary, the real tiny.en model and the repository's speech, converted by sox
to FLAC, MP3 and Ogg Vorbis here. scripts/test-storage.sh installs what this needs.
"""

from __future__ import annotations

import io
import json
import os
import urllib.error
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import openai
import pytest
import srt
import webvtt

from browser_support import REPO_ROOT, ServerProcess, word_error_rate

SPEECH = REPO_ROOT / "tests/fixtures/speech"
# One sentence in 4.4 s; the long reading keeps a job busy for the 429 test.
CLIP = SPEECH / "short/librispeech_train-clean-100_5456-24741-0000.wav"
LONG = SPEECH / "long/librivox_shakespeare_sonnet001.wav"
MAX_UPLOAD_BYTES = 3_000_000
MAX_WER = 0.25


def reference(wav: Path) -> str:
    return wav.with_suffix(".txt").read_text().strip()


@pytest.fixture(scope="module")
def server():
    tmp = Path(tempfile.mkdtemp(prefix="whisper-files-"))
    store = os.environ.get("STORAGE_TEST_URL") or f"sqlite://{tmp}/transcripts.db"
    proc = ServerProcess.start(
        tmp,
        STORAGE_URL=store,
        MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES),
        MAX_FILE_JOBS="1",
        RUST_LOG="warn",
    )
    yield proc.base_url.rstrip("/")
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    # No retries: a 429 must reach the test, not be retried away.
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def files():
    """The clip as WAV and converted by sox to FLAC, MP3 and Ogg Vorbis (44.1 kHz stereo for
    the MP3, so the resampler and downmix run too)."""
    out = Path(tempfile.mkdtemp(prefix="whisper-files-audio-"))
    converted = {"wav": CLIP}
    for ext, extra in [("flac", []), ("mp3", ["rate", "44100", "channels", "2"]), ("ogg", [])]:
        path = out / f"clip.{ext}"
        subprocess.run(["sox", str(CLIP), str(path), *extra], check=True)
        converted[ext] = path
    return converted


def get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.headers.get("content-type", ""), r.read()


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg"])
def test_json_for_each_container(client, files, ext):
    with open(files[ext], "rb") as f:
        result = client.audio.transcriptions.create(file=f, model="whisper-1")
    assert word_error_rate(reference(CLIP), result.text) <= MAX_WER, (ext, result.text)


def test_text_srt_vtt_and_verbose_json(client, files):
    path = files["flac"]

    text = client.audio.transcriptions.create(file=path.open("rb"), model="whisper-1", response_format="text")
    assert isinstance(text, str) and word_error_rate(reference(CLIP), text) <= MAX_WER, text

    subtitles = client.audio.transcriptions.create(file=path.open("rb"), model="whisper-1", response_format="srt")
    cues = list(srt.parse(subtitles))
    assert len(cues) >= 1, subtitles
    assert [c.index for c in cues] == list(range(1, len(cues) + 1))
    assert all(c.start < c.end for c in cues)
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:]))
    assert word_error_rate(reference(CLIP), " ".join(c.content for c in cues)) <= MAX_WER

    captions = client.audio.transcriptions.create(file=path.open("rb"), model="whisper-1", response_format="vtt")
    parsed = webvtt.from_string(captions)
    assert len(parsed) == len(cues), captions
    assert all(c.start_in_seconds < c.end_in_seconds for c in parsed)
    assert [c.text for c in parsed] == [c.content for c in cues]

    verbose = client.audio.transcriptions.create(
        file=path.open("rb"),
        model="whisper-1",
        response_format="verbose_json",
        timestamp_granularities=["segment"],
    )
    assert abs(verbose.duration - 4.375) < 0.1, verbose.duration
    assert verbose.language == "en"
    assert len(verbose.segments) == len(cues)
    for segment, cue in zip(verbose.segments, cues):
        assert segment.start < segment.end <= verbose.duration + 0.05
        assert abs(segment.start - cue.start.total_seconds()) < 0.002
        assert segment.text == cue.content
    assert verbose.text == " ".join(s.text for s in verbose.segments)


def test_stream_sends_deltas_then_done(client, files):
    stream = client.audio.transcriptions.create(file=files["ogg"].open("rb"), model="whisper-1", stream=True)
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}, kinds
    assert "".join(e.delta for e in events[:-1]) == events[-1].text
    assert word_error_rate(reference(CLIP), events[-1].text) <= MAX_WER


def test_a_file_job_is_stored_like_a_session(server, client, files):
    raw = client.audio.transcriptions.with_raw_response.create(file=files["mp3"].open("rb"), model="whisper-1")
    text = raw.parse().text
    session = raw.headers["x-session-id"]
    status, _, body = get(f"{server}/v1/sessions/{session}")
    stored = json.loads(body)
    assert status == 200 and stored["kind"] == "file" and stored["outcome"] == "completed", stored
    assert stored["parameters"]["sample_rate"] == 44_100
    status, _, body = get(f"{server}/v1/sessions/{session}/transcript")
    assert json.loads(body)["text"] == text

    # The stored transcript through the real parsers.
    _, kind, body = get(f"{server}/v1/sessions/{session}/transcript?format=srt")
    assert kind.startswith("application/x-subrip")
    cues = list(srt.parse(body.decode()))
    assert " ".join(c.content for c in cues) == text
    _, kind, body = get(f"{server}/v1/sessions/{session}/transcript?format=vtt")
    assert kind.startswith("text/vtt")
    vtt = webvtt.from_buffer(io.StringIO(body.decode()))
    assert [(c.start, c.end, c.text) for c in vtt] == [
        (fmt_vtt(c.start), fmt_vtt(c.end), c.content) for c in cues
    ]


def fmt_vtt(delta) -> str:
    ms = round(delta.total_seconds() * 1000)
    return f"{ms // 3_600_000:02}:{ms // 60_000 % 60:02}:{ms // 1000 % 60:02}.{ms % 1000:03}"


def expect_error(call, status: int, code: str, param: str | None = None):
    with pytest.raises(openai.APIStatusError) as raised:
        call()
    err = raised.value
    assert err.status_code == status, (err.status_code, err.body)
    # OpenAI's shape: {"error": {"message", "type", "param", "code"}}; the SDK unwraps it.
    assert set(err.body) == {"message", "type", "param", "code"}, err.body
    assert err.body["code"] == code and err.body["message"], err.body
    if param:
        assert err.body["param"] == param, err.body
    return err


def test_bad_uploads_get_openai_errors(server, client, files):
    def create(file, **kw):
        return lambda: client.audio.transcriptions.create(file=file, model=kw.pop("model", "whisper-1"), **kw)

    expect_error(create(("notes.wav", b"this is not audio at all" * 40)), 400, "unsupported_format", "file")
    expect_error(create(("empty.mp3", b"")), 400, "unsupported_format", "file")
    truncated = files["flac"].read_bytes()[:60]
    expect_error(create(("cut.flac", truncated)), 400, "unsupported_format", "file")
    big = ("big.wav", b"\0" * (MAX_UPLOAD_BYTES + 1))
    err = expect_error(create(big), 413, "file_too_large", "file")
    assert isinstance(err, openai.APIStatusError)
    expect_error(create(files["wav"].open("rb"), model="whisper-9"), 400, "model_not_found", "model")
    expect_error(create(files["wav"].open("rb"), response_format="docx"), 400, "invalid_value", "response_format")
    expect_error(
        create(files["wav"].open("rb"), timestamp_granularities=["word"]), 400, "invalid_value", "timestamp_granularities"
    )

    # Wrong field names, as a hand-made form would send them.
    def post(fields: dict[str, tuple[str | None, bytes]]) -> tuple[int, dict]:
        boundary = "b0undary"
        body = b""
        for name, (filename, value) in fields.items():
            disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
            body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            f"{server}/v1/audio/transcriptions",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    wav = files["wav"].read_bytes()
    status, body = post({"audio": ("a.wav", wav), "model": (None, b"whisper-1")})
    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "missing_parameter", "file"), body
    status, body = post({"file": ("a.wav", wav), "modle": (None, b"whisper-1")})
    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "missing_parameter", "model"), body
    request = urllib.request.Request(f"{server}/v1/audio/transcriptions", data=b"{}", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code in (400, 415), raised.value.code


def test_a_full_server_answers_429(client, files):
    # MAX_FILE_JOBS=1: while a long streamed job runs, the next request is refused.
    stream = client.audio.transcriptions.create(file=LONG.open("rb"), model="whisper-1", stream=True)
    first = next(iter(stream))
    assert first.type == "transcript.text.delta"
    err = expect_error(lambda: client.audio.transcriptions.create(file=files["wav"].open("rb"), model="whisper-1"), 429, "engine_busy")
    assert isinstance(err, openai.RateLimitError)
    stream.close()
    # Once the job is gone the next one runs.
    deadline = time.time() + 60
    while True:
        try:
            client.audio.transcriptions.create(file=files["wav"].open("rb"), model="whisper-1")
            break
        except openai.RateLimitError:
            assert time.time() < deadline, "the permit was never given back"
            time.sleep(0.5)


def test_models_lists_what_is_served(client):
    ids = {m.id for m in client.models.list()}
    assert {"whisper-1", "tiny.en"} <= ids, ids
