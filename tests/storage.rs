//! Durable transcripts against a real database: an SQLite file here, the same tests against a
//! real PostgreSQL server when scripts/test-storage.sh sets `STORAGE_TEST_URL`. The real
//! server, the real model and real speech throughout.

mod common;

use std::time::{Duration, Instant};

use common::storage::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use whisper_api::storage::retention::cutoff_ms;
use whisper_api::storage::{now_ms, FinalRecord};

/// One sentence, 4.4 s; a second of silence after it ends the utterance.
const CLIP: &str = "short/librispeech_train-clean-100_5456-24741-0000.wav";
const MS_PER_DAY: i64 = 86_400_000;

async fn server_on(url: &str, tweak: impl FnOnce(&mut whisper_api::Config)) -> TestServer {
    let mut config = test_config();
    config.storage_url = whisper_api::config::Secret::new(url);
    tweak(&mut config);
    TestServer::start(config).await
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn get_text(url: &str) -> (u16, String, String) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    let kind = r.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    (status, kind, r.text().await.unwrap())
}

async fn delete(url: &str) -> (u16, String) {
    let r = reqwest::Client::new().delete(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn clip_pcm() -> Vec<u8> {
    let mut samples = load_speech(&speech_dir().join(CLIP));
    samples.extend(std::iter::repeat_n(0.0, 16_000));
    s16le(&samples)
}

/// Reads until the next text message.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("server answered")
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    common::sample(&text, name)
}

/// The finals a client received, as the store keeps them.
fn received_final(m: &Value) -> FinalRecord {
    FinalRecord {
        utterance: m["utterance"].as_i64().unwrap(),
        text: m["text"].as_str().unwrap().to_string(),
        source: m["source"].as_str().unwrap().to_string(),
        fallback_reason: m["fallback_reason"].as_str().map(str::to_string),
        start_ms: m["start_ms"].as_i64().unwrap(),
        end_ms: m["end_ms"].as_i64().unwrap(),
        latency_ms: m["latency_ms"].as_i64().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finals_are_stored_before_they_are_sent_and_read_back_in_every_format() {
    let url = fresh_store_url("before-sent").await;
    // Long enough that a write waiting for the lock below is not given up on.
    let server = server_on(&url, |c| c.storage_timeout_ms = 10_000).await;
    let store = open_store(&url).await;
    // Query parameters a client might add; none of them is stream metadata worth keeping.
    let mut ws = connect(&server.ws_url("?language=en&token=tok-SECRET&api_key=sk-SECRET")).await;
    let ready = next_json(&mut ws).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let id = ready["session"].as_str().unwrap().to_string();
    let opened = store.session(&id).await.unwrap().expect("stored at ready");
    assert_eq!((opened.kind.as_str(), opened.ended_ms), ("live", None));
    assert!(server_has_live(&server, &id).await);

    // While another client holds the write lock, no final may reach this client: each is
    // written first, and the write waits for the lock.
    let lock = WriteLock::take(&url).await;
    for frame in clip_pcm().chunks(3_200) {
        ws.send(Message::Binary(frame.to_vec().into()))
            .await
            .unwrap();
    }
    ws.send(Message::Text(r#"{"type":"eof"}"#.into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let released = Instant::now();
    lock.release().await;

    let mut received = Vec::new();
    loop {
        let m = next_json(&mut ws).await;
        match m["type"].as_str().unwrap() {
            "final" => {
                assert!(
                    Instant::now() >= released,
                    "a final arrived before it was stored"
                );
                // Already readable the moment it arrives.
                let stored = store.finals(&id).await.unwrap();
                let this = received_final(&m);
                assert!(stored.contains(&this), "{this:?} not in {stored:?}");
                received.push(this);
            }
            "done" => break,
            "partial" => {}
            other => panic!("unexpected {other}: {m}"),
        }
    }
    drop(ws);
    assert!(!received.is_empty(), "a final: {received:?}");
    let spoken: Vec<_> = received.iter().map(|f| f.text.as_str()).collect();
    assert!(
        wer(&spoken.join(" "), &reference_text(&speech_dir().join(CLIP))) <= 0.25,
        "{spoken:?}"
    );

    // The session ends in the store once the socket is gone.
    let base = server.http_url(&format!("/v1/sessions/{id}"));
    let session = wait_for(|| async {
        let (_, s) = get_json(&base).await;
        (!s["ended_ms"].is_null()).then_some(s)
    })
    .await;
    assert_eq!(session["id"], id.as_str());
    assert_eq!(session["kind"], "live");
    assert_eq!(session["outcome"], "completed", "{session}");
    assert_eq!(session["finals"], received.len());
    assert_eq!(session["parameters"]["sample_rate"], 16_000);
    assert_eq!(session["parameters"]["language"], "en");
    let everything = format!("{session}");
    assert!(!everything.contains("SECRET"), "{everything}");

    let (status, json) = get_json(&format!("{base}/transcript")).await;
    assert_eq!(status, 200);
    let finals: Vec<FinalRecord> = json["finals"]
        .as_array()
        .unwrap()
        .iter()
        .map(received_final)
        .collect();
    assert_eq!(finals, received);
    let joined: Vec<_> = received
        .iter()
        .map(|f| f.text.trim())
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(json["text"], joined.join(" "));

    let (status, kind, txt) = get_text(&format!("{base}/transcript?format=txt")).await;
    assert_eq!((status, kind.as_str()), (200, "text/plain; charset=utf-8"));
    assert_eq!(txt.lines().collect::<Vec<_>>(), joined);
    let (_, kind, srt) = get_text(&format!("{base}/transcript?format=srt")).await;
    assert!(kind.starts_with("application/x-subrip"), "{kind}");
    assert!(srt.starts_with("1\n00:00:0"), "{srt}");
    assert_eq!(srt.matches(" --> ").count(), joined.len(), "{srt}");
    let (_, kind, vtt) = get_text(&format!("{base}/transcript?format=vtt")).await;
    assert!(kind.starts_with("text/vtt"), "{kind}");
    assert!(vtt.starts_with("WEBVTT\n\n00:00:0"), "{vtt}");
    let (status, err) = get_json(&format!("{base}/transcript?format=docx")).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (400, &Value::from("bad_format"))
    );
}

async fn server_has_live(server: &TestServer, id: &str) -> bool {
    let (status, body) = delete(&server.http_url(&format!("/v1/sessions/{id}"))).await;
    if status == 409 {
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["error"]["code"], "session_live", "{body}");
        assert_eq!(err["error"]["type"], "invalid_request_error", "{body}");
        return true;
    }
    false
}

async fn wait_for<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(t) = probe().await {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met in 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_page_newest_first_and_delete_refuses_a_live_one() {
    let url = fresh_store_url("paging").await;
    let store = open_store(&url).await;
    let now = now_ms();
    for i in 0..5 {
        let id = format!("past{i}");
        let params = serde_json::json!({"sample_rate": 16000});
        store
            .open_session(&id, "live", now - 60_000 + i * 1_000, &params)
            .await
            .unwrap();
        store.close_session(&id, now, "completed").await.unwrap();
    }
    let server = server_on(&url, |_| {}).await;
    let list = server.http_url("/v1/sessions");

    let (status, page) = get_json(&format!("{list}?limit=2")).await;
    assert_eq!(status, 200);
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&page), ["past4", "past3"]);
    assert_eq!(
        (&page["has_more"], &page["next_offset"]),
        (&Value::from(true), &Value::from(2))
    );
    let (_, page) = get_json(&format!("{list}?limit=2&offset=4")).await;
    assert_eq!(ids(&page), ["past0"]);
    assert_eq!(
        (&page["has_more"], &page["next_offset"]),
        (&Value::from(false), &Value::Null)
    );

    // A live session is listed first, and cannot be deleted while it runs.
    let mut ws = connect(&server.ws_url("")).await;
    let live = next_json(&mut ws).await["session"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, page) = get_json(&format!("{list}?limit=1")).await;
    assert_eq!(ids(&page), [live.as_str()]);
    assert!(page["data"][0]["ended_ms"].is_null());
    assert!(
        server_has_live(&server, &live).await,
        "a live session refused"
    );
    ws.send(Message::Text(r#"{"type":"eof"}"#.into()))
        .await
        .unwrap();
    while ws.next().await.is_some() {}
    let one = server.http_url(&format!("/v1/sessions/{live}"));
    wait_for(|| async { (delete(&one).await.0 == 204).then_some(()) }).await;
    let (status, err) = get_json(&one).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &Value::from("not_found"))
    );
    assert_eq!(delete(&one).await.0, 404);
    // Deleting one session leaves the others.
    assert_eq!(delete(&server.http_url("/v1/sessions/past2")).await.0, 204);
    let (_, page) = get_json(&list).await;
    assert_eq!(ids(&page), ["past4", "past3", "past1", "past0"]);
    assert_eq!(
        get_json(&server.http_url("/v1/sessions/no-such")).await.0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_exactly_what_is_old() {
    let url = fresh_store_url("retention").await;
    let store = open_store(&url).await;
    let now = now_ms();
    let day = |d: i64| now - d * MS_PER_DAY;
    let params = serde_json::json!({});
    let sample = FinalRecord {
        utterance: 0,
        text: "kept or not".into(),
        source: "local".into(),
        fallback_reason: None,
        start_ms: 0,
        end_ms: 1_000,
        latency_ms: 300,
    };
    // (id, started, ended): "old" ones ended (or, never closed after a crash, started) more
    // than 30 days ago; a long session that started long ago but ended recently stays.
    let cases = [
        ("ended-40d", day(41), Some(day(40))),
        ("ended-31d", day(31), Some(day(30) - 60_000)),
        ("crashed-45d", day(45), None),
        ("ended-29d", day(31), Some(day(29))),
        ("started-29d", day(29), None),
        ("today", day(0) - 5_000, Some(day(0))),
    ];
    for (id, started, ended) in cases {
        store
            .open_session(id, "live", started, &params)
            .await
            .unwrap();
        store.add_final(id, &sample).await.unwrap();
        if let Some(ended) = ended {
            store.close_session(id, ended, "completed").await.unwrap();
        }
    }
    // The server's background task purges at start.
    let server = server_on(&url, |c| c.transcript_retention_days = 30).await;
    let kept = wait_for(|| async {
        let (_, page) = get_json(&server.http_url("/v1/sessions?limit=50")).await;
        let ids: Vec<String> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        (ids.len() < cases.len()).then_some(ids)
    })
    .await;
    assert_eq!(kept, ["today", "started-29d", "ended-29d"]);
    for gone in ["ended-40d", "ended-31d", "crashed-45d"] {
        assert!(
            store.finals(gone).await.unwrap().is_empty(),
            "{gone}'s finals"
        );
    }
    assert_eq!(store.finals("ended-29d").await.unwrap(), [sample]);
    // The cutoff itself: a session that ended exactly at it stays.
    let cutoff = cutoff_ms(now_ms(), 30);
    store
        .open_session("edge", "file", cutoff - 1, &params)
        .await
        .unwrap();
    store
        .close_session("edge", cutoff + 10_000, "completed")
        .await
        .unwrap();
    assert_eq!(store.purge_before(cutoff).await.unwrap(), 0);
    assert_eq!(store.purge_before(cutoff + 10_001).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_database_never_holds_back_a_final_and_shows_in_health_and_metrics() {
    let url = fresh_store_url("stuck").await;
    let server = server_on(&url, |c| c.storage_timeout_ms = 300).await;
    assert_eq!(metric(&server, "whisper_storage_errors_total").await, 0.0);
    let (_, health) = get_json(&server.http_url("/health")).await;
    assert_eq!(health["storage"]["ok"], true, "{health}");

    // Every write waits on another client's lock longer than STORAGE_TIMEOUT_MS.
    let lock = WriteLock::take(&url).await;
    let t = stream(&server.ws_url(""), &clip_pcm(), 32_000, 3_200, 0.0).await;
    assert_well_formed(&t);
    assert!(!t.of_kind("final").is_empty(), "{:?}", t.messages);
    assert!(!t.final_text().trim().is_empty());
    assert_eq!(t.close_code, Some(1000));
    // Opening the session and storing its final, at least (closing it may still be on its way).
    assert!(metric(&server, "whisper_storage_errors_total").await >= 2.0);
    let (status, health) = get_json(&server.http_url("/health")).await;
    assert_eq!(
        status, 200,
        "storage trouble does not make the server unhealthy"
    );
    let storage = &health["storage"];
    assert_eq!(storage["ok"], false, "{health}");
    assert!(storage["errors"].as_u64().unwrap() >= 2, "{health}");
    assert!(
        storage["last_error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{health}"
    );
    lock.release().await;

    // Once the database answers again, so does /health.
    let t = stream(&server.ws_url(""), &clip_pcm(), 32_000, 3_200, 0.0).await;
    assert!(!t.of_kind("final").is_empty());
    let (_, health) = get_json(&server.http_url("/health")).await;
    assert_eq!(health["storage"]["ok"], true, "{health}");
    let id = t.messages[0].json["session"].as_str().unwrap();
    let (status, _) = get_json(&server.http_url(&format!("/v1/sessions/{id}"))).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_database_keeps_live_transcription_going() {
    // The database's directory cannot be created: its parent is a regular file (a check
    // that holds even for root, unlike file permissions).
    let dir = temp_dir("unwritable");
    std::fs::write(dir.join("file"), b"not a directory").unwrap();
    let url = format!("sqlite://{}/file/transcripts.db", dir.display());
    let server = server_on(&url, |_| {}).await;
    let (status, health) = get_json(&server.http_url("/health")).await;
    assert_eq!(status, 200);
    assert_eq!(health["storage"]["ok"], false, "{health}");
    assert!(health["storage"]["last_error"]
        .as_str()
        .unwrap()
        .starts_with("open: "));
    assert_eq!(metric(&server, "whisper_storage_errors_total").await, 1.0);

    let t = stream(&server.ws_url(""), &clip_pcm(), 32_000, 3_200, 0.0).await;
    assert_well_formed(&t);
    assert!(!t.of_kind("final").is_empty(), "{:?}", t.messages);
    let (status, err) = get_json(&server.http_url("/v1/sessions")).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (404, &Value::from("storage_disabled"))
    );
}
