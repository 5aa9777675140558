//! Upstream failures: each fallback reason within its deadline, refused connections, a missing key, the circuit breaker.

use std::time::{Duration, Instant};

use whisper_api::config::Secret;

use super::support::*;
use crate::common::*;
use crate::fake_openai::{self, FakeOpenAi, Reply, DEFAULT_TEXT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_failure_falls_back_to_the_local_final_within_the_deadline() {
    let fake = FakeOpenAi::start().await;
    let server = start(hybrid_config(&fake, TIMEOUT_MS)).await;
    let one = speech(&[CLIP_A]);
    // (reply, fallback reason, whether the client retries it)
    let cases = [
        (Reply::status(500), "http_5xx", true),
        (Reply::rate_limited(30), "http_429", false),
        (Reply::hang(), "timeout", false),
        (Reply::malformed(), "bad_response", false),
        (Reply::status(401), "http_4xx", false),
    ];
    for (reply, reason, retried) in cases {
        fake.set_reply(reply);
        let before = fake.request_count();
        let t = session(&server, &one, 0.0).await;
        assert_local_fallback(&t, &one, reason);
        let attempts = fake.request_count() - before;
        if retried {
            assert!(attempts > 1, "{reason}: {attempts} attempts");
        } else {
            assert_eq!(attempts, 1, "{reason}: no retry");
        }
        if reason == "timeout" {
            let f = t.of_kind("final")[0];
            assert!(ms(f, "latency_ms") >= TIMEOUT_MS - 100, "{}", f.json);
            let (_, elapsed_ms) = fallback_lines(&t)[0];
            assert!(
                elapsed_ms >= TIMEOUT_MS - 50,
                "gave up early: {elapsed_ms} ms"
            );
        }
        let sample = format!("whisper_fallbacks_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&server, &sample).await, 1.0, "{reason}");
    }
    // Degraded, but 200: local fallback is serving.
    let (code, health) = get_json(&server, "/health").await;
    assert_eq!((code, health["status"].as_str()), (200, Some("degraded")));
    assert_eq!(health["openai"]["state"], "degraded");
    assert_eq!(health["openai"]["last_error"]["reason"], "http_4xx");

    assert_key_nowhere(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_and_a_missing_key_fall_back_to_local() {
    let one = speech(&[CLIP_A]);
    let fake = FakeOpenAi::start().await;
    let mut config = hybrid_config(&fake, TIMEOUT_MS);
    config.openai_base_url = fake_openai::refused_url();
    let refused = start(config).await;
    let t = session(&refused, &one, 0.0).await;
    assert_local_fallback(&t, &one, "network");
    let (code, health) = get_json(&refused, "/health?deep=1").await;
    assert_eq!((code, health["status"].as_str()), (200, Some("degraded")));
    assert_eq!(health["openai"]["last_error"]["reason"], "network");
    assert_eq!(health["openai_check"]["reachable"], false);
    assert_key_nowhere(&refused).await;
    drop(refused);

    // PRIMARY_SERVICE=openai without a key: starts (TestServer waits for /health 200),
    // warns, serves local finals, never calls the fake.
    let mut config = hybrid_config(&fake, TIMEOUT_MS);
    config.openai_api_key = Secret::new("");
    let keyless = start(config).await;
    let (code, health) = get_json(&keyless, "/health?deep=1").await;
    assert_eq!((code, health["status"].as_str()), (200, Some("degraded")));
    assert_eq!(health["openai"]["configured"], false);
    assert_eq!(health["openai"]["state"], "disabled");
    assert_eq!(health["openai_check"]["error"], "no_api_key");
    let t = session(&keyless, &one, 0.0).await;
    assert_local_fallback(&t, &one, "no_api_key");
    assert_eq!((fake.request_count(), fake.model_checks()), (0, 0));
    assert!(
        logs()
            .text()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("OPENAI_API_KEY is empty")),
        "a loud warning about the missing key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_after_consecutive_failures_and_recovers_after_the_cooldown() {
    let cooldown = Duration::from_millis(6_000);
    let fake = FakeOpenAi::start().await;
    let mut config = hybrid_config(&fake, TIMEOUT_MS);
    config.openai_circuit_failures = 2;
    config.openai_circuit_cooldown_ms = cooldown.as_millis() as u64;
    let server = start(config).await;
    let one = speech(&[CLIP_A]);
    const OPEN: &str = "whisper_openai_circuit_open";

    fake.set_reply(Reply::status(503));
    let first = session(&server, &one, 0.0).await;
    assert_local_fallback(&first, &one, "http_5xx");
    // The second failure opens the circuit as soon as OpenAI is given up, while that
    // session still waits for its local final (which can take longer than the cooldown on
    // a loaded machine): watch /health meanwhile, and send the third session then.
    let watching = Instant::now();
    let (second, (opened, calls, third)) = tokio::join!(session(&server, &one, 0.0), async {
        let opened = loop {
            assert!(
                watching.elapsed() < Duration::from_secs(60),
                "circuit never opened"
            );
            let (code, health) = get_json(&server, "/health").await;
            if health["openai"]["state"] == "circuit_open" {
                assert_eq!((code, health["status"].as_str()), (200, Some("degraded")));
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(metric(&server, OPEN).await, 1.0);
        // Open: straight to local, OpenAI is not called.
        let calls = fake.request_count();
        (opened, calls, session(&server, &one, 0.0).await)
    });
    for t in [&first, &second] {
        assert_eq!(t.of_kind("final").len(), 1, "one utterance per session");
    }
    assert_local_fallback(&second, &one, "http_5xx");
    assert_local_fallback(&third, &one, "circuit_open");
    assert_eq!(fake.request_count(), calls);

    // After the cooldown a probe goes through; its success closes the circuit.
    fake.set_reply(Reply::text(DEFAULT_TEXT));
    tokio::time::sleep_until((opened + cooldown + Duration::from_millis(200)).into()).await;
    let t = session(&server, &one, 0.0).await;
    assert_well_formed(&t);
    let f = t.of_kind("final")[0];
    assert_eq!(
        (f.json["source"].as_str(), f.json["text"].as_str()),
        (Some("openai"), Some(DEFAULT_TEXT))
    );
    assert_eq!(fake.request_count(), calls + 1);
    let (_, health) = get_json(&server, "/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["openai"]["state"], "ok");
    assert_eq!(metric(&server, OPEN).await, 0.0);
    assert_key_nowhere(&server).await;
}
