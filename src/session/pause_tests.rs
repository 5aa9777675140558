//! Partials wait while the speaker pauses, under the paused clock: the pause may end the
//! utterance, and then a partial would decode its final's audio beside the early final.

use std::time::Duration;

use axum::extract::ws::Message;

use super::tests::{collect, jfk, scripted, start_with, stream_audio};
use crate::config::Config;
use crate::engine::JobKind;
use crate::protocol::ServerMessage;

const RATE: usize = 16_000;

#[tokio::test(start_paused = true)]
async fn no_partial_is_asked_for_while_the_speaker_pauses() {
    // 1.5 s into a word run ("And so my fellow Americans"), a 450 ms pause (shorter than the
    // 500 ms that ends an utterance), then the rest of the clip; partials fall due every
    // 100 ms.
    let speech = jfk();
    let pause_at = RATE * 3 / 2;
    let pause = RATE * 450 / 1000;
    let mut audio = speech[..pause_at].to_vec();
    audio.extend(std::iter::repeat_n(0.0, pause));
    audio.extend_from_slice(&speech[pause_at..]);
    let mut config = Config::defaults();
    config.partial_interval_ms = 100;
    let engine = scripted(|_| Duration::from_millis(50));
    let mut h = start_with(engine.clone(), config);
    stream_audio(&h.to_server, &audio).await;
    let eof = Message::Text(r#"{"type":"eof"}"#.into());
    h.to_server.send(eof).await.unwrap();
    let (messages, _) = collect(&mut h.from_server).await;
    let first_start_ms = messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Final { start_ms, .. } => Some(*start_ms),
            _ => None,
        })
        .expect("a final");
    let start = first_start_ms as usize * RATE / 1000;
    assert!(
        start < pause_at,
        "the first utterance opens before the pause"
    );
    // Where each partial of the first utterance (their audio only grows) ended in the
    // stream, as it was asked for.
    let lens: Vec<usize> = engine
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(kind, _)| *kind == JobKind::Partial)
        .map(|(_, len)| *len)
        .collect();
    let first_utterance = 1 + lens.windows(2).take_while(|w| w[1] > w[0]).count();
    let ends: Vec<usize> = lens[..first_utterance]
        .iter()
        .map(|len| start + len)
        .collect();
    let in_pause = |end: &usize| (pause_at..=pause_at + pause).contains(end);
    assert!(
        !ends.iter().any(in_pause),
        "asked for in the pause: {ends:?}"
    );
    // The partial that fell due in the pause is asked for as soon as speech resumes.
    let after = ends
        .iter()
        .find(|&&e| e > pause_at + pause)
        .expect("a later partial");
    assert!(
        *after <= pause_at + pause + RATE / 10,
        "owed partial came late: {ends:?}"
    );
}
