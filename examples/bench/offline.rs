//! The accuracy reference: whisper.cpp (the local engine's final mode, full 30 s window) on each
//! whole clip, one clip at a time on an otherwise idle engine, as an offline transcriber would.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use whisper_api::config::FinalWindow;
use whisper_api::engine::{EngineOptions, JobKind, LocalEngine, TranscribeRequest};
use whisper_api::metrics::Metrics;

use crate::clips::Clip;
use crate::common::repetition::has_repetition_loop;
use crate::common::word_errors;
use crate::report::Offline;
use crate::score::Spread;

/// Queue room for the one job in flight.
const QUEUE: usize = 4;

pub async fn run(clips: &[Clip], model: PathBuf, threads: usize, language: &str) -> Offline {
    let engine = tokio::task::spawn_blocking(move || {
        // whisper.cpp's default full 30 s window: the reference the server's finals must match.
        let options = EngineOptions::new(1, threads, QUEUE, FinalWindow::Full);
        LocalEngine::load(&model, options, Arc::new(Metrics::new()))
    })
    .await
    .expect("load task")
    .expect("model loads");
    let mut out = Offline::default();
    let mut times = Vec::new();
    for clip in clips {
        let request = TranscribeRequest {
            kind: JobKind::Final,
            session: 0,
            audio: Arc::new(clip.samples.clone()),
            prompt: String::new(),
            language: language.into(),
            partial: None,
            guess: None,
        };
        let t0 = Instant::now();
        let text = match engine.handle().transcribe(request).await {
            Ok(t) => t.text,
            Err(e) => format!("<error: {e}>"),
        };
        let secs = t0.elapsed().as_secs_f64();
        times.push(secs);
        let (edits, words) = word_errors(&text, &clip.reference);
        let looped = has_repetition_loop(&text);
        out.word_errors += edits;
        out.reference_words += words;
        out.finals_with_loop += usize::from(looped);
        println!(
            "offline {:5.1} % {:.2} s {}",
            100.0 * edits as f64 / words.max(1) as f64,
            secs,
            clip.name
        );
        out.per_clip.push(serde_json::json!({
            "clip": clip.name, "word_errors": edits, "words": words, "inference_s": secs,
            "loop": looped, "text": text,
        }));
    }
    // Dropping the engine joins its worker thread: not on a runtime thread.
    tokio::task::spawn_blocking(move || drop(engine))
        .await
        .expect("engine stops");
    out.wer =
        (out.reference_words > 0).then(|| out.word_errors as f64 / out.reference_words as f64);
    out.inference_s = Spread::of(&times);
    out
}
