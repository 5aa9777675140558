//! Offline accuracy and speed of one model file: each whole clip of a shared/speech set
//! through the local engine, with its word error rate and the time it took.
//!
//! ```sh
//! cargo run --release --example offline_wer -- [--model models/ggml-tiny.en.bin] [--full | --sized]
//!     [--set short] [--threads 2] [--language en] [--limit N]
//! ```
//! `--full` (default) decodes as a local final does: the full 30 s encoder window. `--sized`
//! decodes as a partial does: encoder sized to the clip, one segment, capped tokens.
//! Prints one line per clip (WER, wall and CPU seconds, text), then the totals and the
//! machine's load average before and after: timings on a shared machine are only as good as
//! that load.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use whisper_api::engine::{JobKind, LocalEngine, TranscribeRequest};
use whisper_api::metrics::Metrics;

/// 16 kHz pipeline audio.
const SAMPLE_RATE: f64 = 16_000.0;
/// Kernel clock ticks per second for /proc/self/stat (USER_HZ on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

struct Args {
    model: PathBuf,
    kind: JobKind,
    set: String,
    threads: usize,
    language: String,
    limit: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        model: std::env::var_os("WHISPER_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("models/ggml-tiny.en.bin")),
        kind: JobKind::Final,
        set: "short".into(),
        threads: 2,
        language: "en".into(),
        limit: usize::MAX,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--full" => args.kind = JobKind::Final,
            "--sized" => args.kind = JobKind::Partial,
            "--model" => args.model = value().into(),
            "--set" => args.set = value(),
            "--threads" => args.threads = value().parse().expect("--threads N"),
            "--language" => args.language = value(),
            "--limit" => args.limit = value().parse().expect("--limit N"),
            other => panic!("unknown flag {other} (see the header of examples/offline_wer.rs)"),
        }
    }
    args
}

/// User plus system CPU time of this process.
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
    ticks / TICKS_PER_SECOND
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args();
    let mode = if args.kind == JobKind::Final {
        "full"
    } else {
        "sized"
    };
    // Finals over the full window (the offline reference); see examples/final_window.rs for
    // the sized final window the server uses.
    let options = whisper_api::engine::EngineOptions::new(
        1,
        args.threads,
        4,
        whisper_api::config::FinalWindow::Full,
    );
    let engine = LocalEngine::load(&args.model, options, Arc::new(Metrics::new()))
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = speech_dir().join(&args.set);
    let mut clips: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    clips.sort();
    clips.truncate(args.limit);
    let load_before = load_average();
    println!(
        "model {} ({}), mode {mode}, {} thread(s), language {}, {} clips from {}; load {load_before}",
        args.model.display(),
        engine.info().kind,
        args.threads,
        args.language,
        clips.len(),
        dir.display()
    );

    let (mut edits, mut words, mut audio_secs) = (0, 0, 0.0);
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for clip in &clips {
        let audio = Arc::new(load_speech(clip));
        let secs = audio.len() as f64 / SAMPLE_RATE;
        let request = TranscribeRequest {
            kind: args.kind,
            session: 0,
            audio,
            prompt: String::new(),
            language: args.language.clone(),
            partial: None,
            guess: None,
        };
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let text = engine.handle().transcribe(request).await.unwrap().text;
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let (e, w) = word_errors(&text, &reference_text(clip));
        edits += e;
        words += w;
        audio_secs += secs;
        walls.push(wall);
        cpus.push(cpu);
        println!(
            "{:5.1}% {secs:5.1}s audio {wall:5.2}s wall {cpu:5.2}s cpu  {}  {:?}",
            100.0 * e as f64 / w.max(1) as f64,
            clip.file_name().unwrap().to_string_lossy(),
            text.trim()
        );
    }
    println!("---");
    println!(
        "WER {:.2}% ({edits} errors / {words} words) | per clip: median wall {:.2}s, median cpu {:.2}s | total wall {:.1}s for {audio_secs:.0}s of audio | load {load_before} -> {}",
        100.0 * edits as f64 / words.max(1) as f64,
        median(walls),
        median(cpus),
        started.elapsed().as_secs_f64(),
        load_average()
    );
}
