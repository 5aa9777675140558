//! Bad input gets a clear `error` message and the documented close code; the server never
//! panics, hangs or disturbs another session.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// Sends `frames` on a fresh connection and returns what came back.
async fn exchange(server: &TestServer, query: &str, frames: Vec<Message>) -> Transcript {
    let mut ws = connect(&server.ws_url(query)).await;
    for frame in frames {
        if ws.send(frame).await.is_err() {
            break;
        }
    }
    let mut t = Transcript::default();
    read_all(&mut ws, &mut t, Duration::from_secs(30)).await;
    t
}

fn error_code(t: &Transcript) -> String {
    let errors = t.of_kind("error");
    assert_eq!(errors.len(), 1, "one error message: {:?}", t.messages);
    assert!(!errors[0].json["message"].as_str().unwrap().is_empty());
    errors[0].json["code"].as_str().unwrap().to_string()
}

fn text(s: &str) -> Message {
    Message::Text(s.to_string().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_is_refused_clearly() {
    let mut config = test_config();
    config.max_frame_bytes = 64 * 1024;
    let server = TestServer::start(config).await;
    // Speech before eof keeps a final pending, so the session is still reading afterwards.
    let speech = s16le(&load_speech(&speech_dir().join("short/jfk_inaugural_1961.wav"))[..32_000]);
    let cases: Vec<(&str, Vec<Message>, &str, u16)> = vec![
        ("?sample_rate=96000", vec![], "bad_sample_rate", 1008),
        ("?sample_rate=abc", vec![], "bad_sample_rate", 1008),
        ("?encoding=mp3", vec![], "bad_encoding", 1008),
        ("?channels=5", vec![], "bad_channels", 1008),
        ("", vec![text("hello")], "bad_json", 1007),
        ("", vec![text(r#"{"type":"dance"}"#)], "unknown_type", 1007),
        (
            "",
            vec![text(r#"{"type":"start","sample_rate":4000}"#)],
            "bad_sample_rate",
            1008,
        ),
        (
            "",
            vec![Message::Binary(vec![0u8; 100_000].into())],
            "frame_too_large",
            1009,
        ),
        (
            "",
            vec![
                Message::Binary(speech.clone().into()),
                text(r#"{"type":"eof"}"#),
                Message::Binary(vec![0u8; 320].into()),
            ],
            "after_eof",
            1008,
        ),
        (
            "",
            vec![
                Message::Binary(vec![0u8; 320].into()),
                text(r#"{"type":"start"}"#),
            ],
            "start_after_audio",
            1008,
        ),
    ];
    for (query, frames, code, close) in cases {
        let t = exchange(&server, query, frames).await;
        assert_eq!(error_code(&t), code, "{query} {:?}", t.messages);
        assert_eq!(t.close_code, Some(close), "{code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_audio_does_not_break_the_session_or_the_server() {
    let server = TestServer::start(test_config()).await;
    // Pseudo-random bytes as s16 and as f32 (NaNs, infinities), in odd-sized frames.
    let mut seed = 0x1234_5678u32;
    let noise: Vec<u8> = (0..96_001)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        })
        .collect();
    for query in [
        "?encoding=s16le&sample_rate=44100",
        "?encoding=f32le&channels=2&sample_rate=8000",
    ] {
        let mut frames: Vec<Message> = noise
            .chunks(777)
            .map(|c| Message::Binary(c.to_vec().into()))
            .collect();
        frames.push(text(r#"{"type":"eof"}"#));
        let t = exchange(&server, query, frames).await;
        assert_well_formed(&t);
        assert!(t.of_kind("error").is_empty(), "{:?}", t.messages);
        assert_eq!(t.messages.last().unwrap().kind(), "done");
        assert_eq!(t.close_code, Some(1000));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_does_not_disturb_another_session() {
    let server = TestServer::start(test_config()).await;
    let wav = speech_dir().join("short/jfk_inaugural_1961.wav");
    let pcm = s16le(&load_speech(&wav));
    // One client sends half the speech and disappears without a close frame.
    let mut gone = connect(&server.ws_url("")).await;
    gone.send(Message::Binary(pcm[..pcm.len() / 2].to_vec().into()))
        .await
        .unwrap();
    drop(gone);
    // Another streams the whole clip and gets its transcript.
    let t = stream(&server.ws_url(""), &pcm, 32_000, 3200, 0.0).await;
    assert_well_formed(&t);
    assert!(
        wer(&t.final_text(), &reference_text(&wav)) <= 0.10,
        "{}",
        t.final_text()
    );
    // The vanished session is cleaned up.
    let client = reqwest::Client::new();
    let mut active = u64::MAX;
    for _ in 0..100 {
        let health: serde_json::Value = client
            .get(server.http_url("/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        active = health["sessions"]["active"].as_u64().unwrap();
        if active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(active, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_the_limit_are_told_to_retry() {
    let mut config = test_config();
    config.max_sessions = 1;
    let server = TestServer::start(config).await;
    let mut first = connect(&server.ws_url("")).await;
    let mut t = Transcript::default();
    // Wait for the first session's ready so it holds the permit.
    use futures_util::StreamExt;
    let _ready = first.next().await.unwrap().unwrap();
    let second = exchange(&server, "", vec![]).await;
    assert_eq!(error_code(&second), "server_busy");
    assert_eq!(second.close_code, Some(1013));
    first.send(text(r#"{"type":"eof"}"#)).await.unwrap();
    read_all(&mut first, &mut t, Duration::from_secs(30)).await;
    assert_eq!(t.close_code, Some(1000));
}
