//! Turns the recorded sessions of one level into its figures. Pure: no clock, no IO.
//!
//! What each timing measures (all wall-clock, on the client side of the socket):
//! - final latency: arrival of a final minus the moment the frame holding the end of that
//!   utterance's speech had been sent. The end of speech is the reference one (the clip's end
//!   for a short clip, a sentence end from `.segments.json` for a long recording) nearest to the
//!   final's `end_ms`, if one lies within [`MATCH_TOLERANCE_S`], or the final's own `end_ms` if
//!   that is earlier; when no reference end is that close (the server split a sentence), the
//!   final's `end_ms`. Endpointing silence is included.
//! - partial lag: arrival of a partial minus the moment the audio up to its `end_ms` was sent.
//! - first-partial delay: arrival of an utterance's first partial minus the moment its speech
//!   start was sent: the nearest reference sentence start within the tolerance, otherwise the
//!   utterance's `start_ms` plus the VAD pre-roll (where the VAD heard speech begin).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clips::Clip;
use crate::common::repetition::has_repetition_loop;
use crate::common::{normalise, word_errors};
use crate::player::Play;

/// How far a final's `end_ms` may be from a reference end of speech to be timed from it.
pub const MATCH_TOLERANCE_S: f64 = 1.0;

/// p50 / p95 / max / n of a list of seconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Spread {
    pub n: usize,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Self {
            n: v.len(),
            p50: percentile(&v, 0.50),
            p95: percentile(&v, 0.95),
            max: v.last().copied(),
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(last)])
}

/// Whether a final contradicts text a partial had committed: after normalisation, the final
/// does not start with the committed words.
pub fn contradicts(stable: &str, final_text: &str) -> bool {
    let (stable, text) = (normalise(stable), normalise(final_text));
    !text.starts_with(&stable)
}

/// The figures of one level.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    pub plays: usize,
    pub wer: Option<f64>,
    pub word_errors: usize,
    pub reference_words: usize,
    pub final_latency_s: Spread,
    /// The server's own `latency_ms` of each final: from the utterance's end (after the
    /// endpointing silence) to the final, so queue wait plus inference.
    pub final_server_latency_s: Spread,
    /// How many finals were timed from a reference end of speech (the rest from `end_ms`).
    pub finals_timed_from_reference: usize,
    pub partial_lag_s: Spread,
    pub first_partial_delay_s: Spread,
    pub partials: usize,
    pub partials_with_loop: usize,
    pub partial_loop_share: Option<f64>,
    pub finals: usize,
    pub finals_with_loop: usize,
    /// Partials that carried a non-empty `stable` prefix, and those the final contradicted.
    pub partials_with_stable: usize,
    pub stable_contradicted: usize,
    pub utterances_with_stable: usize,
    pub utterances_contradicted: usize,
    pub clips_without_partial: usize,
    /// Plays that did not end cleanly with every final: no `done`, an utterance without a
    /// final, finals out of order, an error message, or no final text for a clip with speech.
    pub finals_lost: usize,
    pub error_messages: usize,
    /// Finals by `source` (`local`, `openai`).
    pub final_sources: BTreeMap<String, usize>,
    /// Raw values, for re-analysis.
    pub raw: Raw,
}

#[derive(Debug, Default, Serialize)]
pub struct Raw {
    pub final_latency_s: Vec<f64>,
    pub final_server_latency_s: Vec<f64>,
    pub partial_lag_s: Vec<f64>,
    pub first_partial_delay_s: Vec<f64>,
    /// Per play: clip, stream, word errors, reference words, partials, lost, every final
    /// (times, text), the texts of looped partials and the first committed prefix each
    /// contradicted utterance had, with its final.
    pub plays: Vec<serde_json::Value>,
}

fn nearest(candidates: &[f64], x: f64) -> Option<f64> {
    candidates
        .iter()
        .copied()
        .filter(|c| (c - x).abs() <= MATCH_TOLERANCE_S)
        .min_by(|a, b| (a - x).abs().total_cmp(&(b - x).abs()))
}

fn ms(m: &serde_json::Value, field: &str) -> Option<f64> {
    m[field].as_f64()
}

/// Scores `plays` of `clips`; `preroll_ms` is the server's VAD pre-roll.
pub fn score(plays: &[Play], clips: &[Clip], preroll_ms: f64) -> Figures {
    let mut f = Figures {
        plays: plays.len(),
        ..Default::default()
    };
    for play in plays {
        let clip = &clips[play.clip];
        let finals: Vec<_> = play.of_kind("final").collect();
        let text = finals
            .iter()
            .filter_map(|m| m.json["text"].as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let (edits, words) = word_errors(&text, &clip.reference);
        f.word_errors += edits;
        f.reference_words += words;
        let mut final_by_utt = BTreeMap::new();
        let mut final_rows = Vec::new();
        for m in &finals {
            f.finals += 1;
            let t = m.json["text"].as_str().unwrap_or("");
            f.finals_with_loop += usize::from(has_repetition_loop(t));
            let source = m.json["source"].as_str().unwrap_or("?").to_string();
            *f.final_sources.entry(source).or_default() += 1;
            final_by_utt.insert(m.json["utterance"].as_u64().unwrap_or(u64::MAX), t);
            let Some(end) = ms(&m.json, "end_ms") else {
                continue;
            };
            let reference = nearest(&clip.speech_ends, end / 1000.0);
            f.finals_timed_from_reference += usize::from(reference.is_some());
            // The earlier of the two, so a latency is never understated: a long recording's
            // sentence "end" is the next sentence's start (pause included), and a VAD end
            // past the reference one is noise the server held on to.
            let end_ms = reference.map_or(end, |s| end.min(s * 1000.0));
            let latency = play
                .sent_at(end_ms)
                .map(|sent| m.at.saturating_duration_since(sent).as_secs_f64());
            f.raw.final_latency_s.extend(latency);
            f.raw
                .final_server_latency_s
                .extend(ms(&m.json, "latency_ms").map(|v| v / 1000.0));
            final_rows.push(serde_json::json!({
                "utterance": m.json["utterance"], "start_ms": m.json["start_ms"], "end_ms": end,
                "speech_end_s": reference, "latency_s": latency,
                "server_latency_ms": m.json["latency_ms"], "source": m.json["source"], "text": t,
            }));
        }
        let mut first_partial = BTreeMap::new();
        let mut contradicted_utts = BTreeMap::new();
        let mut partials = 0;
        let mut looped = Vec::new();
        // Each contradicted utterance's first contradicted prefix, with its final.
        let mut contradictions = Vec::new();
        for m in play.of_kind("partial") {
            partials += 1;
            let utt = m.json["utterance"].as_u64().unwrap_or(u64::MAX);
            let t = m.json["text"].as_str().unwrap_or("");
            if has_repetition_loop(t) {
                f.partials_with_loop += 1;
                looped.push(t.to_string());
            }
            if let Some(sent) = ms(&m.json, "end_ms").and_then(|e| play.sent_at(e)) {
                f.raw
                    .partial_lag_s
                    .push(m.at.saturating_duration_since(sent).as_secs_f64());
            }
            first_partial.entry(utt).or_insert(m);
            // `stable` (the committed prefix) is optional: older servers do not send it.
            if let Some(stable) = m.json["stable"]
                .as_str()
                .filter(|s| !normalise(s).is_empty())
            {
                f.partials_with_stable += 1;
                let bad = final_by_utt
                    .get(&utt)
                    .is_some_and(|fin| contradicts(stable, fin));
                f.stable_contradicted += usize::from(bad);
                let seen = contradicted_utts.entry(utt).or_insert(false);
                if bad && !*seen {
                    contradictions.push(serde_json::json!({
                        "utterance": utt, "stable": stable, "final": final_by_utt.get(&utt),
                    }));
                }
                *seen |= bad;
            }
        }
        f.partials += partials;
        f.clips_without_partial += usize::from(partials == 0);
        f.utterances_with_stable += contradicted_utts.len();
        f.utterances_contradicted += contradicted_utts.values().filter(|b| **b).count();
        for m in first_partial.values() {
            let Some(start) = ms(&m.json, "start_ms") else {
                continue;
            };
            let onset = start + preroll_ms;
            let onset = nearest(&clip.speech_starts, onset / 1000.0).map_or(onset, |s| s * 1000.0);
            if let Some(sent) = play.sent_at(onset) {
                let delay = m.at.saturating_duration_since(sent).as_secs_f64();
                f.raw.first_partial_delay_s.push(delay);
            }
        }
        let errors = play.of_kind("error").count();
        f.error_messages += errors;
        let in_order = final_by_utt.keys().copied().eq(0..finals.len() as u64);
        let partial_without_final = first_partial.keys().any(|u| !final_by_utt.contains_key(u));
        let lost = !play.done
            || play.error.is_some()
            || errors > 0
            || !in_order
            || partial_without_final
            || (normalise(&text).is_empty() && !normalise(&clip.reference).is_empty());
        f.finals_lost += usize::from(lost);
        f.raw.plays.push(serde_json::json!({
            "clip": clip.name, "stream": play.stream, "word_errors": edits, "words": words,
            "partials": partials, "lost": lost, "error": play.error, "finals": final_rows,
            "looped_partials": looped, "contradictions": contradictions,
        }));
    }
    f.wer = (f.reference_words > 0).then(|| f.word_errors as f64 / f.reference_words as f64);
    f.partial_loop_share =
        (f.partials > 0).then(|| f.partials_with_loop as f64 / f.partials as f64);
    f.final_latency_s = Spread::of(&f.raw.final_latency_s);
    f.final_server_latency_s = Spread::of(&f.raw.final_server_latency_s);
    f.partial_lag_s = Spread::of(&f.raw.partial_lag_s);
    f.first_partial_delay_s = Spread::of(&f.raw.first_partial_delay_s);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(10.0));
        assert_eq!(percentile(&v, 0.95), Some(19.0));
        assert_eq!(percentile(&v, 1.0), Some(20.0));
        assert_eq!(percentile(&[3.0], 0.95), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
        let s = Spread::of(&[0.3, 0.1, 0.2]);
        assert_eq!((s.n, s.p50, s.max), (3, Some(0.2), Some(0.3)));
    }

    #[test]
    fn contradiction_is_a_broken_prefix() {
        assert!(!contradicts(
            "And so, my fellow",
            "and so my fellow Americans"
        ));
        assert!(!contradicts("", "anything"));
        assert!(contradicts("and so my fellow", "and so my friends"));
        assert!(contradicts("ask not what", "ask"));
        // Normalisation: hyphens are spaces, case and punctuation do not count.
        assert!(!contradicts("self-substantial", "Self substantial fuel."));
    }

    #[test]
    fn nearest_reference_is_within_tolerance() {
        assert_eq!(nearest(&[4.38, 7.74], 4.9), Some(4.38));
        assert_eq!(nearest(&[4.38, 7.74], 6.0), None);
        assert_eq!(nearest(&[], 1.0), None);
    }
}
