//! End-to-end streaming with the real server, the real tiny.en model and real speech.

mod common;

use std::time::Duration;

use common::*;

const MIC_RATE: u32 = 48_000;
/// 20 ms of 48 kHz s16 mono, a typical browser frame.
const MIC_CHUNK_BYTES: usize = 960 * 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jfk_at_48k_real_time_gives_partials_then_an_accurate_final() {
    let server = TestServer::start(test_config()).await;
    let wav = speech_dir().join("short/jfk_inaugural_1961.wav");
    let pcm = s16le(&at_rate(&load_speech(&wav), MIC_RATE));
    let url = server.ws_url("?sample_rate=48000");
    let t = stream(&url, &pcm, MIC_RATE as usize * 2, MIC_CHUNK_BYTES, 1.0).await;

    assert_well_formed(&t);
    assert_eq!(t.messages[0].json["sample_rate"], 48_000);
    assert!(
        !t.of_kind("partial").is_empty(),
        "partials while speaking: {:?}",
        t.messages
    );
    let first_partial = t
        .messages
        .iter()
        .position(|m| m.kind() == "partial")
        .unwrap();
    let first_final = t.messages.iter().position(|m| m.kind() == "final").unwrap();
    assert!(first_partial < first_final);
    let text = t.final_text();
    let error = wer(&text, &reference_text(&wav));
    assert!(error <= 0.10, "WER {error:.3} for {text:?}");
    for f in t.of_kind("final") {
        assert_eq!(f.json["source"], "local");
        assert!(f.json["end_ms"].as_u64().unwrap() <= 11_100, "{}", f.json);
    }
    // eof → every final → done → close 1000.
    assert_eq!(t.messages.last().unwrap().kind(), "done");
    assert_eq!(t.close_code, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reading_yields_several_finals_in_order() {
    let server = TestServer::start(test_config()).await;
    let wav = speech_dir().join("long/librivox_shakespeare_sonnet001.wav");
    let pcm = s16le(&at_rate(&load_speech(&wav), MIC_RATE));
    // Twice real time: a loaded engine still keeps finals in order.
    let t = stream(
        &server.ws_url("?sample_rate=48000"),
        &pcm,
        MIC_RATE as usize * 2,
        MIC_CHUNK_BYTES * 5,
        0.5,
    )
    .await;

    assert_well_formed(&t);
    let finals = t.of_kind("final");
    assert!(
        finals.len() >= 3,
        "{} finals: {:?}",
        finals.len(),
        t.final_text()
    );
    let error = wer(&t.final_text(), &reference_text(&wav));
    assert!(error <= 0.25, "WER {error:.3}: {}", t.final_text());
    assert_eq!(t.close_code, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stereo_f32_at_44k1_in_odd_sized_frames() {
    let server = TestServer::start(test_config()).await;
    let wav = speech_dir().join("short/jfk_inaugural_1961.wav");
    let mono = at_rate(&load_speech(&wav), 44_100);
    let stereo: Vec<f32> = mono.iter().flat_map(|s| [*s, *s]).collect();
    let pcm = f32le(&stereo);
    let url = server.ws_url("?sample_rate=44100&encoding=f32le&channels=2");
    // 1001-byte frames split samples (and stereo pairs) across frames.
    let t = stream(&url, &pcm, 44_100 * 8, 1001 * 7, 0.0).await;
    assert_well_formed(&t);
    let error = wer(&t.final_text(), &reference_text(&wav));
    assert!(error <= 0.10, "WER {error:.3}: {}", t.final_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_ends_the_session_after_the_idle_timeout() {
    let mut config = test_config();
    config.idle_timeout_ms = 700;
    let server = TestServer::start(config).await;
    let wav = speech_dir().join("short/jfk_inaugural_1961.wav");
    let pcm = s16le(&load_speech(&wav));
    // Like websocat -n: audio, then nothing (no eof), connection left open.
    let mut ws = connect(&server.ws_url("")).await;
    use futures_util::SinkExt;
    for frame in pcm.chunks(32_000) {
        ws.send(tokio_tungstenite::tungstenite::Message::Binary(
            frame.to_vec().into(),
        ))
        .await
        .unwrap();
    }
    let mut t = Transcript::default();
    read_all(&mut ws, &mut t, Duration::from_secs(60)).await;
    assert_well_formed(&t);
    assert!(
        wer(&t.final_text(), &reference_text(&wav)) <= 0.10,
        "{}",
        t.final_text()
    );
    assert_eq!(t.messages.last().unwrap().kind(), "done");
    assert_eq!(t.close_code, Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_ends_an_utterance_mid_stream() {
    let server = TestServer::start(test_config()).await;
    let wav = speech_dir().join("short/jfk_inaugural_1961.wav");
    let speech = load_speech(&wav);
    let mut ws = connect(&server.ws_url("")).await;
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    // The first 4 s, a flush, then the rest: two utterances, the first ending at ~4 s.
    let split = 4 * 16_000;
    ws.send(Message::Binary(s16le(&speech[..split]).into()))
        .await
        .unwrap();
    ws.send(Message::Text(r#"{"type":"flush"}"#.into()))
        .await
        .unwrap();
    ws.send(Message::Binary(s16le(&speech[split..]).into()))
        .await
        .unwrap();
    ws.send(Message::Text(r#"{"type":"eof"}"#.into()))
        .await
        .unwrap();
    let mut t = Transcript::default();
    read_all(&mut ws, &mut t, Duration::from_secs(60)).await;
    assert_well_formed(&t);
    let finals = t.of_kind("final");
    assert!(finals.len() >= 2, "{:?}", t.messages);
    assert!(
        finals[0].json["end_ms"].as_u64().unwrap() <= 4_000,
        "{}",
        finals[0].json
    );
}
