//! `kill -9` of the real binary in the middle of a session loses no final that a client
//! received: after a restart on the same database every one of them is there.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::storage::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Finals to receive before the kill: enough to show several survive, well before the end.
const FINALS_BEFORE_KILL: usize = 3;

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    async fn spawn(store_url: &str) -> Self {
        // A free port: bound, read, released; the binary binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_whisper-api"))
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("WHISPER_MODEL", model_path())
            .env("STATIC_DIR", repo_root().join("static"))
            .env("PRIMARY_SERVICE", "local")
            .env("STORAGE_URL", store_url)
            .env("RUST_LOG", "warn,tower_http=off")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .spawn()
            .expect("start whisper-api");
        let server = Self { child, port };
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(server.url("/health")).await {
                if r.status() == 200 {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("whisper-api did not become healthy");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_session_loses_no_final_a_client_received() {
    let store_url = fresh_store_url("crash").await;
    let mut server = Server::spawn(&store_url).await;
    let wav = speech_dir().join("long/librivox_shakespeare_sonnet001.wav");
    let pcm = s16le(&load_speech(&wav));
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", server.port))
            .await
            .unwrap();
    // The whole reading at once: the server works through it while finals come back.
    for frame in pcm.chunks(32_000) {
        ws.send(Message::Binary(frame.to_vec().into()))
            .await
            .unwrap();
    }
    let mut session = String::new();
    let mut received = Vec::new();
    while received.len() < FINALS_BEFORE_KILL {
        let msg = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("a message")
            .expect("open")
            .expect("no error");
        let Message::Text(t) = msg else { continue };
        let m: Value = serde_json::from_str(&t).unwrap();
        match m["type"].as_str().unwrap() {
            "ready" => session = m["session"].as_str().unwrap().to_string(),
            "final" => received.push(m),
            _ => {}
        }
    }
    // SIGKILL: no shutdown code runs, nothing is flushed on the way out.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // Whatever was already on its way arrived too, and counts as received.
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        if let Message::Text(t) = msg {
            let m: Value = serde_json::from_str(&t).unwrap();
            if m["type"] == "final" {
                received.push(m);
            }
        }
    }

    let server = Server::spawn(&store_url).await;
    let r = reqwest::get(server.url(&format!("/v1/sessions/{session}/transcript")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stored: Value = r.json().await.unwrap();
    let finals = stored["finals"].as_array().unwrap();
    for got in &received {
        let kept = finals.iter().find(|f| f["utterance"] == got["utterance"]);
        let kept = kept.unwrap_or_else(|| panic!("lost {got}; stored {finals:?}"));
        for field in ["text", "source", "start_ms", "end_ms", "latency_ms"] {
            assert_eq!(kept[field], got[field], "{field} of {got}");
        }
    }
    // A session that never closed: no end time, no outcome, still listed.
    assert!(stored["session"]["ended_ms"].is_null(), "{stored}");
    assert!(stored["session"]["outcome"].is_null(), "{stored}");
    let list: Value = reqwest::get(server.url("/v1/sessions"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["id"], session.as_str());
}
