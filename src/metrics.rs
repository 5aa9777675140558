//! Prometheus metrics: lock-free counters, gauges and histograms, rendered by hand.
//!
//! Every metric name carries its unit and every label has a fixed set of values, listed here,
//! so the exposition never grows with traffic. Histogram buckets are sized to the real-time
//! budget: a partial should arrive within a few hundred milliseconds, a final within the
//! OpenAI deadline (a few seconds), and the local model must stay well under a real-time
//! factor of 1 to keep up with live audio.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::protocol::Source;

/// Outcomes of one OpenAI HTTP attempt (`whisper_openai_requests_total{outcome}`).
pub const OPENAI_OUTCOMES: [&str; 7] = [
    "ok",
    "timeout",
    "http_429",
    "http_5xx",
    "http_4xx",
    "network",
    "bad_response",
];

/// Why a final did not come from OpenAI (`whisper_fallbacks_total{reason}`); the strings are
/// `FallbackReason::as_str` and the wire protocol's `fallback_reason`.
pub const FALLBACK_REASONS: [&str; 8] = [
    "timeout",
    "http_429",
    "http_5xx",
    "http_4xx",
    "network",
    "bad_response",
    "circuit_open",
    "no_api_key",
];

/// Seconds from the audio a partial covers to the partial leaving.
const PARTIAL_LATENCY_BUCKETS_S: &[f64] = &[
    0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
];
/// Seconds from the end of an utterance to its final; the OpenAI deadline is 4 s by default.
const FINAL_LATENCY_BUCKETS_S: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0,
];
/// Inference time over audio time; above 1 the local model falls behind live audio.
const RTF_BUCKETS: &[f64] = &[0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0];

/// Histogram sums are kept in millionths, so that they fit an integer atomic.
const SUM_SCALE: f64 = 1e6;

/// A fixed-bucket histogram; `observe` is a couple of relaxed atomic adds.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        if !value.is_finite() || value < 0.0 {
            return;
        }
        let slot = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add((value * SUM_SCALE).round() as u64, Relaxed);
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines; `labels` is `key="value",` or empty.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_micros.load(Relaxed) as f64 / SUM_SCALE;
        let braces = labels_in_braces(labels);
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// `key="v",` → `{key="v"}`; empty stays empty.
fn labels_in_braces(labels: &str) -> String {
    match labels.trim_end_matches(',') {
        "" => String::new(),
        l => format!("{{{l}}}"),
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counters(labels: &[&str]) -> Vec<AtomicU64> {
    labels.iter().map(|_| AtomicU64::new(0)).collect()
}

/// Index of a label value in its fixed set; unknown values are a programming error.
fn label_index(set: &[&str], value: &str) -> Option<usize> {
    let index = set.iter().position(|v| *v == value);
    debug_assert!(index.is_some(), "label value {value:?} is not in {set:?}");
    index
}

#[derive(Debug)]
pub struct Metrics {
    sessions_active: AtomicU64,
    sessions_total: AtomicU64,
    sessions_rejected: AtomicU64,
    utterances: AtomicU64,
    partials_shed: AtomicU64,
    engine_queue_depth: AtomicU64,
    openai_circuit_open: AtomicU64,
    storage_errors: AtomicU64,
    partial_latency: Histogram,
    /// Indexed like [`SOURCES`].
    final_latency: [Histogram; 2],
    /// Indexed like [`RTF_KINDS`].
    local_rtf: [Histogram; 2],
    openai_requests: Vec<AtomicU64>,
    fallbacks: Vec<AtomicU64>,
}

const SOURCES: [&str; 2] = ["local", "openai"];
const RTF_KINDS: [&str; 2] = ["partial", "final"];

impl Default for Metrics {
    fn default() -> Self {
        Self {
            sessions_active: AtomicU64::new(0),
            sessions_total: AtomicU64::new(0),
            sessions_rejected: AtomicU64::new(0),
            utterances: AtomicU64::new(0),
            partials_shed: AtomicU64::new(0),
            engine_queue_depth: AtomicU64::new(0),
            openai_circuit_open: AtomicU64::new(0),
            storage_errors: AtomicU64::new(0),
            partial_latency: Histogram::new(PARTIAL_LATENCY_BUCKETS_S),
            final_latency: [FINAL_LATENCY_BUCKETS_S; 2].map(Histogram::new),
            local_rtf: [RTF_BUCKETS; 2].map(Histogram::new),
            openai_requests: counters(&OPENAI_OUTCOMES),
            fallbacks: counters(&FALLBACK_REASONS),
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn session_opened(&self) {
        self.sessions_active.fetch_add(1, Relaxed);
        self.sessions_total.fetch_add(1, Relaxed);
    }

    pub fn session_closed(&self) {
        // Saturating: an unpaired close must not wrap the gauge to 2^64.
        let _ = self
            .sessions_active
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    pub fn session_rejected(&self) {
        self.sessions_rejected.fetch_add(1, Relaxed);
    }

    pub fn utterance_finished(&self) {
        self.utterances.fetch_add(1, Relaxed);
    }

    /// Time from the audio a partial covers being received to the partial being sent.
    pub fn observe_partial_latency(&self, latency: Duration) {
        self.partial_latency.observe(latency.as_secs_f64());
    }

    /// Time from the end of an utterance to its final being sent.
    pub fn observe_final_latency(&self, latency: Duration, source: Source) {
        let index = match source {
            Source::Local => 0,
            Source::Openai => 1,
        };
        self.final_latency[index].observe(latency.as_secs_f64());
    }

    pub fn partial_shed(&self) {
        self.partials_shed.fetch_add(1, Relaxed);
    }

    pub fn set_engine_queue_depth(&self, depth: usize) {
        self.engine_queue_depth.store(depth as u64, Relaxed);
    }

    /// One local inference: audio length and wall time, for the real-time factor.
    pub fn observe_local_inference(&self, audio: Duration, elapsed: Duration, is_final: bool) {
        if audio.is_zero() {
            return;
        }
        let rtf = elapsed.as_secs_f64() / audio.as_secs_f64();
        self.local_rtf[usize::from(is_final)].observe(rtf);
    }

    /// One OpenAI HTTP attempt; `outcome` is one of [`OPENAI_OUTCOMES`].
    pub fn openai_request(&self, outcome: &str) {
        if let Some(i) = label_index(&OPENAI_OUTCOMES, outcome) {
            self.openai_requests[i].fetch_add(1, Relaxed);
        }
    }

    /// One utterance whose final did not come from OpenAI; `reason` is one of
    /// [`FALLBACK_REASONS`]. Counted by the OpenAI client, not by its callers.
    pub fn fallback(&self, reason: &str) {
        if let Some(i) = label_index(&FALLBACK_REASONS, reason) {
            self.fallbacks[i].fetch_add(1, Relaxed);
        }
    }

    pub fn set_openai_circuit_open(&self, open: bool) {
        self.openai_circuit_open.store(u64::from(open), Relaxed);
    }

    /// A transcript store operation that failed or timed out (the final was still sent).
    pub fn storage_error(&self) {
        self.storage_errors.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let simple: [(&str, &str, &str, &AtomicU64); 8] = [
            (
                "whisper_sessions_active",
                "gauge",
                "Open WebSocket sessions.",
                &self.sessions_active,
            ),
            (
                "whisper_sessions_total",
                "counter",
                "WebSocket sessions accepted.",
                &self.sessions_total,
            ),
            (
                "whisper_sessions_rejected_total",
                "counter",
                "WebSocket sessions refused because the server was full.",
                &self.sessions_rejected,
            ),
            (
                "whisper_utterances_total",
                "counter",
                "Utterances finished (finals due).",
                &self.utterances,
            ),
            (
                "whisper_partials_shed_total",
                "counter",
                "Partial transcripts skipped because the engine queue was full.",
                &self.partials_shed,
            ),
            (
                "whisper_engine_queue_depth",
                "gauge",
                "Local inference jobs waiting for a worker.",
                &self.engine_queue_depth,
            ),
            (
                "whisper_openai_circuit_open",
                "gauge",
                "1 while the OpenAI circuit breaker sends finals straight to local.",
                &self.openai_circuit_open,
            ),
            (
                "whisper_storage_errors_total",
                "counter",
                "Transcript store operations that failed or timed out.",
                &self.storage_errors,
            ),
        ];
        for (name, kind, help, value) in simple {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {}", value.load(Relaxed));
        }

        let name = "whisper_partial_latency_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "From the audio a partial covers to the partial being sent.",
        );
        self.partial_latency.render(&mut out, name, "");

        let name = "whisper_final_latency_seconds";
        header(
            &mut out,
            name,
            "histogram",
            "From the end of an utterance to its final being sent, by source.",
        );
        for (source, histogram) in SOURCES.iter().zip(&self.final_latency) {
            histogram.render(&mut out, name, &format!("source=\"{source}\","));
        }

        let name = "whisper_local_rtf";
        header(
            &mut out,
            name,
            "histogram",
            "Local inference real-time factor (wall time / audio time), by kind.",
        );
        for (kind, histogram) in RTF_KINDS.iter().zip(&self.local_rtf) {
            histogram.render(&mut out, name, &format!("kind=\"{kind}\","));
        }

        let name = "whisper_openai_requests_total";
        header(
            &mut out,
            name,
            "counter",
            "OpenAI transcription HTTP attempts, by outcome.",
        );
        for (outcome, value) in OPENAI_OUTCOMES.iter().zip(&self.openai_requests) {
            let _ = writeln!(
                out,
                "{name}{{outcome=\"{outcome}\"}} {}",
                value.load(Relaxed)
            );
        }

        let name = "whisper_fallbacks_total";
        header(
            &mut out,
            name,
            "counter",
            "Utterances whose final did not come from OpenAI, by reason.",
        );
        for (reason, value) in FALLBACK_REASONS.iter().zip(&self.fallbacks) {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", value.load(Relaxed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the first line that starts with `prefix` (name plus labels).
    fn value(text: &str, prefix: &str) -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .unwrap_or_else(|| panic!("no line {prefix} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn counters_and_gauges_render() {
        let m = Metrics::new();
        m.session_opened();
        m.session_opened();
        m.session_closed();
        m.session_closed();
        m.session_closed(); // unpaired: must not wrap
        m.session_rejected();
        m.utterance_finished();
        m.partial_shed();
        m.set_engine_queue_depth(5);
        m.openai_request("http_5xx");
        m.openai_request("http_5xx");
        m.fallback("circuit_open");
        m.set_openai_circuit_open(true);
        let text = m.render();
        assert_eq!(value(&text, "whisper_sessions_active"), 0.0);
        assert_eq!(value(&text, "whisper_sessions_total"), 2.0);
        assert_eq!(value(&text, "whisper_sessions_rejected_total"), 1.0);
        assert_eq!(value(&text, "whisper_utterances_total"), 1.0);
        assert_eq!(value(&text, "whisper_partials_shed_total"), 1.0);
        assert_eq!(value(&text, "whisper_engine_queue_depth"), 5.0);
        assert_eq!(value(&text, "whisper_openai_circuit_open"), 1.0);
        assert_eq!(
            value(&text, "whisper_openai_requests_total{outcome=\"http_5xx\"}"),
            2.0
        );
        assert_eq!(
            value(&text, "whisper_openai_requests_total{outcome=\"ok\"}"),
            0.0
        );
        assert_eq!(
            value(&text, "whisper_fallbacks_total{reason=\"circuit_open\"}"),
            1.0
        );
        assert!(text.contains("# TYPE whisper_final_latency_seconds histogram"));
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let m = Metrics::new();
        m.observe_final_latency(Duration::from_millis(300), Source::Openai);
        m.observe_final_latency(Duration::from_millis(1200), Source::Openai);
        m.observe_final_latency(Duration::from_secs(60), Source::Openai);
        m.observe_local_inference(Duration::from_secs(2), Duration::from_millis(200), true);
        m.observe_local_inference(Duration::ZERO, Duration::from_millis(200), false);
        let text = m.render();
        let openai = "whisper_final_latency_seconds_bucket{source=\"openai\",";
        assert_eq!(value(&text, &format!("{openai}le=\"0.25\"}}")), 0.0);
        assert_eq!(value(&text, &format!("{openai}le=\"0.5\"}}")), 1.0);
        assert_eq!(value(&text, &format!("{openai}le=\"1.5\"}}")), 2.0);
        assert_eq!(value(&text, &format!("{openai}le=\"10\"}}")), 2.0);
        assert_eq!(value(&text, &format!("{openai}le=\"+Inf\"}}")), 3.0);
        assert_eq!(
            value(
                &text,
                "whisper_final_latency_seconds_count{source=\"openai\"}"
            ),
            3.0
        );
        assert_eq!(
            value(
                &text,
                "whisper_final_latency_seconds_sum{source=\"openai\"}"
            ),
            61.5
        );
        assert_eq!(
            value(
                &text,
                "whisper_final_latency_seconds_count{source=\"local\"}"
            ),
            0.0
        );
        assert_eq!(
            value(&text, "whisper_local_rtf_bucket{kind=\"final\",le=\"0.1\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "whisper_local_rtf_count{kind=\"partial\"}"),
            0.0
        );
        assert_eq!(value(&text, "whisper_partial_latency_seconds_count"), 0.0);
    }

    #[test]
    fn every_sample_line_has_a_type_line() {
        let text = Metrics::new().render();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|b| text.contains(&format!("# TYPE {b} histogram")))
                })
                .unwrap_or(name);
            assert!(text.contains(&format!("# TYPE {base} ")), "{line}");
        }
    }
}
