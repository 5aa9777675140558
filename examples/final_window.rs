//! Accuracy and cost of local finals per encoder window, offline (no server, no clock).
//!
//! ```sh
//! cargo run --release --example final_window -- [--set short|long] [--limit N] [--silence-ms 500]
//!     [--modes full,sized,trim] [--temperature-fallback true|false] [--flash-attn true|false]
//!     [--each true]
//! ```
//! Each clip of the corpus (`SPEECH_DIR`, else ../shared/speech) is cut into utterances by
//! the server's own VAD and segmenter; every utterance is transcribed as a final with the full
//! 30 s window, with the sized window whose loops are cut off (the server's mode) and with the
//! sized window whose loops are decoded again over the full window, each with the previous
//! finals as the prompt, as a session does. For short clips the whole clip with the full
//! window is scored too (the offline whisper.cpp reference). Prints word error rate, inference
//! time (mean, p95) and how many sized finals looped, per mode.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/corpus.rs"]
mod corpus;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use whisper_api::config::FinalWindow;
use whisper_api::engine::{Engine, EngineOptions, JobKind, LocalEngine, OnLoop, TranscribeRequest};
use whisper_api::metrics::Metrics;
use whisper_api::vad::{SegmentEvent, Segmenter, SegmenterConfig, WebRtcVad};

const PROMPT_CHARS: usize = 200;

#[derive(Default)]
struct Score {
    errors: usize,
    words: usize,
    inference: Duration,
    jobs: usize,
    loops: usize,
    /// Each job's inference time, for the tail.
    times: Vec<Duration>,
    /// Print every final (`--each true`): audio length, inference time, text.
    each: bool,
}

impl Score {
    fn add(&mut self, hypothesis: &str, reference: &str) {
        let (e, w) = word_errors(hypothesis, reference);
        self.errors += e;
        self.words += w;
    }
    fn print(&self, name: &str) {
        let mut times = self.times.clone();
        times.sort();
        let p95 = times
            .get((times.len() * 95 / 100).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default();
        println!(
            "{name:<22} WER {:>6.2} % ({} / {} words)  inference {:>7.1} s over {} jobs (mean {:.2} s, p95 {:.2} s)  looped {}",
            100.0 * self.errors as f64 / self.words.max(1) as f64,
            self.errors,
            self.words,
            self.inference.as_secs_f64(),
            self.jobs,
            self.inference.as_secs_f64() / self.jobs.max(1) as f64,
            p95.as_secs_f64(),
            self.loops
        );
    }
}

fn utterances(samples: &[f32], silence_ms: u32) -> Vec<Vec<f32>> {
    let config = SegmenterConfig {
        min_speech_ms: 90,
        preroll_ms: 300,
        silence_ms,
        max_utterance_ms: 20_000,
    };
    let mut segmenter = Segmenter::new(WebRtcVad::new(2), config);
    let mut events = Vec::new();
    for chunk in samples.chunks(320) {
        events.extend(segmenter.push(chunk));
    }
    events.extend(segmenter.flush());
    events
        .into_iter()
        .filter_map(|e| match e {
            SegmentEvent::Ended { audio, .. } => Some(audio),
            _ => None,
        })
        .collect()
}

async fn final_text(engine: &Engine, audio: Vec<f32>, prompt: String, score: &mut Score) -> String {
    let t = engine
        .transcribe(TranscribeRequest {
            kind: JobKind::Final,
            session: 0,
            audio: Arc::new(audio),
            prompt,
            language: "en".into(),
            partial: None,
            guess: None,
        })
        .await
        .expect("inference");
    score.inference += t.inference;
    score.jobs += 1;
    score.times.push(t.inference);
    score.loops += t.looped as usize;
    if score.each {
        let secs = t.audio_samples as f64 / 16_000.0;
        let ms = t.inference.as_millis();
        println!(
            "  {secs:5.2} s audio {ms:5} ms{} {:?}",
            if t.looped { " looped" } else { "" },
            t.text
        );
    }
    t.text
}

fn tail(text: &str) -> String {
    let skip = text.chars().count().saturating_sub(PROMPT_CHARS);
    text.chars().skip(skip).collect()
}

#[tokio::main]
async fn main() {
    let mut set = "short".to_string();
    let mut limit = usize::MAX;
    let mut silence_ms = 500;
    let mut margin = 64;
    let mut fallback = whisper_api::engine::TEMPERATURE_FALLBACK;
    let mut flash_attn = whisper_api::engine::FLASH_ATTENTION;
    let mut modes = "full,sized,trim".to_string();
    let mut each = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().expect("flag value");
        match flag.as_str() {
            "--set" => set = value,
            "--limit" => limit = value.parse().unwrap(),
            "--silence-ms" => silence_ms = value.parse().unwrap(),
            "--margin" => margin = value.parse().unwrap(),
            "--temperature-fallback" => fallback = value.parse().unwrap(),
            "--modes" => modes = value,
            "--flash-attn" => flash_attn = value.parse().unwrap(),
            "--each" => each = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    let load = |final_window, on_loop| {
        let mut options = EngineOptions::new(1, 1, 4, final_window);
        options.on_loop = on_loop;
        options.ctx_margin = margin;
        options.temperature_fallback = fallback;
        options.flash_attn = flash_attn;
        LocalEngine::load(&model_path(), options, Arc::new(Metrics::new())).unwrap()
    };
    // (--modes key, name, window, what a loop gets); "trim" is the server's own mode.
    let all = [
        ("full", "full", FinalWindow::Full, OnLoop::FullWindow),
        (
            "sized",
            "sized+full",
            FinalWindow::Sized,
            OnLoop::FullWindow,
        ),
        ("trim", "sized+trim", FinalWindow::Sized, OnLoop::Trim),
    ];
    let wanted: Vec<&str> = modes.split(',').collect();
    let engines: Vec<_> = all
        .iter()
        .filter(|(key, ..)| wanted.contains(key))
        .map(|&(_, name, window, on_loop)| (name, load(window, on_loop)))
        .collect();
    assert!(!engines.is_empty(), "--modes: full, sized, trim");
    let dir = corpus::corpus_dir().join(&set);
    let mut clips: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    clips.sort();
    clips.truncate(limit);
    let mut whole = Score::default();
    let mut scores: Vec<Score> = engines
        .iter()
        .map(|_| Score {
            each,
            ..Score::default()
        })
        .collect();
    let started = Instant::now();
    for clip in &clips {
        let samples = load_speech(clip);
        if each {
            println!("{}", clip.display());
        }
        let reference = reference_text(clip);
        if set == "short" && engines[0].0 == "full" {
            let full = engines[0].1.handle();
            let text = final_text(&full, samples.clone(), String::new(), &mut whole).await;
            whole.add(&text, &reference);
        }
        let mut texts = vec![String::new(); engines.len()];
        for audio in utterances(&samples, silence_ms) {
            for (k, (_, engine)) in engines.iter().enumerate() {
                let prompt = tail(&texts[k]);
                let t = final_text(&engine.handle(), audio.clone(), prompt, &mut scores[k]).await;
                texts[k] = format!("{} {t}", texts[k]);
            }
        }
        let mut errors = Vec::new();
        for (score, text) in scores.iter_mut().zip(&texts) {
            score.add(text, &reference);
            errors.push(word_errors(text, &reference).0);
        }
        if errors.iter().any(|e| *e != errors[0]) {
            println!(
                "{}: errors per mode {errors:?}",
                clip.file_name().unwrap().to_string_lossy()
            );
        }
    }
    println!(
        "{} clips of {set}, VAD silence {silence_ms} ms, temperature fallback {fallback}, {:.0} s",
        clips.len(),
        started.elapsed().as_secs_f64()
    );
    if whole.jobs > 0 {
        whole.print("whole clip, full");
    }
    for ((name, _), score) in engines.iter().zip(&scores) {
        score.print(&format!("utterances, {name}"));
    }
    println!(
        "load: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
