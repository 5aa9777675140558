//! Transcription engines: the local whisper.cpp worker pool and (with OpenAI) the final pass.
//!
//! Inference never runs on a tokio thread. Sessions submit [`Job`]s to a bounded
//! [`queue::JobQueue`] where finals go before partials; owned worker threads, each with its
//! own whisper state, take jobs and answer on a oneshot channel.

pub mod filter;
pub mod openai;
pub mod queue;
pub mod whisper;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use queue::JobQueue;
pub use whisper::{LocalEngine, ModelError, ModelInfo};

/// What a job is for: finals use the full decoder, partials trade accuracy for speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    Partial,
    Final,
}

/// One transcription request.
pub struct Job {
    pub kind: JobKind,
    /// 16 kHz mono samples.
    pub audio: Arc<Vec<f32>>,
    /// Text that came before (the session's previous finals), for continuity.
    pub prompt: String,
    pub language: String,
    pub reply: oneshot::Sender<Result<Transcript, EngineError>>,
    pub enqueued: Instant,
    /// Cancelled when nobody needs the answer any more (OpenAI answered first): a worker
    /// skips the job instead of spending seconds on it. (whisper-rs 0.16's abort callback
    /// deadlocked the encoder in a trial, so a job already running completes.)
    pub cancel: CancellationToken,
}

/// The local model's answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// whisper's probability that the audio holds no speech (highest over segments).
    pub no_speech_prob: f32,
    /// Time the worker spent on it.
    pub inference: Duration,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EngineError {
    /// The queue was full and this partial was dropped (a newer one will follow).
    #[error("partial shed: engine queue full")]
    Shed,
    #[error("engine is shutting down")]
    Closed,
    #[error("whisper inference failed: {0}")]
    Inference(String),
}

impl Job {
    /// A job and the receiver its answer arrives on.
    pub fn new(
        kind: JobKind,
        audio: Arc<Vec<f32>>,
        prompt: String,
        language: String,
    ) -> (Self, oneshot::Receiver<Result<Transcript, EngineError>>) {
        let (reply, rx) = oneshot::channel();
        (
            Self {
                kind,
                audio,
                prompt,
                language,
                reply,
                enqueued: Instant::now(),
                cancel: CancellationToken::new(),
            },
            rx,
        )
    }
}
