//! Server limits with OpenAI as the primary service: `OPENAI_MAX_CONCURRENCY` caps the
//! requests in flight over all sessions, and a local final past `LOCAL_TIMEOUT_MS` becomes a
//! `local_timeout` error while the session goes on with its next utterance.

use std::time::Duration;

use super::support::*;
use crate::common::*;
use crate::fake_openai::{FakeOpenAi, Reply};

/// Sessions streaming at once, each with two utterances, against a cap of two requests.
const SESSIONS: usize = 3;
const MAX_CONCURRENCY: u32 = 2;
/// Slow enough that the utterances closing together really overlap upstream.
const REPLY_DELAY: Duration = Duration::from_millis(1_500);
/// Waiting for a slot counts against the deadline: SESSIONS × 2 requests in rounds of
/// MAX_CONCURRENCY, each REPLY_DELAY, plus uploads, well inside it.
const QUEUED_DEADLINE_MS: u64 = 25_000;
/// OpenAI's text for the utterance after the timed-out one.
const DEFAULT_ANSWER: &str = "the second utterance";

/// The fake's answer names the length of the audio it got, so each final can be matched to
/// its own utterance.
fn duration_text(ms: usize) -> String {
    format!("audio of {ms} ms")
}

fn answered_ms(text: &str) -> u64 {
    text.strip_prefix("audio of ")
        .and_then(|t| t.strip_suffix(" ms"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a fake answer: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_requests_never_exceed_the_cap_and_every_final_arrives_in_order() {
    let fake = FakeOpenAi::start().await;
    let mut config = hybrid_config(&fake, QUEUED_DEADLINE_MS);
    config.openai_max_concurrency = MAX_CONCURRENCY;
    let server = start(config).await;
    fake.respond_with(|r| {
        let ms = r
            .wav
            .clone()
            .and_then(Result::ok)
            .map_or(0, |w| w.duration_ms());
        Reply::text(duration_text(ms)).after(REPLY_DELAY)
    });
    let two = speech(&[CLIP_C, CLIP_A]);
    // As fast as possible: every session's utterances close within moments of each other.
    let sessions = (0..SESSIONS).map(|_| session(&server, &two, 0.0));
    let transcripts = futures_util::future::join_all(sessions).await;

    let peak = fake.peak_in_flight();
    println!("OPENAI_MAX_CONCURRENCY={MAX_CONCURRENCY}: peak {peak} requests in flight");
    assert_eq!(
        peak, MAX_CONCURRENCY as usize,
        "the cap was reached, never passed"
    );
    assert_eq!(fake.request_count(), SESSIONS * 2);
    for t in &transcripts {
        assert_well_formed(t);
        let finals = t.of_kind("final");
        let numbers: Vec<u64> = finals.iter().map(|f| ms(f, "utterance")).collect();
        assert_eq!(numbers, [0, 1], "{:?}", t.messages);
        for f in finals {
            assert_eq!(f.json["source"], "openai", "{}", f.json);
            let utterance_ms = ms(f, "end_ms") - ms(f, "start_ms");
            let got = answered_ms(f.json["text"].as_str().unwrap());
            assert!(
                got.abs_diff(utterance_ms) <= 1_000,
                "a {utterance_ms} ms utterance got the answer for {got} ms: {}",
                f.json
            );
        }
        assert_eq!(t.messages.last().map(|m| m.kind()), Some("done"));
        assert_eq!(t.close_code, Some(1000));
    }
    let ok = r#"whisper_openai_requests_total{outcome="ok"}"#;
    assert_eq!(metric(&server, ok).await, (SESSIONS * 2) as f64);
    let timeouts = r#"whisper_fallbacks_total{reason="timeout"}"#;
    assert_eq!(
        metric(&server, timeouts).await,
        0.0,
        "no final waited too long"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_final_past_its_deadline_is_an_error_and_the_next_final_follows() {
    // OpenAI refuses the short first utterance (a 400 is not retried), so its final falls
    // back to the local model, which cannot make a 1 ms deadline; the second is OpenAI's.
    let fake = FakeOpenAi::start().await;
    let mut config = hybrid_config(&fake, SLOW_DEADLINE_MS);
    config.local_timeout_ms = 1;
    let server = start(config).await;
    let first_ms = speech(&[CLIP_C]).samples.len() * 1000 / RATE;
    fake.respond_with(move |r| {
        let ms = r
            .wav
            .clone()
            .and_then(Result::ok)
            .map_or(0, |w| w.duration_ms());
        if ms <= first_ms {
            Reply::status(400).after(Duration::from_millis(300))
        } else {
            Reply::text(DEFAULT_ANSWER)
        }
    });
    let two = speech(&[CLIP_C, CLIP_A]);
    let t = session(&server, &two, 0.5).await;

    // Not `assert_well_formed`: utterance 0 has an error in place of its final.
    assert_eq!(t.messages[0].kind(), "ready");
    let errors = t.of_kind("error");
    assert_eq!(errors.len(), 1, "{:?}", t.messages);
    assert_eq!(
        errors[0].json["code"], "local_timeout",
        "{}",
        errors[0].json
    );
    assert_eq!(errors[0].json["utterance"], 0);
    let finals = t.of_kind("final");
    assert_eq!(finals.len(), 1, "{:?}", t.messages);
    assert_eq!(
        (
            ms(finals[0], "utterance"),
            finals[0].json["source"].as_str()
        ),
        (1, Some("openai"))
    );
    assert_eq!(finals[0].json["text"], DEFAULT_ANSWER);
    assert!(position(&t, errors[0]) < position(&t, finals[0]));
    assert_eq!(t.messages.last().map(|m| m.kind()), Some("done"));
    assert_eq!(t.close_code, Some(1000));
}
