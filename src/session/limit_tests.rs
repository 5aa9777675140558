//! The session's limits under the paused clock: backpressure on outstanding finals, `start`
//! only once, the no-speech and session-length limits, a stall past the idle timeout, and
//! audio sent during a shutdown drain. Harness in `tests.rs`.

use std::time::Duration;

use axum::extract::ws::Message;
use tokio::sync::mpsc;

use super::tests::{
    check_order, collect, jfk, scripted, start_with, stream_audio, FRAME_MS, FRAME_SAMPLES,
};
use super::Outcome;
use crate::config::Config;
use crate::engine::JobKind;
use crate::metrics::Metrics;
use crate::protocol::{close, ServerMessage};

fn s16(frame: &[f32]) -> Message {
    let bytes: Vec<u8> = frame
        .iter()
        .flat_map(|s| ((s * 32767.0) as i16).to_le_bytes())
        .collect();
    Message::Binary(bytes.into())
}

fn last_error(messages: &[ServerMessage]) -> Option<&str> {
    match messages.last() {
        Some(ServerMessage::Error { code, .. }) => Some(code),
        _ => None,
    }
}

/// `whisper_refusals_total{reason}`.
fn refusals(metrics: &Metrics, reason: &str) -> u64 {
    let prefix = format!("whisper_refusals_total{{reason=\"{reason}\"}} ");
    let text = metrics.render();
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .expect("series");
    line[prefix.len()..].parse().unwrap()
}

/// Sends frames paced like a microphone until the session stops reading them for good.
async fn stream_until_closed(to_server: mpsc::Sender<Message>, samples: Vec<f32>) {
    for frame in samples.chunks(FRAME_SAMPLES) {
        if to_server.send(s16(frame)).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(FRAME_MS)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn outstanding_finals_stop_the_reader_until_one_is_sent() {
    let mut config = Config::defaults();
    config.max_pending_finals = 2;
    let engine = scripted(|_| Duration::from_secs(3));
    let mut h = start_with(engine.clone(), config);
    // A client blasting speech at full speed with a flush every half second of audio: each
    // flush ends an utterance, so without backpressure it would queue a final per flush.
    let to_server = h.to_server.clone();
    let sender = tokio::spawn(async move {
        for (i, frame) in jfk().chunks(FRAME_SAMPLES).enumerate() {
            to_server.send(s16(frame)).await.unwrap();
            if i % 25 == 24 {
                let flush = Message::Text(r#"{"type":"flush"}"#.into());
                to_server.send(flush).await.unwrap();
            }
        }
        let eof = Message::Text(r#"{"type":"eof"}"#.into());
        to_server.send(eof).await.unwrap();
    });
    let finals_asked = |engine: &super::tests::Scripted| engine.asked(JobKind::Final).len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !sender.is_finished(),
        "the sender is held back by the unread socket"
    );
    assert_eq!(finals_asked(&engine), 2, "no third final while two are out");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        finals_asked(&engine),
        4,
        "two more once the first two went out"
    );
    let (messages, code) = collect(&mut h.from_server).await;
    sender.await.unwrap();
    let finals = check_order(&messages);
    assert!(finals.len() >= 8, "every flushed utterance got its final");
    assert_eq!(finals, (0..finals.len() as u64).collect::<Vec<_>>());
    assert_eq!(messages.last(), Some(&ServerMessage::Done));
    assert_eq!(code, Some(close::NORMAL));
    assert_eq!(h.session.await.unwrap(), Outcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_second_start_is_refused() {
    let mut h = start_with(scripted(|_| Duration::ZERO), Config::defaults());
    for _ in 0..2 {
        let start = Message::Text(r#"{"type":"start","sample_rate":16000}"#.into());
        h.to_server.send(start).await.unwrap();
    }
    let (messages, code) = collect(&mut h.from_server).await;
    let readies = messages
        .iter()
        .filter(|m| matches!(m, ServerMessage::Ready { .. }))
        .count();
    assert_eq!(readies, 2, "the first start is answered with a new ready");
    assert_eq!(last_error(&messages), Some("start_repeated"));
    assert_eq!(code, Some(close::POLICY_VIOLATION));
    assert_eq!(
        h.session.await.unwrap(),
        Outcome::ClientError("start_repeated")
    );
}

#[tokio::test(start_paused = true)]
async fn silence_alone_ends_the_session_after_the_no_speech_timeout() {
    let mut config = Config::defaults();
    config.no_speech_timeout_ms = 5_000;
    let mut h = start_with(scripted(|_| Duration::ZERO), config);
    let began = tokio::time::Instant::now();
    // Silence keeps arriving (so the idle timer never runs out), for longer than the limit.
    let sender = tokio::spawn(stream_until_closed(
        h.to_server.clone(),
        vec![0.0; 16_000 * 20],
    ));
    let (messages, code) = collect(&mut h.from_server).await;
    let waited = began.elapsed();
    assert!(check_order(&messages).is_empty());
    assert_eq!(last_error(&messages), Some("no_speech"));
    assert_eq!(code, Some(close::POLICY_VIOLATION));
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "ended after {waited:?}"
    );
    assert_eq!(h.session.await.unwrap(), Outcome::Limited("no_speech"));
    assert_eq!(refusals(&h.metrics, "no_speech"), 1);
    drop(h.to_server);
    sender.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn speech_resets_the_no_speech_timer() {
    let mut config = Config::defaults();
    config.no_speech_timeout_ms = 4_000;
    let mut h = start_with(scripted(|_| Duration::from_millis(100)), config);
    // jfk.wav is 11 s of speech with short pauses: longer than the limit, never silent for it.
    stream_audio(&h.to_server, &jfk()).await;
    let eof = Message::Text(r#"{"type":"eof"}"#.into());
    h.to_server.send(eof).await.unwrap();
    let (messages, code) = collect(&mut h.from_server).await;
    assert!(check_order(&messages).len() >= 2);
    assert_eq!(code, Some(close::NORMAL));
}

#[tokio::test(start_paused = true)]
async fn the_session_limit_finishes_the_open_utterance_then_closes() {
    let mut config = Config::defaults();
    config.max_session_ms = 4_000;
    let mut h = start_with(scripted(|_| Duration::from_millis(300)), config);
    let sender = tokio::spawn(stream_until_closed(h.to_server.clone(), jfk()));
    let (messages, code) = collect(&mut h.from_server).await;
    let finals = check_order(&messages);
    assert!(!finals.is_empty(), "the cut utterance still gets its final");
    assert_eq!(last_error(&messages), Some("session_too_long"));
    assert_eq!(code, Some(close::POLICY_VIOLATION));
    assert_eq!(
        h.session.await.unwrap(),
        Outcome::Limited("session_too_long")
    );
    assert_eq!(refusals(&h.metrics, "session_too_long"), 1);
    drop(h.to_server);
    sender.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn audio_after_a_stall_longer_than_the_idle_timeout_resumes_the_session() {
    let mut h = start_with(scripted(|_| Duration::from_secs(1)), Config::defaults());
    let audio = jfk();
    stream_audio(&h.to_server, &audio[..16_000 * 3]).await;
    // The network stalls mid-sentence for longer than IDLE_TIMEOUT_MS (2 s): the idle timer
    // finishes the utterance, whose final is still being made when the audio comes back.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    stream_audio(&h.to_server, &audio[16_000 * 3..]).await;
    let eof = Message::Text(r#"{"type":"eof"}"#.into());
    h.to_server.send(eof).await.unwrap();
    let (messages, code) = collect(&mut h.from_server).await;
    assert_eq!(last_error(&messages), None, "{messages:?}");
    let finals = check_order(&messages);
    assert!(finals.len() >= 2, "audio after the stall was transcribed");
    assert_eq!(finals, (0..finals.len() as u64).collect::<Vec<_>>());
    assert_eq!(messages.last(), Some(&ServerMessage::Done));
    assert_eq!(code, Some(close::NORMAL));
}

#[tokio::test(start_paused = true)]
async fn audio_sent_during_a_shutdown_drain_is_transcribed() {
    // The cut utterance's final takes long enough for the speech that follows to open the next.
    let mut h = start_with(
        scripted(|_| Duration::from_millis(1_500)),
        Config::defaults(),
    );
    let audio = jfk();
    stream_audio(&h.to_server, &audio[..16_000 * 3]).await;
    h.shutdown.cancel();
    // The client keeps talking for 3 s into the drain (the grace period is 10 s).
    stream_audio(&h.to_server, &audio[16_000 * 3..16_000 * 6]).await;
    let (messages, code) = collect(&mut h.from_server).await;
    let late = messages
        .iter()
        .any(|m| matches!(m, ServerMessage::Final { start_ms, .. } if *start_ms >= 3_000));
    assert!(
        late,
        "a final covers audio sent after the shutdown signal: {messages:?}"
    );
    assert_eq!(code, Some(close::SERVICE_RESTART));
    assert_eq!(h.session.await.unwrap(), Outcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_local_final_past_its_deadline_is_an_error_and_the_next_utterance_goes_on() {
    let mut config = Config::defaults();
    config.local_timeout_ms = 3_000;
    // jfk.wav's first utterance (over 5 s) hangs the engine; the second is answered at once.
    let mut h = start_with(
        scripted(|secs| Duration::from_millis(if secs > 5.0 { 3_600_000 } else { 100 })),
        config,
    );
    stream_audio(&h.to_server, &jfk()).await;
    let eof = Message::Text(r#"{"type":"eof"}"#.into());
    h.to_server.send(eof).await.unwrap();
    let (messages, code) = collect(&mut h.from_server).await;
    let errors: Vec<_> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match m {
            ServerMessage::Error {
                code, utterance, ..
            } => Some((i, code.as_str(), *utterance)),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{messages:?}");
    let (at, code_sent, utterance) = errors[0];
    assert_eq!((code_sent, utterance), ("local_timeout", Some(0)));
    // The timed-out utterance takes its place in the order: the next final follows it.
    let finals = check_order(&messages);
    assert!(!finals.is_empty(), "the next utterance got its final");
    assert!(!finals.contains(&0), "no final for the timed-out utterance");
    let first_final = messages
        .iter()
        .position(|m| matches!(m, ServerMessage::Final { .. }))
        .unwrap();
    assert!(at < first_final, "{messages:?}");
    assert_eq!(messages.last(), Some(&ServerMessage::Done));
    assert_eq!(code, Some(close::NORMAL));
    assert_eq!(h.session.await.unwrap(), Outcome::Completed);
}
