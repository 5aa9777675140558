//! The hybrid final pass end to end: the real server with the real tiny.en model and real
//! speech, OpenAI faked at the edge by an OpenAI-compatible server on loopback
//! (`fake_openai`). Healthy answers, every failure mode with its fallback reason and
//! deadline, the circuit breaker, out-of-order answers, `PRIMARY_SERVICE=local`,
//! `FALLBACK_TO_LOCAL=false`, finals outstanding at eof and shutdown, and the key kept out
//! of logs, `/health` and `/metrics`.
//!
//! The final-latency figures come from an ignored test that streams at real time:
//! `cargo test --release --test hybrid -- --ignored --nocapture`.
//!
//! One test binary (the tracing capture is process-wide), split by scenario: [`healthy`],
//! [`failures`] (each fallback reason, refused connections, the breaker), [`modes`]
//! (out-of-order answers, local-only, no fallback), [`limits`] (`OPENAI_MAX_CONCURRENCY`,
//! `LOCAL_TIMEOUT_MS`), [`figures`], and the file endpoint (`POST /v1/audio/transcriptions`):
//! [`files`] (upstream per utterance, fallback, 502) and [`files_unavailable`] (503 while
//! shutting down or loading).

#[path = "../common/mod.rs"]
mod common;
#[path = "../fake_openai/mod.rs"]
mod fake_openai;

mod failures;
mod figures;
mod files;
mod files_unavailable;
mod healthy;
mod limits;
mod modes;
mod support;
