//! `/ready` against the real server and model: 503 `loading` until the model is in, 200 with
//! free slots, 503 `full` at `MAX_SESSIONS` (while `/health`, the liveness check, stays 200),
//! and not ready while draining or with a worker pool down; `/metrics` keeps its names and
//! tracks the free slots.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use common::*;
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use whisper_api::http::{health, AppState};

async fn get(url: &str) -> reqwest::Result<(u16, String)> {
    let response = reqwest::get(url).await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

async fn ready(server: &TestServer) -> (u16, Value) {
    let (status, body) = get(&server.http_url("/ready")).await.expect("GET /ready");
    (status, serde_json::from_str(&body).expect("JSON body"))
}

/// One unlabelled sample from `/metrics`.
async fn metric(server: &TestServer, name: &str) -> f64 {
    let (_, text) = get(&server.http_url("/metrics")).await.unwrap();
    common::sample(&text, name)
}

/// Polls `/ready` until it answers `status` (at most `within`).
async fn wait_ready_status(server: &TestServer, status: &str, within: Duration) -> (u16, Value) {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = ready(server).await;
        if body["status"] == status || Instant::now() > deadline {
            return (code, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_the_model_loads_then_200() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ready", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(whisper_api::run(listener, test_config(), async move {
        let _ = stopped.await;
    }));
    // The listener is bound before `run` starts loading, so the first request is queued
    // and answered while the model is still loading.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = get(&url).await.expect("the listener is bound");
        let body: Value = serde_json::from_str(&body).unwrap();
        seen.push((code, body["status"].as_str().unwrap().to_string()));
        if code == 200 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        seen.first().unwrap(),
        &(503, "loading".to_string()),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().unwrap(),
        &(200, "ready".to_string()),
        "{seen:?}"
    );
    assert!(
        seen[..seen.len() - 1].iter().all(|s| s == &seen[0]),
        "only loading before ready: {seen:?}"
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_when_full_and_while_draining_and_health_stays_live() {
    let mut config = test_config();
    config.max_sessions = 1;
    let mut server = TestServer::start(config).await;
    let (code, body) = ready(&server).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("ready")),
        "{body}"
    );
    assert_eq!(body["sessions"]["max"], 1);
    assert_eq!(metric(&server, "whisper_session_slots_free").await, 1.0);
    assert_eq!(metric(&server, "whisper_sessions_max").await, 1.0);
    assert!(metric(&server, "whisper_live_workers").await >= 1.0);

    // One open session fills the server: not ready, but alive.
    let mut ws = connect(&server.ws_url("")).await;
    let (code, body) = wait_ready_status(&server, "full", Duration::from_secs(5)).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (503, Some("full")),
        "{body}"
    );
    assert_eq!(body["sessions"]["active"], 1);
    let (health, _) = get(&server.http_url("/health")).await.unwrap();
    assert_eq!(health, 200, "a full server is alive");
    assert_eq!(metric(&server, "whisper_session_slots_free").await, 0.0);
    assert_eq!(metric(&server, "whisper_sessions_active").await, 1.0);

    // The session ends: ready again.
    ws.send(Message::Text(r#"{"type":"eof"}"#.into()))
        .await
        .unwrap();
    let mut t = Transcript::default();
    read_all(&mut ws, &mut t, Duration::from_secs(30)).await;
    let (code, body) = wait_ready_status(&server, "ready", Duration::from_secs(5)).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("ready")),
        "{body}"
    );
    assert_eq!(metric(&server, "whisper_session_slots_free").await, 1.0);

    // Draining with a session mid-utterance: its final still comes, and /ready never says
    // 200 again (the listener is closed: a probe or proxy sees a refused connection).
    let speech = load_speech(&speech_dir().join("short/jfk_inaugural_1961.wav"));
    let mut ws = connect(&server.ws_url("")).await;
    ws.send(Message::Binary(s16le(&speech[..48_000]).into()))
        .await
        .unwrap();
    wait_ready_status(&server, "full", Duration::from_secs(5)).await;
    server.signal_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = get(&server.http_url("/ready")).await;
    assert!(
        matches!(&during, Err(e) if e.is_connect()) || matches!(&during, Ok((503, _))),
        "{during:?}"
    );
    let mut t = Transcript::default();
    read_all(&mut ws, &mut t, Duration::from_secs(60)).await;
    assert_eq!(t.of_kind("final").len(), 1, "{:?}", t.messages);
    assert!(
        wer(&t.final_text(), "And so my fellow Americans") <= 0.4,
        "{}",
        t.final_text()
    );
    assert_eq!(t.close_code, Some(1012));
    server.shutdown().await.unwrap();
}

/// The handler itself, on a server told to stop (with and without its model).
#[tokio::test]
async fn ready_handler_says_draining_once_shutdown_starts() {
    let state = AppState::new(test_config());
    let response = health::ready(State(state.clone())).await.into_response();
    assert_eq!(response.status(), 503);
    assert_eq!(health::Readiness::of(&state), health::Readiness::Loading);
    state.shutdown.cancel();
    let response = health::ready(State(state.clone())).await.into_response();
    assert_eq!(response.status(), 503);
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["status"], "draining");
    assert_eq!(health::Readiness::of(&state).free_slots(), 0);
}

/// A pool left without workers (the partials' or FINAL_MODEL's) makes the server unready
/// even with free slots; draining and loading come first.
#[test]
fn readiness_accounts_for_both_worker_pools() {
    use health::{LiveWorkers, Readiness};
    let pools = |partial_pool, final_pool| {
        Some(LiveWorkers {
            partial_pool,
            final_pool,
        })
    };
    assert_eq!(
        Readiness::decide(false, pools(2, None), 3),
        Readiness::Ready(3)
    );
    assert_eq!(
        Readiness::decide(false, pools(2, Some(2)), 3),
        Readiness::Ready(3)
    );
    assert_eq!(
        Readiness::decide(false, pools(2, Some(0)), 3),
        Readiness::Failed
    );
    assert_eq!(
        Readiness::decide(false, pools(0, Some(2)), 3),
        Readiness::Failed
    );
    assert_eq!(
        Readiness::decide(false, pools(0, None), 3),
        Readiness::Failed
    );
    assert_eq!(
        Readiness::decide(false, pools(2, Some(2)), 0),
        Readiness::Full
    );
    assert_eq!(
        Readiness::decide(true, pools(2, Some(0)), 3),
        Readiness::Draining
    );
    assert_eq!(Readiness::decide(false, None, 3), Readiness::Loading);
    assert_eq!(Readiness::Failed.as_str(), "failed");
    assert_eq!(Readiness::Failed.free_slots(), 0);
    let workers = LiveWorkers {
        partial_pool: 2,
        final_pool: Some(1),
    };
    assert_eq!(workers.total(), 3);
    assert!(!workers.pool_down());
}

/// The names dashboards and alert rules query, scraped from the real server: exactly these
/// `whisper_*` samples, plus the process CPU and memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_keeps_its_names() {
    let server = TestServer::start(test_config()).await;
    let response = reqwest::get(server.http_url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let names: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let mut expected: BTreeSet<String> = [
        "whisper_sessions_active",
        "whisper_sessions_max",
        "whisper_session_slots_free",
        "whisper_sessions_total",
        "whisper_sessions_rejected_total",
        "whisper_utterances_total",
        "whisper_partials_shed_total",
        "whisper_final_loops_total",
        "whisper_finals_on_lent_cores_total",
        "whisper_engine_queue_depth",
        "whisper_openai_circuit_open",
        "whisper_live_workers",
        "whisper_storage_errors_total",
        "whisper_openai_requests_total",
        "whisper_fallbacks_total",
        "whisper_refusals_total",
        "whisper_early_finals_total",
    ]
    .map(String::from)
    .into();
    for histogram in [
        "whisper_partial_latency_seconds",
        "whisper_final_latency_seconds",
        "whisper_local_rtf",
    ] {
        for suffix in ["_bucket", "_sum", "_count"] {
            expected.insert(format!("{histogram}{suffix}"));
        }
    }
    let whisper: BTreeSet<String> = names
        .iter()
        .filter(|n| n.starts_with("whisper_"))
        .map(|n| n.to_string())
        .collect();
    assert_eq!(whisper, expected);
    for name in ["process_cpu_seconds_total", "process_resident_memory_bytes"] {
        assert!(names.contains(name), "{name} missing");
    }
    assert!(text.contains("whisper_final_latency_seconds_bucket{source=\"local\",le=\"+Inf\"} 0"));
    assert!(text.contains("whisper_fallbacks_total{reason=\"timeout\"} 0"));
}
