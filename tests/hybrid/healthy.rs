//! A healthy upstream: OpenAI finals after the local text, and shutdown waiting for them.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use super::support::*;
use crate::common::*;
use crate::fake_openai::{FakeOpenAi, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_upstream_gives_openai_finals_after_the_local_text() {
    // OpenAI slower than the local model: the local text goes out first as the
    // utterance's last partial; eof waits for OpenAI's final, then done. First, while the
    // engine is idle: a local final that OpenAI answered first still runs to its end and
    // would hold a worker.
    let fake = FakeOpenAi::start().await;
    let server = start(hybrid_config(&fake, SLOW_DEADLINE_MS)).await;
    fake.set_reply(Reply::text("slow answer").after(SLOW_ANSWER));
    let one = speech(&[CLIP_A]);
    let t = session(&server, &one, 0.0).await;
    assert_well_formed(&t);
    let finals = t.of_kind("final");
    assert_eq!(finals.len(), 1, "{:?}", t.messages);
    let f = finals[0];
    assert_eq!(
        (f.json["source"].as_str(), f.json["text"].as_str()),
        (Some("openai"), Some("slow answer"))
    );
    let local = local_text_before(&t, f)
        .unwrap_or_else(|| panic!("no local text before {}: {:?}", f.json, t.messages));
    let error = wer(local.json["text"].as_str().unwrap(), &one.reference);
    assert!(error <= MAX_WER, "local WER {error:.3}: {}", local.json);
    let waited = f.at - t.started.unwrap();
    assert!(
        waited >= SLOW_ANSWER && waited <= SLOW_ANSWER + Duration::from_millis(MARGIN_MS),
        "final after {waited:?}"
    );
    assert_eq!(t.messages.last().unwrap().kind(), "done");
    assert_eq!(t.close_code, Some(1000));

    // Answers, the fields sent, and the prompt from the session's earlier finals.
    fake.respond_with(|r| {
        Reply::text(format!("fake transcript {}", r.index)).after(Duration::from_millis(300))
    });
    let two = speech(&[CLIP_C, CLIP_D]);
    // Twice real time: the first final is out long before the second utterance ends, so
    // the second request is prompted with it.
    let t = session(&server, &two, 0.5).await;

    assert_well_formed(&t);
    let finals = t.of_kind("final");
    assert_eq!(finals.len(), 2, "one utterance per clip: {:?}", t.messages);
    let requests = fake.requests()[1..].to_vec();
    assert_eq!(requests.len(), 2, "one request per utterance");
    for (n, (f, r)) in finals.iter().zip(&requests).enumerate() {
        assert_eq!(f.json["source"], "openai", "{}", f.json);
        // Request 0 was the slow one above.
        assert_eq!(f.json["text"], format!("fake transcript {}", n + 1));
        assert!(f.json.get("fallback_reason").is_none(), "{}", f.json);
        assert!(r.authorized && r.rejection.is_none(), "{r:?}");
        assert_eq!(r.field("model"), Some("gpt-transcribe"));
        assert_eq!(r.all("languages[]"), ["en"]);
        assert!(!r.has("language"), "{r:?}");
        let wav = r.wav.clone().unwrap().unwrap();
        let utterance_ms = ms(f, "end_ms") - ms(f, "start_ms");
        assert!(
            wav.duration_ms().abs_diff(utterance_ms as usize) <= 1_000,
            "uploaded {} ms for a {utterance_ms} ms utterance",
            wav.duration_ms()
        );
    }
    assert!(requests[0].prompt().unwrap_or("").is_empty());
    let prompt = requests[1].prompt().unwrap_or("");
    assert!(
        prompt.contains("fake transcript 1"),
        "second prompt {prompt:?}"
    );
    assert_eq!(
        metric(&server, r#"whisper_openai_requests_total{outcome="ok"}"#).await,
        3.0
    );
    let openai_finals = r#"whisper_final_latency_seconds_count{source="openai"}"#;
    assert_eq!(metric(&server, openai_finals).await, 3.0);
    let (code, health) = get_json(&server, "/health").await;
    assert_eq!((code, health["status"].as_str()), (200, Some("ok")));
    assert_eq!(health["openai"]["state"], "ok");

    assert_key_nowhere(&server).await;
    fake.set_reply(Reply::text("slow answer").after(Duration::from_millis(2_500)));
    shutdown_waits_for_a_slow_final(server, &one).await;
}

/// SIGTERM while OpenAI is slow: the open utterance's final still goes out, then 1012.
async fn shutdown_waits_for_a_slow_final(mut server: TestServer, one: &Speech) {
    let mut ws = connect(&server.ws_url("")).await;
    ws.send(Message::Binary(s16le(&one.samples).into()))
        .await
        .unwrap();
    // The utterance has closed (trailing silence) and OpenAI is still thinking.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let signalled = Instant::now();
    server.signal_shutdown();
    let mut t = Transcript::default();
    read_all(&mut ws, &mut t, Duration::from_secs(30)).await;
    let finals = t.of_kind("final");
    assert_eq!(finals.len(), 1, "{:?}", t.messages);
    assert_eq!(finals[0].json["source"], "openai", "{}", finals[0].json);
    assert!(finals[0].at > signalled);
    assert_eq!(t.close_code, Some(1012));
}
