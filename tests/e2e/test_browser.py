"""The browser demo and caption view, driven in headless Chromium against the real server.

One recorded run feeds a real speech clip through Chromium's fake microphone into the demo page
(AudioWorklet → WebSocket → VAD → tiny.en) while a second window follows the session's caption
feed; the tests below check what a person would see and download. Other tests check the plain
messages shown when the microphone cannot be used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import signal
import time
from dataclasses import dataclass

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from browser_support import (
    FakeOpenAI,
    ServerProcess,
    launch_chromium,
    normalise_words,
    padded_clip,
    parse_srt,
    speech_dir,
    wait_for_download,
    wav_duration_s,
    word_error_rate,
)

CLIP = "short/jfk_inaugural_1961.wav"
# Speech that follows CLIP in the reconnect test, so there is something left after the restart.
SECOND_CLIP = "short/librispeech_train-clean-100_2843-152918-0000.wav"
GAP_S = 1.0
# When the deploy happens in the reconnect test: in the middle of CLIP's third sentence.
DEPLOY_AT_S = 6.0
DRAIN_MS = 3000
# What the fake OpenAI answers: distinct from anything the local model would write.
OPENAI_TEXT = "Transcribed by the fake OpenAI."
# tiny.en scores 7.5 % WER offline on the short clips and gets this one right; streaming cuts
# utterances at pauses, which may cost a word or two.
MAX_WER = 0.25
# Time for a final to arrive: VAD silence plus inference on a busy 2-core machine.
SETTLE_TIMEOUT_S = 45
# From Stop to `done`: the outstanding finals (the page gives up after 60 s).
STOP_TIMEOUT_S = 70
# Captured after the clip's end before pressing Stop: part of the trailing silence.
CLIP_END_MARGIN_S = 1.0
# Silence after the speech, so the VAD ends the last utterance as after a real speaker.
TRAILING_SILENCE_S = 3.0
POLL_S = 0.2
SCREENSHOT = os.environ.get("DEMO_SCREENSHOT")
CAPTIONS_SCREENSHOT = os.environ.get("CAPTIONS_SCREENSHOT")


# The recorded run's server requires a token: the demo page and caption view get theirs from
# POST /browser-token, so every stream below also proves the short-lived token works.
API_TOKEN = "e2e-api-token-5b0c71d4"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess.start(tmp_path_factory.mktemp("server"), API_TOKENS=API_TOKEN, BROWSER_TOKENS="true")
    yield srv
    srv.stop()


@dataclass
class Finals:
    text: str
    start_ms: int
    end_ms: int
    partials: int
    source: str
    badge_class: str
    badge_text: str
    badge_reason: str | None
    latency: str


@dataclass
class Run:
    reference: str
    clip_s: float
    session: str
    caption_url: str
    finals: list[Finals]
    saw_partial_before_final: bool
    caption_live_text: str
    caption_live_state: str
    caption_end_text: str
    caption_end_state: str
    demo_stable_seen: list[list[str]]
    caption_stable_seen: list[list[str]]
    downloads: dict[str, str]
    conn_text: str


def js_finals(driver) -> list[Finals]:
    rows = driver.execute_script(
        """return [...document.querySelectorAll('#transcript li.final')].map(li => {
             const badge = li.querySelector('.badge');
             return [li.querySelector('.text').textContent, +li.dataset.startMs, +li.dataset.endMs,
                     +li.dataset.partials, li.dataset.source, badge.className, badge.textContent,
                     badge.dataset.reason ?? null, li.querySelector('.latency').textContent];
           });"""
    )
    return [Finals(*row) for row in rows]


def count(driver, css: str) -> int:
    return driver.execute_script(f"return document.querySelectorAll({css!r}).length;")


def conn_state(driver) -> str:
    return driver.find_element(By.ID, "conn").get_attribute("data-state")


def open_and_start(driver, url: str) -> float:
    """Loads the demo, presses Start and waits for Live; returns when capture started."""
    driver.get(url)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.body.dataset.ready"))
    driver.find_element(By.ID, "start").click()
    # The fake microphone starts playing the clip as soon as capture starts.
    started = time.monotonic()
    WebDriverWait(driver, 15).until(
        lambda d: conn_state(d) == "live", message="the page never reported a live connection"
    )
    return started


def wait_for_finals(driver, at_least: int, timeout_s: float) -> bool:
    """Waits for `at_least` finals; returns whether a partial was on screen before the first."""
    saw_partial = False
    deadline = time.monotonic() + timeout_s
    while count(driver, "#transcript li.final") < at_least:
        saw_partial = saw_partial or count(driver, "#transcript li.partial") > 0
        transcript = driver.find_element(By.ID, "transcript").text
        assert time.monotonic() < deadline, f"no final after {timeout_s} s; page shows: {transcript!r}"
        time.sleep(POLL_S)
    return saw_partial


def wait_for_clip_end(driver, started: float, clip_s: float) -> None:
    """Waits until the whole clip has been captured and, for a while, until the VAD has closed
    the last utterance (no provisional line). Stop finalises whatever is still open, so this
    only makes the run look like a speaker who paused before pressing Stop."""
    time.sleep(max(0.0, started + clip_s + CLIP_END_MARGIN_S - time.monotonic()))
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while count(driver, "#transcript li.partial") and time.monotonic() < deadline:
        time.sleep(POLL_S)


WATCH_STABLE_JS = """
const [selector] = arguments;
window.__stableSeen = [];
const record = () => {
  for (const el of document.querySelectorAll(`${selector} .partial .stable`)) {
    const tail = el.nextElementSibling;
    if (el.textContent) window.__stableSeen.push([el.textContent, tail ? tail.className : ""]);
  }
};
new MutationObserver(record).observe(document.querySelector(selector), {childList: true, subtree: true});
record();
"""


def watch_stable(driver, selector: str) -> None:
    """Records every committed partial prefix a page renders, with its sibling's class."""
    driver.execute_script(WATCH_STABLE_JS, selector)


def stable_seen(driver) -> list[list[str]]:
    return driver.execute_script("return window.__stableSeen || [];")


def stop_and_wait_ended(driver) -> None:
    """Stop: eof → outstanding finals → done → close 1000."""
    driver.find_element(By.ID, "start").click()
    WebDriverWait(driver, STOP_TIMEOUT_S).until(
        lambda d: conn_state(d) == "ended", message="the page did not end the session after Stop"
    )


@pytest.fixture(scope="module")
def run(server, tmp_path_factory) -> Run:
    source = speech_dir() / CLIP
    reference = source.with_suffix(".txt").read_text().strip()
    clip_s = wav_duration_s(source)
    clip = padded_clip([source], tmp_path_factory.mktemp("audio") / "clip.wav", 0, TRAILING_SILENCE_S)
    browser = launch_chromium(fake_audio=clip)
    driver = browser.driver
    try:
        main = driver.current_window_handle
        started = open_and_start(driver, server.base_url)
        watch_stable(driver, "#transcript")
        session = driver.find_element(By.ID, "session-id").text
        caption_url = driver.find_element(By.ID, "caption-link").get_attribute("href")

        driver.switch_to.new_window("window")
        captions = driver.current_window_handle
        driver.get(caption_url)
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "captions"))
        watch_stable(driver, "#captions")
        driver.switch_to.window(main)

        saw_partial_before_final = wait_for_finals(driver, 1, clip_s + SETTLE_TIMEOUT_S)
        # The caption view follows while the session is live.
        first_final = js_finals(driver)[0].text
        driver.switch_to.window(captions)
        try:
            # textContent, not the visible text: the view shows only its last lines, and on a
            # loaded machine later finals may already have pushed the first one out of sight.
            WebDriverWait(driver, 10).until(
                lambda d: first_final in d.execute_script("return document.getElementById('captions').textContent")
            )
        except Exception:
            shown = driver.execute_script("return document.getElementById('captions').innerHTML")
            raise AssertionError(f"caption view did not show the first final {first_final!r}: {shown}")
        caption_live_text = driver.find_element(By.ID, "captions").text
        caption_live_state = driver.execute_script("return document.body.dataset.state")
        driver.switch_to.window(main)
        wait_for_clip_end(driver, started, clip_s)
        stop_and_wait_ended(driver)
        finals = js_finals(driver)
        downloads = {}
        for fmt in ("srt", "vtt", "txt"):
            driver.find_element(By.CSS_SELECTOR, f"[data-download='{fmt}']").click()
            downloads[fmt] = wait_for_download(browser.download_dir, f".{fmt}").read_text()
        conn_text = driver.find_element(By.ID, "conn").text
        demo_stable_seen = stable_seen(driver)
        if SCREENSHOT:
            driver.execute_script("document.activeElement.blur()")
            driver.find_element(By.TAG_NAME, "body").screenshot(SCREENSHOT)

        driver.switch_to.window(captions)
        WebDriverWait(driver, 10).until(
            lambda d: d.execute_script("return document.body.dataset.state") == "ended",
            message="caption view did not notice the end of the session",
        )
        caption_end_text = driver.find_element(By.ID, "captions").text
        if CAPTIONS_SCREENSHOT:
            driver.save_screenshot(CAPTIONS_SCREENSHOT)
        caption_end_state = driver.find_element(By.ID, "status").text
        caption_stable_seen = stable_seen(driver)
        return Run(
            reference=reference,
            clip_s=clip_s,
            session=session,
            caption_url=caption_url,
            finals=finals,
            saw_partial_before_final=saw_partial_before_final,
            caption_live_text=caption_live_text,
            caption_live_state=caption_live_state,
            caption_end_text=caption_end_text,
            caption_end_state=caption_end_state,
            downloads=downloads,
            conn_text=conn_text,
            demo_stable_seen=demo_stable_seen,
            caption_stable_seen=caption_stable_seen,
        )
    except Exception:
        print("--- browser console ---\n" + browser.console_log())
        print("--- server log ---\n" + server.log_tail())
        raise
    finally:
        browser.quit()


def test_page_shows_final_transcript_of_the_clip(run: Run):
    hypothesis = " ".join(f.text for f in run.finals)
    wer = word_error_rate(run.reference, hypothesis)
    assert wer <= MAX_WER, f"WER {wer:.2f} > {MAX_WER}: {hypothesis!r} vs {run.reference!r}"
    assert re.fullmatch(r"[0-9a-f-]{16,64}", run.session), run.session
    assert run.conn_text == "Not connected"


def test_partials_appear_before_finals(run: Run):
    assert run.saw_partial_before_final, "no provisional line was on screen before the first final"
    # Each final counts the partials its line showed. Not every utterance need have one: the
    # server sheds partials when its engine is busy, finals never.
    assert sum(f.partials for f in run.finals) >= 1, run.finals


def test_source_badges_and_latency(run: Run):
    for final in run.finals:
        # PRIMARY_SERVICE=local: every final is the local model's, and not a fallback.
        assert final.source == "local"
        assert final.badge_class == "badge badge-local" and final.badge_text == "local"
        assert final.badge_reason is None
        assert re.fullmatch(r"\d+ ms", final.latency), final.latency


def test_srt_download_matches_the_finals(run: Run):
    cues = parse_srt(run.downloads["srt"])
    assert [c["index"] for c in cues] == list(range(1, len(run.finals) + 1))
    assert [c["text"] for c in cues] == [f.text for f in run.finals]
    slack_ms = 2000
    previous_end = 0
    for cue, final in zip(cues, run.finals):
        assert (cue["start_ms"], cue["end_ms"]) == (final.start_ms, final.end_ms)
        assert previous_end <= cue["start_ms"] < cue["end_ms"] <= run.clip_s * 1000 + slack_ms
        previous_end = cue["end_ms"]
    assert run.downloads["vtt"].startswith("WEBVTT\n\n")
    assert run.downloads["vtt"].count(" --> ") == len(cues)
    assert run.downloads["txt"] == "".join(f"{f.text}\n" for f in run.finals)


def test_caption_view_follows_the_session(run: Run):
    assert run.caption_url.endswith(f"captions.html?session={run.session}")
    assert run.caption_live_state == "live"
    assert run.finals[0].text in run.caption_live_text, run.caption_live_text
    # The view shows the last lines: the newest final is on screen after the session ended.
    assert run.finals[-1].text in run.caption_end_text, run.caption_end_text
    assert run.caption_end_state == "Session ended"


def test_partials_show_committed_words_solid_and_the_tail_dimmed(run: Run):
    """Protocol field `stable`: both pages render the committed prefix of a partial apart
    from its tentative tail, and the committed words are words the speaker said."""
    # Both pages get the same partials; on a loaded machine partials are shed and a page may
    # see too few of them to show a prefix, so one page showing one is required.
    assert run.demo_stable_seen or run.caption_stable_seen, "no page showed a committed prefix"
    for page, seen in (("demo", run.demo_stable_seen), ("caption view", run.caption_stable_seen)):
        assert all(sibling == "tentative" for _, sibling in seen), (page, seen)
        spoken = set(normalise_words(run.reference))
        committed = {w for text, _ in seen for w in normalise_words(text)}
        assert len(committed & spoken) >= len(committed) * 0.7, (page, committed - spoken)


def lines(driver) -> list[tuple[str, str]]:
    """Every transcript line as (class, text), provisional ones included."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#transcript li')].map(li => [li.className, li.textContent]);"
    )


def test_page_reconnects_after_a_deploy_and_keeps_the_transcript(tmp_path):
    """SIGTERM (a deploy) while someone speaks: the server finishes the open utterance and
    closes with 1012; the page reconnects with backoff to the new server on the same port as a
    new session, keeping the lines it had and transcribing the speech that follows."""
    sources = [speech_dir() / CLIP, speech_dir() / SECOND_CLIP]
    reference = " ".join(p.with_suffix(".txt").read_text() for p in sources)
    clip = padded_clip(sources, tmp_path / "clips.wav", GAP_S, TRAILING_SILENCE_S)
    clip_s = wav_duration_s(clip) - TRAILING_SILENCE_S
    # A short drain, as a deploy would configure, leaves most of the speech for the new server.
    servers = [ServerProcess.start(tmp_path, SHUTDOWN_GRACE_MS=str(DRAIN_MS))]
    browser = launch_chromium(fake_audio=clip)
    driver = browser.driver
    try:
        started = open_and_start(driver, servers[0].base_url)
        first_session = driver.find_element(By.ID, "session-id").text
        # Deploy at a fixed point in the speech, not after some final, so that however slow
        # inference is, most of the speech comes after the restart.
        WebDriverWait(driver, SETTLE_TIMEOUT_S).until(lambda d: lines(d), message="nothing shown before the deploy")
        time.sleep(max(0.0, started + DEPLOY_AT_S - time.monotonic()))
        servers[0].proc.send_signal(signal.SIGTERM)
        WebDriverWait(driver, 30, poll_frequency=0.05).until(
            lambda d: conn_state(d) == "reconnecting", message="the page did not start reconnecting"
        )
        reconnecting_text = driver.find_element(By.ID, "conn").text
        # The old session has closed: its lines are final now, and no new session has begun.
        before = lines(driver)
        servers[0].proc.wait(timeout=30)
        servers.append(ServerProcess.start(tmp_path, port=servers[0].port))
        WebDriverWait(driver, 30).until(
            lambda d: conn_state(d) == "live" and d.find_element(By.ID, "session-id").text != first_session,
            message="the page did not reconnect to the new server",
        )
        wait_for_clip_end(driver, started, clip_s)
        stop_and_wait_ended(driver)
        after = lines(driver)
        finals = js_finals(driver)
        new_finals = finals[sum("final" in cls.split() for cls, _ in before) :]
    except Exception:
        print("--- browser console ---\n" + browser.console_log())
        print("--- server logs ---\n" + servers[-1].log_tail(80))
        raise
    finally:
        browser.quit()
        for srv in servers:
            srv.stop()
    # The server closes with 1012 after its drain. Chromium reports 1006 instead when the server
    # drops the socket with client audio still unread: the TCP reset discards the close frame.
    assert re.search(r"server restarting|connection lost \(1006\)", reconnecting_text), reconnecting_text
    assert before, "the transcript was empty when the page reconnected"
    assert after[: len(before)] == before, "lines from before the restart were not kept in place"
    assert all("partial" not in cls.split() for cls, _ in before), f"a line stayed provisional: {before}"
    assert new_finals, f"nothing was transcribed after the reconnect; the page shows {after}"
    starts = [f.start_ms for f in finals]
    assert starts == sorted(starts), f"times do not continue across sessions: {starts}"
    # Speech sent while the old server drained is lost, so no WER over the whole: the new
    # session's words must come from the clips.
    known = set(normalise_words(reference))
    words = normalise_words(" ".join(f.text for f in new_finals))
    assert sum(w in known for w in words) >= 0.7 * len(words), words


def test_badges_show_openai_and_local_fallback_with_its_reason(tmp_path):
    """PRIMARY_SERVICE=openai against a fake OpenAI that answers the first final and refuses
    the rest: one OpenAI badge with OpenAI's text, local fallback badges with the reason."""
    source = speech_dir() / CLIP
    # The clip twice with a clear pause: at least two utterances however the VAD splits the
    # clip itself (on an idle machine it can stay one utterance).
    gap_s = 1.5
    clip = padded_clip([source, source], tmp_path / "clip.wav", gap_s, TRAILING_SILENCE_S)
    openai = FakeOpenAI(OPENAI_TEXT)
    server = ServerProcess.start(
        tmp_path,
        PRIMARY_SERVICE="openai",
        OPENAI_API_KEY="sk-test-browser",
        OPENAI_BASE_URL=openai.base_url,
        FALLBACK_TO_LOCAL="true",
    )
    browser = launch_chromium(fake_audio=clip)
    driver = browser.driver
    try:
        started = open_and_start(driver, server.base_url)
        wait_for_clip_end(driver, started, 2 * wav_duration_s(source) + gap_s)
        stop_and_wait_ended(driver)
        finals = js_finals(driver)
        fallback = driver.find_elements(By.CSS_SELECTOR, "#transcript .badge-fallback")
        assert fallback, f"no fallback badge: {finals}"
        # The reason shows on hover (CSS ::after from data-reason) as well as in the title.
        ActionChains(driver).move_to_element(fallback[0]).perform()
        hover_text = driver.execute_script(
            "return getComputedStyle(arguments[0], '::after').content;", fallback[0]
        )
        title = fallback[0].get_attribute("title")
        reason = fallback[0].get_attribute("data-reason")
    except Exception:
        print("--- browser console ---\n" + browser.console_log())
        print("--- server log ---\n" + server.log_tail())
        raise
    finally:
        browser.quit()
        server.stop()
        openai.stop()
    assert len(openai.requests) >= 2 and openai.requests[0].startswith("multipart/form-data")
    by_openai = [f for f in finals if f.source == "openai"]
    assert len(by_openai) == 1, finals
    assert by_openai[0].text == OPENAI_TEXT
    assert (by_openai[0].badge_class, by_openai[0].badge_text) == ("badge badge-openai", "OpenAI")
    assert by_openai[0].badge_reason is None
    for final in finals:
        if final.source == "local":
            assert (final.badge_class, final.badge_text) == ("badge badge-fallback", "local fallback")
            assert final.badge_reason in ("http_4xx", "circuit_open"), final
    assert title == f"OpenAI was not used: {reason}"
    assert hover_text == f'"{reason}"', hover_text


@pytest.fixture(scope="module")
def plain_browser():
    """Chromium with no microphone at all; `demo.test` resolves to loopback, an insecure origin."""
    browser = launch_chromium(extra_args=["--host-resolver-rules=MAP demo.test 127.0.0.1"])
    yield browser
    browser.quit()


def click_start_and_read_message(driver, url: str) -> str:
    driver.get(url)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.body.dataset.ready"))
    driver.find_element(By.ID, "start").click()
    message = WebDriverWait(driver, 10).until(
        lambda d: d.find_element(By.ID, "mic-message").text, message="no message about the microphone"
    )
    # Nothing was started: the button still offers Start and no connection was made.
    assert driver.find_element(By.ID, "start").text == "Start"
    assert driver.find_element(By.ID, "conn").get_attribute("data-state") == "idle"
    assert driver.find_element(By.ID, "session").get_attribute("hidden") is not None
    return message


def test_page_says_plainly_when_microphone_permission_is_denied(server):
    # A microphone exists (the fake device) but the site's permission is "denied".
    browser = launch_chromium(extra_args=["--use-fake-device-for-media-stream"])
    try:
        browser.driver.execute_cdp_cmd(
            "Browser.setPermission",
            {"permission": {"name": "microphone"}, "setting": "denied", "origin": server.base_url.rstrip("/")},
        )
        message = click_start_and_read_message(browser.driver, server.base_url)
    finally:
        browser.quit()
    assert message.startswith("The microphone is not available: permission was denied."), message


def test_page_says_plainly_when_there_is_no_microphone(server, plain_browser):
    message = click_start_and_read_message(plain_browser.driver, server.base_url)
    assert message.startswith("The microphone is not available: no microphone was found."), message


def test_page_says_plainly_when_the_page_is_not_secure(server, plain_browser):
    driver = plain_browser.driver
    driver.get(f"http://demo.test:{server.port}/")
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.body.dataset.ready"))
    message = driver.find_element(By.ID, "mic-message").text
    assert message.startswith("The microphone is not available: browsers allow it only on HTTPS"), message
    assert f"http://demo.test:{server.port}" in message
    assert not driver.find_element(By.ID, "start").is_enabled()


def browser_token_signed(api_token: str, expiry: int) -> str:
    """A browser token made the way the server makes them (src/access/tokens.rs)."""
    key = hashlib.sha256(b"whisper-api browser token v1\0" + api_token.encode()).digest()
    payload = f"wb1.{expiry}"
    signature = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return payload + "." + base64.urlsafe_b64encode(signature).decode().rstrip("=")


OPEN_WS_JS = """
const [token, done] = [arguments[0], arguments[arguments.length - 1]];
const open = (t) => new Promise((resolve) => {
  const url = new URL("ws", location.href);
  url.protocol = "ws:";
  if (t) url.searchParams.set("token", t);
  const ws = new WebSocket(url);
  ws.onmessage = (e) => { resolve(JSON.parse(e.data).type); ws.close(); };
  ws.onclose = (e) => resolve("closed " + e.code);
});
(async () => {
  let t = token;
  if (t === "fetch") {
    const r = await fetch("browser-token", {method: "POST"});
    t = (await r.json()).token;
  }
  done(await open(t));
})();
"""


def test_only_a_fresh_signed_token_opens_a_session(server, plain_browser):
    driver = plain_browser.driver
    driver.set_script_timeout(20)
    driver.get(server.base_url)
    assert driver.execute_async_script(OPEN_WS_JS, "fetch") == "ready"
    now = int(time.time())
    valid = browser_token_signed(API_TOKEN, now + 120)
    assert driver.execute_async_script(OPEN_WS_JS, valid) == "ready"
    # Refused before the upgrade (401), which a browser sees as a failed connection.
    expired = browser_token_signed(API_TOKEN, now - 1)
    forged = browser_token_signed("not-the-server-token", now + 120)
    for token in [expired, forged, valid[:-2] + "AA", None]:
        assert driver.execute_async_script(OPEN_WS_JS, token) == "closed 1006", token


def test_wer_and_srt_helpers_score_what_they_should():
    assert word_error_rate("Ask not, what your country", "ask not what your country") == 0
    assert word_error_rate("a b c d", "a x c") == 0.5
    cues = parse_srt("1\n00:00:01,500 --> 01:00:00,000\nhello\n\n2\n01:00:00,000 --> 01:00:00,001\nbye\n")
    assert [(c["start_ms"], c["end_ms"]) for c in cues] == [(1500, 3_600_000), (3_600_000, 3_600_001)]
    with pytest.raises(ValueError):
        parse_srt("1\n00:00:01.500 --> 00:00:02,000\nwrong separator\n")
