"""Reopening an ended session in headless Chromium: the demo page at `/?session=ID` shows the
session's stored finals, and the caption view of the ended session shows its stored text
(README, "Stored transcripts"; both pages read GET /v1/sessions/{id}/transcript).

One session of two real speech clips is recorded through Chromium's fake microphone into the
demo page, with the server's default transcript store; then fresh pages open it by id.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from browser_support import ServerProcess, launch_chromium, padded_clip, speech_dir, wav_duration_s
from test_browser import (
    API_TOKEN,
    GAP_S,
    SETTLE_TIMEOUT_S,
    TRAILING_SILENCE_S,
    js_finals,
    open_and_start,
    stop_and_wait_ended,
    wait_for_clip_end,
    wait_for_finals,
)

CLIPS = ["short/ljspeech_LJ001-0004.wav", "short/librispeech_train-clean-100_328-129766-0000.wav"]
# The caption view keeps this many finals (KEPT_FINALS in static/js/captions.js).
CAPTION_KEPT_FINALS = 6
PAGE_TIMEOUT_S = 15


@pytest.fixture(scope="module")
def ended(tmp_path_factory):
    """(server, session id, the finals the live page showed) of one recorded, ended session."""
    tmp = tmp_path_factory.mktemp("reopen")
    # The default STORAGE_URL, an SQLite file under the server's working directory.
    srv = ServerProcess.start(tmp, API_TOKENS=API_TOKEN, BROWSER_TOKENS="true")
    sources = [speech_dir() / c for c in CLIPS]
    clip = padded_clip(sources, tmp / "clips.wav", GAP_S, TRAILING_SILENCE_S)
    browser = launch_chromium(fake_audio=clip)
    try:
        driver = browser.driver
        started = open_and_start(driver, srv.base_url)
        session = driver.find_element(By.ID, "session-id").text
        clip_s = wav_duration_s(clip)
        wait_for_finals(driver, 1, clip_s + SETTLE_TIMEOUT_S)
        wait_for_clip_end(driver, started, clip_s)
        stop_and_wait_ended(driver)
        finals = js_finals(driver)
    except Exception:
        print("--- browser console ---\n" + browser.console_log())
        print("--- server log ---\n" + srv.log_tail())
        raise
    finally:
        browser.quit()
    assert len(finals) >= 2, finals
    yield srv, session, finals
    srv.stop()


@pytest.fixture()
def driver():
    browser = launch_chromium()
    yield browser.driver
    browser.quit()


def stored(srv: ServerProcess, session: str) -> dict:
    request = urllib.request.Request(
        f"{srv.base_url}v1/sessions/{session}/transcript", headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def stored_view(f) -> tuple:
    """What a reopened line shares with the live one: not the count of partials it showed,
    nor the latency text."""
    return (f.text, f.start_ms, f.end_ms, f.source, f.badge_class, f.badge_text, f.badge_reason)


def test_the_demo_page_reopens_an_ended_session_by_id(ended, driver):
    srv, session, live = ended
    driver.get(f"{srv.base_url}?session={session}")
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(
        lambda d: len(js_finals(d)) >= len(live),
        message=f"the reopened page shows {driver.find_element(By.ID, 'transcript').text!r}",
    )
    reopened = js_finals(driver)
    assert [stored_view(f) for f in reopened] == [stored_view(f) for f in live]
    assert [f.text for f in reopened] == [f["text"] for f in stored(srv, session)["finals"]]
    assert driver.find_element(By.ID, "session-id").text == session
    assert driver.find_element(By.ID, "session").get_attribute("data-state") == "ended"
    assert driver.find_element(By.ID, "reopen-id").get_attribute("value") == session
    assert driver.find_element(By.ID, "error-message").get_attribute("hidden") is not None
    assert driver.find_element(By.ID, "caption-link").get_attribute("href").endswith(
        f"captions.html?session={session}"
    )


def test_the_caption_view_of_an_ended_session_shows_its_stored_text(ended, driver):
    srv, session, live = ended
    driver.get(f"{srv.base_url}captions.html?session={session}")
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(
        lambda d: d.execute_script("return document.body.dataset.state") == "ended",
        message="the caption view never settled",
    )
    shown = driver.execute_script(
        "return [...document.querySelectorAll('#captions p.final')].map(p => p.textContent);"
    )
    expected = [f.text.strip() for f in live if f.text.strip()][-CAPTION_KEPT_FINALS:]
    assert shown == expected
    # The newest line is on screen (the CSS shows only the last lines).
    assert expected[-1] in driver.find_element(By.ID, "captions").text
    assert driver.find_element(By.ID, "status").text == "Session ended"
