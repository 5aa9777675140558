//! Endpointing offline: which voice detector and end-of-speech silence cut speech where the
//! speaker ends a sentence, and how fast (no server, no clock).
//!
//! ```sh
//! cargo run --release --example endpointing -- [--silence 300,400,500] [--wer] [--limit N]
//!     [--detectors webrtc:2,earshot:0.3]
//! ```
//! Each recording of the corpus (`SPEECH_DIR`, else ../shared/speech) is cut by the server's
//! own segmenter with webrtc-vad (by default aggressiveness 2 and 3) and with earshot
//! (thresholds 0.5, 0.3 and 0.2). For the long recordings, whose `.segments.json` gives the reference lines or
//! sentences with times, an utterance end is a *mid-line cut* when it falls inside a reference
//! segment, more than [`BOUNDARY_S`] from its edges. For the short clips, each a sentence or
//! two, every utterance beyond the first is a split. `--wer` also transcribes every utterance
//! as a local final (sized window, previous text as the prompt, as a session does) and scores
//! the word error rate, so a detector that drops speech shows.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/corpus.rs"]
mod corpus;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use corpus::corpus_dir;
use serde::Deserialize;
use whisper_api::config::FinalWindow;
use whisper_api::engine::{Engine, EngineOptions, JobKind, LocalEngine, TranscribeRequest};
use whisper_api::metrics::Metrics;
use whisper_api::vad::{
    EarshotVad, FrameClassifier, SegmentEvent, Segmenter, SegmenterConfig, WebRtcVad,
};

/// An end this close to a reference segment's edge counts as a cut between segments (s).
const BOUNDARY_S: f64 = 0.3;
const RATE: f64 = 16_000.0;
const PROMPT_CHARS: usize = 200;

#[derive(Deserialize)]
struct Segments {
    segments: Vec<Segment>,
}

#[derive(Deserialize)]
struct Segment {
    start: f64,
    end: f64,
}

struct Cut {
    end_s: f64,
    audio: Vec<f32>,
}

#[derive(Clone, Copy)]
enum Detector {
    WebRtc(u8),
    Earshot(f32),
}

impl Detector {
    /// `webrtc:AGGRESSIVENESS` or `earshot:THRESHOLD`.
    fn parse(s: &str) -> Self {
        match s.split_once(':') {
            Some(("webrtc", a)) => Detector::WebRtc(a.parse().expect("aggressiveness 0-3")),
            Some(("earshot", t)) => Detector::Earshot(t.parse().expect("threshold 0-1")),
            _ => panic!("detector {s:?}: webrtc:N or earshot:T"),
        }
    }

    fn name(self) -> String {
        match self {
            Detector::WebRtc(a) => format!("webrtc-vad {a}"),
            Detector::Earshot(t) => format!("earshot {t:.1}"),
        }
    }

    fn cuts(self, samples: &[f32], silence_ms: u32) -> Vec<Cut> {
        match self {
            Detector::WebRtc(a) => cut(WebRtcVad::new(a), samples, silence_ms),
            Detector::Earshot(t) => cut(EarshotVad::new(t), samples, silence_ms),
        }
    }
}

fn cut<C: FrameClassifier>(classifier: C, samples: &[f32], silence_ms: u32) -> Vec<Cut> {
    let config = SegmenterConfig {
        min_speech_ms: 90,
        preroll_ms: 300,
        silence_ms,
        max_utterance_ms: 20_000,
    };
    let mut segmenter = Segmenter::new(classifier, config);
    let mut events = Vec::new();
    for chunk in samples.chunks(320) {
        events.extend(segmenter.push(chunk));
    }
    events.extend(segmenter.flush());
    events
        .into_iter()
        .filter_map(|e| match e {
            SegmentEvent::Ended {
                end_sample, audio, ..
            } => Some(Cut {
                end_s: end_sample as f64 / RATE,
                audio,
            }),
            _ => None,
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    utterances: usize,
    mid_line_cuts: usize,
    long_utterances: usize,
    short_clips: usize,
    short_splits: usize,
    /// Seconds from a reference segment's end to the detector's end of speech, per cut at a
    /// boundary (the segmenter then waits the silence on top).
    end_delay_s: Vec<f64>,
    errors: usize,
    words: usize,
}

fn wav_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p: &PathBuf| p.extension().is_some_and(|x| x == "wav"));
    files.sort();
    files
}

fn score_long(tally: &mut Tally, cuts: &[Cut], reference: &Segments) {
    tally.long_utterances += cuts.len();
    for c in cuts {
        let inside = reference
            .segments
            .iter()
            .any(|s| c.end_s > s.start + BOUNDARY_S && c.end_s < s.end - BOUNDARY_S);
        tally.mid_line_cuts += usize::from(inside);
        if !inside {
            let nearest = reference
                .segments
                .iter()
                .map(|s| c.end_s - s.end)
                .min_by(|a, b| a.abs().total_cmp(&b.abs()));
            tally.end_delay_s.extend(nearest);
        }
    }
}

async fn transcribe(engine: &Engine, cuts: &[Cut]) -> String {
    let mut text = String::new();
    for c in cuts {
        let skip = text.chars().count().saturating_sub(PROMPT_CHARS);
        let prompt: String = text.chars().skip(skip).collect();
        let t = engine
            .transcribe(TranscribeRequest {
                kind: JobKind::Final,
                audio: Arc::new(c.audio.clone()),
                prompt,
                language: "en".into(),
                session: 0,
                partial: None,
                guess: None,
            })
            .await
            .expect("inference");
        text = format!("{text} {}", t.text);
    }
    text
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() {
    let mut silences = vec![300, 400, 500];
    let mut wer = false;
    let mut limit = usize::MAX;
    let mut detectors = vec![
        Detector::WebRtc(2),
        Detector::WebRtc(3),
        Detector::Earshot(0.5),
        Detector::Earshot(0.3),
        Detector::Earshot(0.2),
    ];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--wer" => wer = true,
            "--silence" => {
                let v = args.next().expect("--silence 300,500");
                silences = v.split(',').map(|s| s.parse().unwrap()).collect();
            }
            "--detectors" => {
                let v = args.next().expect("--detectors webrtc:2,earshot:0.3");
                detectors = v.split(',').map(Detector::parse).collect();
            }
            "--limit" => limit = args.next().expect("--limit N").parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    let engine = wer.then(|| {
        let options = EngineOptions::new(1, 2, 4, FinalWindow::Sized);
        LocalEngine::load(&model_path(), options, Arc::new(Metrics::new())).unwrap()
    });
    let corpus = corpus_dir();
    let long: Vec<_> = wav_files(&corpus.join("long"))
        .into_iter()
        .map(|p| {
            let json = std::fs::read_to_string(p.with_extension("segments.json")).unwrap();
            (
                load_speech(&p),
                reference_text(&p),
                serde_json::from_str(&json).unwrap(),
            )
        })
        .collect::<Vec<(Vec<f32>, String, Segments)>>();
    let mut short = wav_files(&corpus.join("short"));
    short.truncate(limit);
    let short: Vec<_> = short
        .iter()
        .map(|p| (load_speech(p), reference_text(p)))
        .collect();
    let reference_segments: usize = long.iter().map(|(_, _, s)| s.segments.len()).sum();
    println!(
        "{} long recordings ({reference_segments} reference segments), {} short clips{}",
        long.len(),
        short.len(),
        if wer { ", with WER" } else { "" }
    );
    println!("| detector | silence | long: utterances | mid-line cuts | end of speech after the line's end, median | short: clips split | WER |");
    println!("|---|---|---|---|---|---|---|");
    for &silence in &silences {
        for &detector in &detectors {
            let mut t = Tally::default();
            for (samples, reference, segments) in &long {
                let cuts = detector.cuts(samples, silence);
                score_long(&mut t, &cuts, segments);
                if let Some(engine) = &engine {
                    let text = transcribe(&engine.handle(), &cuts).await;
                    let (e, w) = word_errors(&text, reference);
                    (t.errors, t.words) = (t.errors + e, t.words + w);
                }
            }
            for (samples, reference) in &short {
                let cuts = detector.cuts(samples, silence);
                t.short_clips += 1;
                t.short_splits += usize::from(cuts.len() > 1);
                t.utterances += cuts.len();
                if let Some(engine) = &engine {
                    let text = transcribe(&engine.handle(), &cuts).await;
                    let (e, w) = word_errors(&text, reference);
                    (t.errors, t.words) = (t.errors + e, t.words + w);
                }
            }
            let wer = if wer {
                format!("{:.2} %", 100.0 * t.errors as f64 / t.words.max(1) as f64)
            } else {
                "-".into()
            };
            println!(
                "| {} | {silence} ms | {} | {} | {:.2} s | {} of {} | {wer} |",
                detector.name(),
                t.long_utterances,
                t.mid_line_cuts,
                median(&mut t.end_delay_s),
                t.short_splits,
                t.short_clips,
            );
        }
    }
    println!(
        "load: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
