//! The fixed label values and histogram buckets of every metric.

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

/// Why a connection or request was refused, or a session was ended by a server limit
/// (`whisper_refusals_total{reason}`): the wire protocol's error codes, and `unauthorized`
/// for a 401 (no valid access token).
pub const REFUSAL_REASONS: [&str; 8] = [
    "unauthorized",
    "origin_not_allowed",
    "ip_limit",
    "server_busy",
    "not_ready",
    "shutting_down",
    "session_too_long",
    "no_speech",
];

/// What became of an early local final (`whisper_early_finals_total{outcome}`): its text was
/// the final, or speech resumed (or the prompt changed) and it was dropped.
pub const EARLY_OUTCOMES: [&str; 2] = ["used", "dropped"];

/// Values of `whisper_final_latency_seconds{source}`.
pub(super) const SOURCES: [&str; 2] = ["local", "openai"];
/// Values of `whisper_local_rtf{kind}`.
pub(super) const RTF_KINDS: [&str; 2] = ["partial", "final"];

/// Seconds from the audio a partial covers to the partial leaving.
pub(super) const PARTIAL_LATENCY_BUCKETS_S: &[f64] = &[
    0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
];
/// Seconds from the end of an utterance to its final; the OpenAI deadline is 4 s by default.
pub(super) const FINAL_LATENCY_BUCKETS_S: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0,
];
/// Inference time over audio time; above 1 the local model falls behind live audio.
pub(super) const RTF_BUCKETS: &[f64] = &[0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0];
