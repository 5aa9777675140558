//! When partials are asked for, under the paused clock. They wait while the speaker pauses:
//! the pause may end the utterance, and then a partial would decode its final's audio beside
//! the early final. An utterance's first does not wait for the tick.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;

use super::tests::{collect, jfk, scripted, start_with, stream_audio, Scripted};
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
    let lens = engine.asked(JobKind::Partial);
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

#[tokio::test(start_paused = true)]
async fn an_utterances_first_partial_is_asked_for_without_waiting_for_the_tick() {
    // Ticks 5 s apart: on the tick alone, jfk.wav's first utterance would get its first
    // partial with seconds of audio, its second one (it opens after 8 s) with over a second.
    let mut config = Config::defaults();
    config.partial_interval_ms = 5_000;
    let engine = scripted(|_| Duration::from_millis(50));
    let mut h = start_with(engine.clone(), config);
    stream_audio(&h.to_server, &jfk()).await;
    let eof = Message::Text(r#"{"type":"eof"}"#.into());
    h.to_server.send(eof).await.unwrap();
    collect(&mut h.from_server).await;
    let lens = engine.asked(JobKind::Partial);
    // A partial shorter than the one before belongs to the next utterance.
    let firsts: Vec<usize> = lens
        .iter()
        .enumerate()
        .filter(|&(i, len)| i == 0 || *len < lens[i - 1])
        .map(|(_, len)| *len)
        .collect();
    assert!(firsts.len() >= 2, "jfk.wav has two utterances: {lens:?}");
    // 400 ms of audio are enough for a partial; one 20 ms frame more is allowed.
    let enough = RATE * 420 / 1000;
    assert!(
        firsts.iter().all(|&len| len <= enough),
        "first partials waited for audio beyond the 400 ms they need: {lens:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_first_partial_that_said_nothing_is_asked_again_as_soon_as_audio_grows() {
    // Under 0.8 s of audio the engine hears no words yet; ticks 5 s apart.
    let mut config = Config::defaults();
    config.partial_interval_ms = 5_000;
    let engine = Arc::new(Scripted {
        partial_text: |secs| {
            if secs < 0.8 {
                String::new()
            } else {
                format!("Partial of {secs:.2} s")
            }
        },
        ..Arc::into_inner(scripted(|_| Duration::from_millis(50))).unwrap()
    });
    let mut h = start_with(engine.clone(), config);
    stream_audio(&h.to_server, &jfk()[..RATE * 3]).await;
    let eof = Message::Text(r#"{"type":"eof"}"#.into());
    h.to_server.send(eof).await.unwrap();
    let (messages, _) = collect(&mut h.from_server).await;
    let lens = engine.asked(JobKind::Partial);
    // Asked again once 250 ms more audio arrived (more where the speaker paused), not at the
    // tick 5 s later.
    let step = RATE;
    let shown = lens
        .iter()
        .position(|&len| len >= RATE * 8 / 10)
        .expect("a partial of 0.8 s or more");
    assert!(shown >= 1, "the first partial said nothing: {lens:?}");
    assert!(
        lens[..=shown].windows(2).all(|w| w[1] - w[0] <= step),
        "asked again only on the tick: {lens:?}"
    );
    assert!(messages
        .iter()
        .any(|m| matches!(m, ServerMessage::Partial { .. })));
}
