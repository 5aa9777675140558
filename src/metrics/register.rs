//! Every metric's name and help text, registered once when [`Metrics`] is built.

use prometheus_client::registry::Unit;

use super::{process, Metrics};

impl Metrics {
    /// Names without the `_total` and unit suffixes, which the encoder appends.
    pub(super) fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "whisper_sessions_active",
            "Open WebSocket sessions",
            self.sessions_active.clone(),
        );
        r.register(
            "whisper_sessions_max",
            "Session limit of this server (MAX_SESSIONS)",
            self.sessions_max.clone(),
        );
        r.register(
            "whisper_session_slots_free",
            "Sessions this server would accept now: 0 while loading, draining or full",
            self.session_slots_free.clone(),
        );
        r.register(
            "whisper_sessions",
            "WebSocket sessions accepted",
            self.sessions.clone(),
        );
        r.register(
            "whisper_sessions_rejected",
            "WebSocket sessions refused because the server was full",
            self.sessions_rejected.clone(),
        );
        r.register(
            "whisper_utterances",
            "Utterances finished (finals due)",
            self.utterances.clone(),
        );
        r.register(
            "whisper_partials_shed",
            "Partial transcripts skipped because the engine queue was full",
            self.partials_shed.clone(),
        );
        r.register(
            "whisper_final_loops",
            "Sized local finals whose text looped and had the loop cut off",
            self.final_loops.clone(),
        );
        r.register(
            "whisper_finals_on_lent_cores",
            "Local finals that ran on idle workers' cores as well as their own (LEND_IDLE_CORES)",
            self.finals_on_lent_cores.clone(),
        );
        r.register(
            "whisper_engine_queue_depth",
            "Local inference jobs waiting for a worker",
            self.engine_queue_depth.clone(),
        );
        r.register(
            "whisper_openai_circuit_open",
            "1 while the OpenAI circuit breaker sends finals straight to local",
            self.openai_circuit_open.clone(),
        );
        r.register(
            "whisper_live_workers",
            "Local inference workers running (0 until the model has loaded)",
            self.live_workers.clone(),
        );
        r.register(
            "whisper_storage_errors",
            "Failed writes or reads of stored transcripts",
            self.storage_errors.clone(),
        );
        r.register_with_unit(
            "whisper_partial_latency",
            "From the audio a partial covers to the partial being sent",
            Unit::Seconds,
            self.partial_latency.clone(),
        );
        r.register_with_unit(
            "whisper_final_latency",
            "From the end of an utterance to its final being sent, by source",
            Unit::Seconds,
            self.final_latency.clone(),
        );
        r.register(
            "whisper_local_rtf",
            "Local inference real-time factor (wall time / audio time), by kind",
            self.local_rtf.clone(),
        );
        r.register(
            "whisper_openai_requests",
            "OpenAI transcription HTTP attempts, by outcome",
            self.openai_requests.clone(),
        );
        r.register(
            "whisper_fallbacks",
            "Utterances whose final did not come from OpenAI, by reason",
            self.fallbacks.clone(),
        );
        r.register(
            "whisper_refusals",
            "Connections and requests refused, and sessions ended by a server limit, by reason",
            self.refusals.clone(),
        );
        r.register(
            "whisper_early_finals",
            "Local finals started while an utterance's end-of-speech silence ran, by outcome",
            self.early_finals.clone(),
        );
        r.register_collector(Box::new(process::ProcessCollector));
    }
}
