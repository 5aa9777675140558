//! Start-up, health, static files and graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn refuses_to_start_without_a_model_naming_the_fix() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = test_config();
    config.whisper_model = "/nonexistent/ggml-tiny.en.bin".into();
    let err = whisper_api::run(listener, config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("scripts/fetch-model.sh"),
        "{err:#}"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = test_config();
    config.whisper_model = fixture("jfk.wav"); // exists, but is no model
    let err = whisper_api::run(listener, config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("not a ggml whisper model"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_model_and_sessions() {
    let server = TestServer::start(test_config()).await;
    let response = reqwest::get(server.http_url("/health")).await.unwrap();
    assert_eq!(response.status(), 200);
    let health: serde_json::Value = response.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["model"]["path"]
        .as_str()
        .unwrap()
        .ends_with("ggml-tiny.en.bin"));
    assert_eq!(health["sessions"]["active"], 0);
    assert!(health["version"].is_string() && health["uptime_s"].is_u64());
    let page = reqwest::get(server.http_url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains("<html"),
        "static index served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_the_open_utterance_final_then_closes_with_1012() {
    let mut server = TestServer::start(test_config()).await;
    let wav = speech_dir().join("short/jfk_inaugural_1961.wav");
    let speech = load_speech(&wav);
    let mut ws = connect(&server.ws_url("")).await;
    // Mid-sentence: the first 3 s of speech, no eof.
    ws.send(Message::Binary(s16le(&speech[..48_000]).into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal_shutdown();
    let mut t = Transcript::default();
    read_all(&mut ws, &mut t, Duration::from_secs(60)).await;
    assert_well_formed(&t);
    let finals = t.of_kind("final");
    assert_eq!(finals.len(), 1, "{:?} close {:?}", t.messages, t.close_code);
    assert!(
        wer(&t.final_text(), "And so my fellow Americans") <= 0.4,
        "{}",
        t.final_text()
    );
    assert_eq!(t.close_code, Some(1012));
    // New connections are not accepted any more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tokio_tungstenite::connect_async(server.ws_url(""))
        .await
        .is_err());
    server.shutdown().await.unwrap();
}
