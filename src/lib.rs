//! whisper-api: a real-time speech-to-text server.
//!
//! Browsers and terminal tools stream PCM over a WebSocket; a voice activity detector cuts the
//! stream into utterances; a local whisper.cpp model sends partial transcripts while someone
//! speaks and a final transcript per utterance (re-transcribed by OpenAI when configured, with
//! the local text as fallback).
//!
//! Data flows one way, `http → session → {audio, vad, engine}`; the leaves know nothing of
//! WebSockets, so each is testable with a WAV file and no server.
//!
//! - [`config`]: one typed configuration from the environment, secrets redacted.
//! - [`protocol`]: wire messages, error codes and close codes (docs/protocol.md).
//! - [`audio`]: PCM decoding, downmixing, streaming resampling to 16 kHz, WAV files.
//! - [`vad`]: the webrtc-vad wrapper and the pure utterance segmenter.
//! - [`engine`]: the local whisper worker pool, the OpenAI client and the final-pass policy.
//! - [`session`]: one WebSocket connection: reader, partial scheduling, ordered finals.
//! - [`storage`]: sessions and finals kept in SQLite or PostgreSQL, and transcript formats.
//! - [`captions`]: read-only caption feeds that follow a live session.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`access`]: API and browser tokens, the WebSocket Origin policy, client addresses
//!   behind trusted proxies, sessions per address (pure rules; `http::auth` applies them).
//! - [`http`]: router, access layers, `/ws` admission, `/health`, `/metrics`, static files,
//!   the connection loop with its header-read timeout; the admin listener's router.
//! - [`server`]: `run(listener, config, shutdown)`, the whole server as one function.

pub mod access;
pub mod audio;
pub mod captions;
pub mod config;
pub mod engine;
pub mod file_job;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod session;
pub mod storage;
pub mod vad;

pub use config::Config;
pub use server::run;
