//! `LEND_IDLE_CORES` with the real model: a final that starts on an idle pool runs on every
//! core (counted in /metrics) and a partial never does; finals started together all complete
//! (a worker whose core is lent waits for it, it does not deadlock), and with lending off no
//! final borrows.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use whisper_api::config::FinalWindow;
use whisper_api::engine::{EngineOptions, JobKind, LocalEngine, TranscribeRequest};
use whisper_api::metrics::Metrics;

const WORKERS: usize = 2;
const LENT: &str = "whisper_finals_on_lent_cores_total";
/// Several seconds of compute at most, even on a loaded machine; a deadlock never ends.
const FINALS_DEADLINE: Duration = Duration::from_secs(120);

async fn pool(lend: bool) -> (LocalEngine, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let engine = tokio::task::spawn_blocking({
        let metrics = metrics.clone();
        move || {
            let mut options = EngineOptions::new(WORKERS, 1, 8, FinalWindow::Sized);
            options.lend_idle_cores = lend;
            LocalEngine::load(&model_path(), options, metrics).unwrap()
        }
    })
    .await
    .unwrap();
    (engine, metrics)
}

fn final_of(audio: &Arc<Vec<f32>>, session: u64) -> TranscribeRequest {
    request(JobKind::Final, audio, session)
}

fn request(kind: JobKind, audio: &Arc<Vec<f32>>, session: u64) -> TranscribeRequest {
    TranscribeRequest {
        kind,
        session,
        audio: audio.clone(),
        prompt: String::new(),
        language: "en".into(),
        partial: None,
        guess: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pool_lends_its_cores_to_a_final_and_a_busy_one_still_finishes() {
    let (engine, metrics) = pool(true).await;
    let handle = engine.handle();
    let wav = speech_dir().join("short/jfk_inaugural_1961.wav");
    let audio = Arc::new(load_speech(&wav));
    let reference = reference_text(&wav);

    let alone = handle.transcribe(final_of(&audio, 1)).await.unwrap();
    assert!(wer(&alone.text, &reference) <= 0.2, "{:?}", alone.text);
    assert_eq!(alone.threads, WORKERS);
    let partial = handle.transcribe(request(JobKind::Partial, &audio, 1));
    assert_eq!(
        partial.await.unwrap().threads,
        1,
        "a partial keeps to its own core: lent, its 2 threads spin through every decoder step"
    );
    assert_eq!(
        sample(&metrics.render(), LENT),
        1.0,
        "nothing else ran: it borrowed"
    );

    let together: Vec<_> = (0..WORKERS as u64 * 2)
        .map(|s| handle.transcribe(final_of(&audio, 10 + s)))
        .collect();
    let results = tokio::time::timeout(FINALS_DEADLINE, futures_util::future::join_all(together))
        .await
        .expect("finals started together all complete");
    for result in results {
        let text = result.unwrap().text;
        assert!(wer(&text, &reference) <= 0.2, "{text:?}");
    }
    let lent = sample(&metrics.render(), LENT);
    assert!(
        lent < 1.0 + (WORKERS * 2) as f64,
        "with finals waiting, not every final borrows ({lent})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lending_off_no_final_borrows() {
    let (engine, metrics) = pool(false).await;
    let wav = speech_dir().join("short/jfk_inaugural_1961.wav");
    let audio = Arc::new(load_speech(&wav));
    let alone = engine
        .handle()
        .transcribe(final_of(&audio, 1))
        .await
        .unwrap();
    assert!(
        wer(&alone.text, &reference_text(&wav)) <= 0.2,
        "{:?}",
        alone.text
    );
    assert_eq!(alone.threads, 1);
    assert_eq!(sample(&metrics.render(), LENT), 0.0);
}
