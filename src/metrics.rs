//! Prometheus metrics through `prometheus-client`, with the process's CPU and memory from
//! `metrics-process` ([`process`]); both crates are imported in this module only.
//!
//! Every metric name carries its unit and every label has a fixed set of values, listed here
//! and created up front (so each series exists, at 0, from the first scrape and the exposition
//! never grows with traffic). Histogram buckets are sized to the real-time budget: a partial
//! should arrive within a few hundred milliseconds, a final within the OpenAI deadline (a few
//! seconds), and the local model must stay well under a real-time factor of 1 to keep up with
//! live audio. The dashboards and alert rules in deploy/monitoring/ query these names; the
//! `monitoring` test checks that every name they use is exposed.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::protocol::Source;

pub use labels::{EARLY_OUTCOMES, FALLBACK_REASONS, OPENAI_OUTCOMES, REFUSAL_REASONS};
use labels::{FINAL_LATENCY_BUCKETS_S, PARTIAL_LATENCY_BUCKETS_S, RTF_BUCKETS, RTF_KINDS, SOURCES};

/// The `Content-Type` of [`Metrics::render`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// One label pair; every label value comes from one of the fixed sets of [`labels`].
type Label = [(&'static str, &'static str); 1];
type HistogramFamily = Family<Label, Histogram, fn() -> Histogram>;

fn final_latency_histogram() -> Histogram {
    Histogram::new(FINAL_LATENCY_BUCKETS_S.iter().copied())
}

fn rtf_histogram() -> Histogram {
    Histogram::new(RTF_BUCKETS.iter().copied())
}

/// A counter family with one series per value of `set`, all present from the start.
fn counter_family(key: &'static str, set: &[&'static str]) -> Family<Label, Counter> {
    let family = Family::<Label, Counter>::default();
    for value in set {
        let _ = family.get_or_create(&[(key, *value)]);
    }
    family
}

/// The label for `value` if it is in its fixed set; unknown values are a programming error.
fn known(key: &'static str, set: &[&'static str], value: &str) -> Option<Label> {
    let found = set.iter().find(|v| **v == value).map(|v| [(key, *v)]);
    debug_assert!(found.is_some(), "label value {value:?} is not in {set:?}");
    found
}

/// Negative or non-finite observations (clock oddities) are dropped, not recorded.
fn observe(histogram: &Histogram, value: f64) {
    if value.is_finite() && value >= 0.0 {
        histogram.observe(value);
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions_active: Gauge,
    sessions_max: Gauge,
    session_slots_free: Gauge,
    sessions: Counter,
    sessions_rejected: Counter,
    utterances: Counter,
    partials_shed: Counter,
    final_loops: Counter,
    finals_on_lent_cores: Counter,
    engine_queue_depth: Gauge,
    openai_circuit_open: Gauge,
    live_workers: Gauge,
    storage_errors: Counter,
    partial_latency: Histogram,
    final_latency: HistogramFamily,
    local_rtf: HistogramFamily,
    openai_requests: Family<Label, Counter>,
    fallbacks: Family<Label, Counter>,
    refusals: Family<Label, Counter>,
    early_finals: Family<Label, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let final_latency = HistogramFamily::new_with_constructor(final_latency_histogram);
        for source in SOURCES {
            let _ = final_latency.get_or_create(&[("source", source)]);
        }
        let local_rtf = HistogramFamily::new_with_constructor(rtf_histogram);
        for kind in RTF_KINDS {
            let _ = local_rtf.get_or_create(&[("kind", kind)]);
        }
        let mut m = Self {
            registry: Registry::default(),
            sessions_active: Gauge::default(),
            sessions_max: Gauge::default(),
            session_slots_free: Gauge::default(),
            sessions: Counter::default(),
            sessions_rejected: Counter::default(),
            utterances: Counter::default(),
            partials_shed: Counter::default(),
            final_loops: Counter::default(),
            finals_on_lent_cores: Counter::default(),
            engine_queue_depth: Gauge::default(),
            openai_circuit_open: Gauge::default(),
            live_workers: Gauge::default(),
            storage_errors: Counter::default(),
            partial_latency: Histogram::new(PARTIAL_LATENCY_BUCKETS_S.iter().copied()),
            final_latency,
            local_rtf,
            openai_requests: counter_family("outcome", &OPENAI_OUTCOMES),
            fallbacks: counter_family("reason", &FALLBACK_REASONS),
            refusals: counter_family("reason", &REFUSAL_REASONS),
            early_finals: counter_family("outcome", &EARLY_OUTCOMES),
        };
        m.register();
        m
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn session_opened(&self) {
        self.sessions_active.inc();
        self.sessions.inc();
    }

    pub fn session_closed(&self) {
        // Saturating: an unpaired close must not take the gauge below 0.
        let _ = self
            .sessions_active
            .inner()
            .fetch_update(Relaxed, Relaxed, |n| (n > 0).then(|| n - 1));
    }

    pub fn session_rejected(&self) {
        self.sessions_rejected.inc();
    }

    /// How many sessions the server would accept right now, and its limit; set from the
    /// admission state when `/metrics` is scraped.
    pub fn set_session_capacity(&self, free: usize, max: usize) {
        self.session_slots_free.set(saturating_i64(free));
        self.sessions_max.set(saturating_i64(max));
    }

    pub fn utterance_finished(&self) {
        self.utterances.inc();
    }

    /// Time from the audio a partial covers being received to the partial being sent.
    pub fn observe_partial_latency(&self, latency: Duration) {
        observe(&self.partial_latency, latency.as_secs_f64());
    }

    /// Time from the end of an utterance to its final being sent.
    pub fn observe_final_latency(&self, latency: Duration, source: Source) {
        let source = match source {
            Source::Local => SOURCES[0],
            Source::Openai => SOURCES[1],
        };
        observe(
            &self.final_latency.get_or_create(&[("source", source)]),
            latency.as_secs_f64(),
        );
    }

    pub fn partial_shed(&self) {
        self.partials_shed.inc();
    }

    /// A sized final tripped the loop guard.
    pub fn final_loop(&self) {
        self.final_loops.inc();
    }

    /// A local final borrowed idle workers' cores.
    pub fn final_on_lent_cores(&self) {
        self.finals_on_lent_cores.inc();
    }

    pub fn set_engine_queue_depth(&self, depth: usize) {
        self.engine_queue_depth.set(saturating_i64(depth));
    }

    /// One local inference: audio length and wall time, for the real-time factor.
    pub fn observe_local_inference(&self, audio: Duration, elapsed: Duration, is_final: bool) {
        if audio.is_zero() {
            return;
        }
        let rtf = elapsed.as_secs_f64() / audio.as_secs_f64();
        let kind = RTF_KINDS[usize::from(is_final)];
        observe(&self.local_rtf.get_or_create(&[("kind", kind)]), rtf);
    }

    /// One OpenAI HTTP attempt; `outcome` is one of [`OPENAI_OUTCOMES`].
    pub fn openai_request(&self, outcome: &str) {
        if let Some(label) = known("outcome", &OPENAI_OUTCOMES, outcome) {
            self.openai_requests.get_or_create(&label).inc();
        }
    }

    /// One utterance whose final did not come from OpenAI; `reason` is one of
    /// [`FALLBACK_REASONS`]. Counted by the OpenAI client, not by its callers.
    pub fn early_final(&self, outcome: &str) {
        if let Some(label) = known("outcome", &EARLY_OUTCOMES, outcome) {
            self.early_finals.get_or_create(&label).inc();
        }
    }

    pub fn fallback(&self, reason: &str) {
        if let Some(label) = known("reason", &FALLBACK_REASONS, reason) {
            self.fallbacks.get_or_create(&label).inc();
        }
    }

    /// One refused connection or request, or a session ended by a limit; `reason` is one of
    /// [`REFUSAL_REASONS`].
    pub fn refusal(&self, reason: &str) {
        if let Some(label) = known("reason", &REFUSAL_REASONS, reason) {
            self.refusals.get_or_create(&label).inc();
        }
    }

    /// Local inference workers running in both pools (partials' and FINAL_MODEL's), read from
    /// the pools at each scrape; the "no live workers" alert fires at 0.
    pub fn set_live_workers(&self, workers: usize) {
        self.live_workers.set(saturating_i64(workers));
    }

    /// One failed storage operation (the transcript store counts its own errors).
    pub fn storage_error(&self) {
        self.storage_errors.inc();
    }

    pub fn set_openai_circuit_open(&self, open: bool) {
        self.openai_circuit_open.set(i64::from(open));
    }

    /// Prometheus text exposition format (version 0.0.4, [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail; the encoder only returns fmt::Error from it.
        prometheus_text::encode(&mut out, &self.registry).expect("encoding into a String");
        out
    }
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

mod labels;
mod process;
mod register;
#[cfg(test)]
mod tests;
