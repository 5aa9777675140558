//! The clips a run plays: chosen from shared/speech, converted once to the microphone's rate,
//! with their reference text and the reference times at which speech starts and ends.

use std::path::{Path, PathBuf};

use crate::common::{at_rate, load_speech, reference_text, s16le};
use crate::corpus::corpus_dir;

/// The long recording that joins the short clips in the default set: a natural continuous
/// reading (51.8 s), so sentence-level endpointing is exercised too.
pub const SONNET: &str = "long/librivox_shakespeare_sonnet001.wav";

/// One clip, ready to stream.
pub struct Clip {
    /// Path under shared/speech, e.g. `short/jfk_inaugural_1961.wav`.
    pub name: String,
    /// The original 16 kHz samples (the offline reference transcribes these).
    pub samples: Vec<f32>,
    /// s16le PCM at the stream rate.
    pub pcm: Vec<u8>,
    pub secs: f64,
    pub reference: String,
    /// Reference speech spans in seconds: each sentence of a long recording (its
    /// `.segments.json`), or, for a short clip, only where it ends (the clip's end).
    pub speech_starts: Vec<f64>,
    pub speech_ends: Vec<f64>,
}

/// Which clips: `short` (evenly spread over the 59 short clips, so every corpus is in),
/// `long` (the two long recordings), or `mixed` (short clips plus the sonnet).
pub fn select(set: &str, limit: usize) -> Result<Vec<PathBuf>, String> {
    let dir = corpus_dir();
    let list = |sub: &str| -> Vec<PathBuf> {
        let mut wavs: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        wavs.retain(|p| p.extension().is_some_and(|e| e == "wav"));
        wavs.sort();
        wavs
    };
    let spread = |all: Vec<PathBuf>, n: usize| -> Vec<PathBuf> {
        let n = n.min(all.len());
        (0..n).map(|i| all[i * all.len() / n].clone()).collect()
    };
    match set {
        "short" => Ok(spread(list("short"), limit)),
        "long" => Ok(list("long").into_iter().take(limit).collect()),
        "mixed" => {
            let mut clips = spread(list("short"), limit);
            clips.push(dir.join(SONNET));
            Ok(clips)
        }
        other => Err(format!("--set {other}: expected short, long or mixed")),
    }
}

impl Clip {
    pub fn load(path: &Path, rate: u32) -> Self {
        let samples = load_speech(path);
        let secs = samples.len() as f64 / 16_000.0;
        let (speech_starts, speech_ends) = segments(path).unwrap_or_else(|| (vec![], vec![secs]));
        let name = path
            .strip_prefix(corpus_dir())
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        Self {
            name,
            pcm: s16le(&at_rate(&samples, rate)),
            samples,
            secs,
            reference: reference_text(path),
            speech_starts,
            speech_ends,
        }
    }
}

/// (starts, ends) in seconds from `<clip>.segments.json`, when there is one.
fn segments(wav: &Path) -> Option<(Vec<f64>, Vec<f64>)> {
    let text = std::fs::read_to_string(wav.with_extension("segments.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let spans: Vec<(f64, f64)> = json["segments"]
        .as_array()?
        .iter()
        .filter_map(|s| Some((s["start"].as_f64()?, s["end"].as_f64()?)))
        .collect();
    Some(spans.into_iter().unzip())
}
