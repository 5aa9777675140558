//! Times the local engine alone: final-pass inference of a clip, per thread count.
//!
//! ```sh
//! cargo run --release --example engine_speed -- [CLIP.wav] [THREADS...]
//! ```
//! Prints wall time and process CPU time per inference, and the real-time factor.

use std::sync::Arc;
use std::time::Instant;

use whisper_api::audio::wav;
use whisper_api::config::FinalWindow;
use whisper_api::engine::{EngineOptions, JobKind, LocalEngine, TranscribeRequest};
use whisper_api::metrics::Metrics;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let clip = args
        .next()
        .unwrap_or_else(|| "tests/fixtures/jfk.wav".into());
    let threads: Vec<usize> = args.map(|a| a.parse().unwrap()).collect();
    let threads = if threads.is_empty() {
        vec![1, 2]
    } else {
        threads
    };
    let audio = Arc::new(wav::parse(&std::fs::read(&clip).unwrap()).unwrap().samples);
    let secs = audio.len() as f64 / 16_000.0;
    let model = std::env::var("WHISPER_MODEL").unwrap_or_else(|_| "models/ggml-tiny.en.bin".into());
    for n in threads {
        let options = EngineOptions::new(1, n, 4, FinalWindow::Full);
        let engine = LocalEngine::load(model.as_ref(), options, Arc::new(Metrics::new())).unwrap();
        for kind in [JobKind::Final, JobKind::Partial] {
            for _ in 0..3 {
                let request = TranscribeRequest {
                    kind,
                    session: 0,
                    audio: audio.clone(),
                    prompt: String::new(),
                    language: "en".into(),
                    partial: None,
                    guess: None,
                };
                let (t0, c0) = (Instant::now(), cpu_seconds());
                let text = engine.handle().transcribe(request).await.unwrap().text;
                let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
                println!(
                    "threads={n} {kind:?}: wall {wall:.2}s cpu {cpu:.2}s rtf {:.3} {:?}",
                    wall / secs,
                    &text[..text.len().min(40)]
                );
            }
        }
    }
    println!(
        "load: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
