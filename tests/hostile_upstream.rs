//! A hostile or broken OpenAI-compatible upstream, faked on loopback: NUL and other control
//! characters in `text`, an absurd `Retry-After`, a 20 MB body (with and without a length),
//! a body trickling past the deadline, a 200 without `text`.
//!
//! First the client alone (fast, no model): every answer becomes a fallback reason within
//! the deadline, never a panic, and the huge body is not read to its end. Then the real server
//! with the real model: one session meets every hostile answer in turn, gets a final for each
//! utterance (the local text where OpenAI failed), and the server keeps serving — the NUL
//! that once crashed every whisper worker through the next prompt is gone before the prompt.

mod common;
mod fake_openai;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fake_openai::{FakeOpenAi, Reply, DEFAULT_TEXT};
use whisper_api::engine::openai::{FallbackReason, OpenAiClient};
use whisper_api::metrics::Metrics;
use whisper_api::Config;

/// Scheduling slack allowed past a deadline on a busy 2-core machine.
const MARGIN: Duration = Duration::from_millis(400);
/// The hostile bodies: 20 MB, twenty times the client's cap.
const HUGE_BYTES: usize = 20 * 1024 * 1024;
/// A client that stops at its 1 MiB cap lets the stream run only as far as the socket
/// buffers on both sides take (a few MiB on Linux loopback), never the whole 20 MB.
const HUGE_READ_LIMIT: usize = 8 * 1024 * 1024;
const TRICKLE_INTERVAL: Duration = Duration::from_millis(100);

fn tone() -> Vec<f32> {
    (0..16_000)
        .map(|i| 0.3 * (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin())
        .collect()
}

fn client(fake: &FakeOpenAi, timeout_ms: u64) -> OpenAiClient {
    let mut config = Config::defaults();
    fake.configure(&mut config);
    config.openai_timeout_ms = timeout_ms;
    config.openai_circuit_failures = 100;
    OpenAiClient::from_config(&config, Arc::new(Metrics::new())).expect("openai configured")
}

async fn timed(client: &OpenAiClient) -> (Result<String, FallbackReason>, Duration) {
    let started = Instant::now();
    let result = client.transcribe(&tone(), "", "en").await;
    (result, started.elapsed())
}

#[tokio::test]
async fn control_characters_in_text_are_removed() {
    let fake = FakeOpenAi::start().await;
    fake.set_reply(Reply::text(
        "ask not\u{0} what\u{1b}[2J your\r\ncountry\u{7}\u{202e}",
    ));
    let (result, _) = timed(&client(&fake, 2_000)).await;
    assert_eq!(result.as_deref(), Ok("ask not what [2J your country"));
}

#[tokio::test]
async fn an_absurd_retry_after_falls_back_at_once_without_a_panic() {
    let fake = FakeOpenAi::start().await;
    let client = client(&fake, 2_000);
    for value in ["1e20", "1e400", "-5", "NaN", "99999999999999999999999"] {
        fake.set_reply(Reply::retry_after_raw(value));
        let (result, elapsed) = timed(&client).await;
        assert_eq!(result, Err(FallbackReason::Http429), "{value}");
        assert!(
            elapsed < Duration::from_millis(2_000) + MARGIN,
            "{value}: {elapsed:?}"
        );
    }
    // Huge values give up at once (the wait cannot fit); unparsable ones use the backoff.
    assert!(fake.request_count() >= 5);
}

#[tokio::test]
async fn a_20_mb_body_is_refused_at_the_cap() {
    let fake = FakeOpenAi::start().await;
    let client = client(&fake, 3_000);
    fake.set_reply(Reply::huge(HUGE_BYTES, false));
    let (result, _) = timed(&client).await;
    assert_eq!(
        result,
        Err(FallbackReason::BadResponse),
        "with a content-length"
    );

    fake.set_reply(Reply::huge(HUGE_BYTES, true));
    let (result, elapsed) = timed(&client).await;
    assert_eq!(result, Err(FallbackReason::BadResponse), "streamed");
    assert!(
        elapsed < Duration::from_millis(3_000) + MARGIN,
        "{elapsed:?}"
    );
    // Give the fake a moment to notice the dropped connection, then count what it produced.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = fake.body_bytes_sent();
    assert!(
        sent < HUGE_READ_LIMIT,
        "the client kept reading: {sent} bytes left the fake"
    );
    assert_eq!(fake.request_count(), 2, "a bad response is not retried");
}

#[tokio::test]
async fn a_body_trickling_past_the_deadline_times_out_at_the_deadline() {
    let fake = FakeOpenAi::start().await;
    // ~50 bytes at 100 ms each: 5 s, past a 1 s deadline.
    fake.set_reply(Reply::trickle(TRICKLE_INTERVAL));
    let (result, elapsed) = timed(&client(&fake, 1_000)).await;
    assert_eq!(result, Err(FallbackReason::Timeout));
    assert!(
        elapsed >= Duration::from_millis(990) && elapsed < Duration::from_millis(1_000) + MARGIN,
        "{elapsed:?}"
    );
    assert!(fake.body_bytes_sent() > 0, "the body had started");
}

#[tokio::test]
async fn a_200_without_text_is_a_bad_response() {
    let fake = FakeOpenAi::start().await;
    fake.set_reply(Reply::no_text());
    let (result, _) = timed(&client(&fake, 2_000)).await;
    assert_eq!(result, Err(FallbackReason::BadResponse));
    assert_eq!(fake.request_count(), 1);
}

/// The server, one session, one hostile answer per utterance (in arrival order, which is
/// utterance order at real-time pace), then a healthy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_serving_through_every_hostile_answer() {
    const RATE: usize = 16_000;
    let fake = FakeOpenAi::start().await;
    fake.script([
        Reply::text("ask not\u{0} what your country"),
        Reply::retry_after_raw("1e20"),
        Reply::huge(HUGE_BYTES, true),
        Reply::trickle(TRICKLE_INTERVAL),
        Reply::no_text(),
    ]);
    let mut config = test_config();
    fake.configure(&mut config);
    config.openai_timeout_ms = 1_500;
    config.openai_circuit_failures = 100;
    config.partial_interval_ms = 600_000;
    let server = TestServer::start(config).await;

    let clip_path = speech_dir().join("short/librispeech_train-clean-100_328-129766-0000.wav");
    let clip = load_speech(&clip_path);
    let gap = vec![0.0f32; RATE * 1_200 / 1000];
    let mut samples = gap.clone();
    for _ in 0..6 {
        samples.extend(&clip);
        samples.extend(&gap);
    }
    let t = stream(
        &server.ws_url(""),
        &s16le(&samples),
        RATE * 2,
        RATE * 2 / 50,
        1.0,
    )
    .await;

    assert_well_formed(&t);
    assert_eq!(t.close_code, Some(1000), "{:?}", t.messages);
    let finals = t.of_kind("final");
    assert_eq!(finals.len(), 6, "{:?}", t.messages);
    let expected = [
        (None, "openai"),
        (Some("http_429"), "local"),
        (Some("bad_response"), "local"),
        (Some("timeout"), "local"),
        (Some("bad_response"), "local"),
        (None, "openai"),
    ];
    for (f, (reason, source)) in finals.iter().zip(expected) {
        assert_eq!(f.json["source"], source, "{}", f.json);
        assert_eq!(f.json["fallback_reason"].as_str(), reason, "{}", f.json);
        assert!(!f.json["text"].as_str().unwrap().is_empty(), "{}", f.json);
    }
    assert_eq!(finals[0].json["text"], "ask not what your country");
    // The fallbacks are the real local transcripts, not placeholders.
    for f in &finals[1..5] {
        let text = f.json["text"].as_str().unwrap();
        let error = wer(text, &reference_text(&clip_path));
        assert!(error <= 0.35, "WER {error:.2} for {text:?}");
    }
    assert_eq!(finals[5].json["text"], DEFAULT_TEXT);
    // The sanitised text became the next prompts; no request carried a control character.
    let requests = fake.requests();
    assert!(requests.len() >= 6);
    assert!(requests[1].prompt().unwrap_or("").contains("ask not what"));
    for r in &requests {
        let prompt = r.prompt().unwrap_or("");
        assert!(!prompt.chars().any(char::is_control), "{prompt:?}");
    }
    let health = reqwest::get(server.http_url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
}
