//! A panic inside inference costs one job, not the pool: the real model, the real panic
//! (whisper-rs panics on a NUL in a prompt, which an upstream once smuggled in), caught by the
//! worker, which rebuilds its whisper state and goes on. Jobs beside it are untouched.

mod common;

use std::sync::Arc;

use common::*;
use whisper_api::config::FinalWindow;
use whisper_api::engine::EngineOptions;
use whisper_api::engine::{EngineError, JobKind, LocalEngine, TranscribeRequest};
use whisper_api::metrics::Metrics;

const WORKERS: usize = 2;

fn request(audio: &Arc<Vec<f32>>, prompt: &str) -> TranscribeRequest {
    TranscribeRequest {
        kind: JobKind::Final,
        session: 0,
        audio: audio.clone(),
        prompt: prompt.into(),
        language: "en".into(),
        partial: None,
        guess: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_fails_alone_and_every_worker_survives() {
    let engine = tokio::task::spawn_blocking(|| {
        let options = EngineOptions::new(WORKERS, 1, 8, FinalWindow::Full);
        LocalEngine::load(&model_path(), options, Arc::new(Metrics::new())).unwrap()
    })
    .await
    .unwrap();
    let handle = engine.handle();
    let wav = speech_dir().join("short/jfk_inaugural_1961.wav");
    let audio = Arc::new(load_speech(&wav));

    // A poisoned job beside a healthy one.
    let (poisoned, healthy) = tokio::join!(
        handle.transcribe(request(&audio, "ask not\0 what")),
        handle.transcribe(request(&audio, "")),
    );
    assert!(
        matches!(poisoned, Err(EngineError::Inference(_))),
        "{poisoned:?}"
    );
    let text = healthy.expect("the job beside it").text;
    assert!(wer(&text, &reference_text(&wav)) <= 0.2, "{text:?}");

    // Every worker panics at least once (more poisoned jobs than workers, at once)…
    let poisoned: Vec<_> = (0..WORKERS * 2)
        .map(|_| handle.transcribe(request(&audio, "\0")))
        .collect();
    for result in futures_util::future::join_all(poisoned).await {
        assert!(
            matches!(result, Err(EngineError::Inference(_))),
            "{result:?}"
        );
    }
    // …and the pool still transcribes, with all its workers.
    assert_eq!(engine.live_workers(), WORKERS);
    let after = handle.transcribe(request(&audio, "And so,")).await.unwrap();
    assert!(
        wer(&after.text, &reference_text(&wav)) <= 0.2,
        "{:?}",
        after.text
    );
}
