//! Prometheus metrics. STUB: the OpenAI/metrics work replaces these bodies with real ones;
//! the method names are the contract the session and engine code call.

use std::time::Duration;

use crate::protocol::Source;

#[derive(Default, Debug)]
pub struct Metrics {}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn session_opened(&self) {}
    pub fn session_closed(&self) {}
    pub fn session_rejected(&self) {}
    pub fn utterance_finished(&self) {}
    /// Time from the audio a partial covers being received to the partial being sent.
    pub fn observe_partial_latency(&self, _latency: Duration) {}
    /// Time from the end of an utterance to its final being sent.
    pub fn observe_final_latency(&self, _latency: Duration, _source: Source) {}
    pub fn partial_shed(&self) {}
    pub fn set_engine_queue_depth(&self, _depth: usize) {}
    /// One local inference: audio length and wall time, for the real-time factor.
    pub fn observe_local_inference(&self, _audio: Duration, _elapsed: Duration, _is_final: bool) {}
    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        String::new()
    }
}
