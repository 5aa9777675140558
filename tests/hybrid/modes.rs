//! Out-of-order answers, PRIMARY_SERVICE=local and FALLBACK_TO_LOCAL=false.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use whisper_api::config::PrimaryService;
use whisper_api::Config;

use super::support::*;
use crate::common::*;
use crate::fake_openai::{FakeOpenAi, Reply, DEFAULT_TEXT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_answers_still_give_ordered_finals_and_timely_partials() {
    let fake = FakeOpenAi::start().await;
    // Long enough for the second utterance's partials even on a saturated engine.
    let (first_delay, second_delay) = (SLOW_ANSWER, Duration::from_millis(100));
    fake.script([
        Reply::text("first answer").after(first_delay),
        Reply::text("second answer").after(second_delay),
    ]);
    let mut config = hybrid_config(&fake, SLOW_DEADLINE_MS);
    config.partial_interval_ms = Config::defaults().partial_interval_ms;
    let server = start(config).await;
    // The second utterance ends (and is answered) while the first answer is outstanding.
    let speech = speech(&[CLIP_A, CLIP_B]);
    let t = session(&server, &speech, 1.0).await;

    assert_well_formed(&t);
    let finals = t.of_kind("final");
    assert_eq!(finals.len(), 2, "{:?}", t.messages);
    let texts: Vec<_> = finals.iter().map(|f| f.json["text"].as_str()).collect();
    assert_eq!(texts, [Some("first answer"), Some("second answer")]);
    assert!(finals.iter().all(|f| f.json["source"] == "openai"));
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1].received_at + second_delay < requests[0].received_at + first_delay,
        "the second answer came first"
    );
    // The slow first answer did not hold back the second utterance's partials.
    let first_final = position(&t, finals[0]);
    assert!(
        t.messages[..first_final]
            .iter()
            .any(|m| m.kind() == "partial" && m.json["utterance"] == 1),
        "{:?}",
        t.messages
    );
    assert_eq!(t.messages.last().unwrap().kind(), "done");
    assert_key_nowhere(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_service_local_never_calls_openai() {
    let fake = FakeOpenAi::start().await;
    let mut config = hybrid_config(&fake, TIMEOUT_MS);
    config.primary_service = PrimaryService::Local;
    let server = start(config).await;
    let speech = speech(&[CLIP_A, CLIP_B]);
    let t = session(&server, &speech, 0.0).await;
    assert_well_formed(&t);
    assert_eq!(t.of_kind("final").len(), 2, "{:?}", t.messages);
    for f in t.of_kind("final") {
        assert_eq!(f.json["source"], "local");
        assert!(f.json.get("fallback_reason").is_none(), "{}", f.json);
    }
    let error = wer(&t.final_text(), &speech.reference);
    assert!(error <= MAX_WER, "WER {error:.3}: {}", t.final_text());
    let (code, health) = get_json(&server, "/health?deep=1").await;
    assert_eq!((code, health["status"].as_str()), (200, Some("ok")));
    assert_eq!(health["openai"]["state"], "disabled");
    assert_eq!((fake.request_count(), fake.model_checks()), (0, 0));
    assert_key_nowhere(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fallback_a_failed_utterance_gets_an_error_and_the_session_goes_on() {
    let fake = FakeOpenAi::start().await;
    // Every request within the first utterance's deadline fails (retries included); the
    // second utterance, seconds later, is answered.
    let failing_until: Arc<Mutex<Option<Instant>>> = Arc::default();
    fake.respond_with(move |r| {
        let until = *failing_until
            .lock()
            .unwrap()
            .get_or_insert(r.received_at + Duration::from_millis(TIMEOUT_MS + 500));
        if r.received_at < until {
            Reply::status(500)
        } else {
            Reply::text(DEFAULT_TEXT)
        }
    });
    let mut config = hybrid_config(&fake, TIMEOUT_MS);
    config.fallback_to_local = false;
    let server = start(config).await;
    let t = session(&server, &speech(&[CLIP_A, CLIP_B]), 0.5).await;

    let outcomes: Vec<(&str, u64)> = t
        .messages
        .iter()
        .filter(|m| matches!(m.kind(), "final" | "error"))
        .map(|m| (m.kind(), ms(m, "utterance")))
        .collect();
    assert_eq!(outcomes, [("error", 0), ("final", 1)], "{:?}", t.messages);
    let error = t.of_kind("error")[0];
    assert_eq!(error.json["code"], "openai_failed");
    let f = t.of_kind("final")[0];
    assert_eq!(
        (f.json["source"].as_str(), f.json["text"].as_str()),
        (Some("openai"), Some(DEFAULT_TEXT))
    );
    assert!(fake.request_count() > 2, "the first utterance was retried");
    assert_eq!(t.messages.last().unwrap().kind(), "done");
    assert_eq!(t.close_code, Some(1000));
    assert!(logs()
        .text()
        .contains("no fallback (FALLBACK_TO_LOCAL=false)"));
    assert_key_nowhere(&server).await;
}
