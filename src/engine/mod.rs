//! Transcription engines: the local whisper.cpp worker pool and the final-pass policy.
//!
//! Sessions see one handle, [`Engine`]: `engine.transcribe(request).await`. Behind it the
//! local backend queues a [`Job`] on a bounded [`queue::JobQueue`] (finals before partials,
//! unless a partial has waited too long), owned worker threads with their own whisper state
//! answer on a oneshot channel, and dropping the future cancels the job. Tests put a scripted [`Transcribe`] behind the same
//! handle. [`final_pass::FinalPass`] decides where each utterance's final comes from.

pub mod cores;
pub mod filter;
pub mod final_pass;
pub mod live;
pub mod openai;
pub mod queue;
pub mod repetition;
pub mod whisper;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use final_pass::{EarlyLocal, FinalPass, FinalRequest, FinalResult, Preview};
pub use live::{LiveAudio, PartialOf};
pub use queue::JobQueue;
pub use whisper::{
    EngineOptions, LocalEngine, ModelError, ModelInfo, OnLoop, FLASH_ATTENTION,
    TEMPERATURE_FALLBACK,
};

/// What a job is for: finals use the full decoder, partials trade accuracy for speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    Partial,
    Final,
}

/// What a session asks the engine for.
#[derive(Clone, Debug)]
pub struct TranscribeRequest {
    pub kind: JobKind,
    /// Who asks (a session's [`SessionKey`], or 0 for one-off jobs): the queue takes finals
    /// round-robin by it.
    pub session: SessionKey,
    /// 16 kHz mono samples.
    pub audio: Arc<Vec<f32>>,
    /// Text that came before (the session's previous finals), for continuity.
    pub prompt: String,
    pub language: String,
    /// A partial's open utterance: the worker decodes its audio as it is when the job starts,
    /// which is newer than `audio` when the job waited.
    pub partial: Option<PartialOf>,
    /// An early final's [`Guess`]: it waits behind the finals of utterances that have ended
    /// until its session confirms that its utterance has ended too.
    pub guess: Option<Guess>,
}

/// Whether an early final's utterance has ended, as far as its session knows. Until it is
/// confirmed the final is a guess (speech may resume), so it goes after every confirmed final
/// in the queue, but still before partials, which are guesses that are always replaced.
#[derive(Clone, Debug, Default)]
pub struct Guess(Arc<AtomicBool>);

impl Guess {
    /// The utterance ended with exactly the audio the early final decodes.
    pub fn confirm(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn confirmed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Identifies the session a job belongs to, for fair scheduling.
pub type SessionKey = u64;

/// The local model's answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// whisper's probability that the audio holds no speech (highest over segments).
    pub no_speech_prob: f32,
    /// Time the worker spent on it.
    pub inference: Duration,
    /// A sized final's text looped (the loop was cut off, or it was decoded again).
    pub looped: bool,
    /// Samples decoded: a partial's live audio may be longer than the request's (0 when the
    /// backend does not say, meaning the request's audio).
    pub audio_samples: usize,
    /// Time the job waited for a worker.
    pub waited: Duration,
    /// CPU threads it ran on: more than a worker's own when it borrowed idle cores (0 when
    /// the backend does not say).
    pub threads: usize,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EngineError {
    /// The queue was full and this partial was dropped (a newer one will follow).
    #[error("partial shed: engine queue full")]
    Shed,
    /// The partial's utterance ended while it waited (nobody would see it), or pauses past
    /// its kept tail (its audio is its final's, which the pause is about to start).
    #[error("partial skipped: its utterance has ended")]
    Stale,
    #[error("engine is shutting down")]
    Closed,
    /// A final missed its deadline (`LOCAL_TIMEOUT_MS`).
    #[error("local transcription missed its deadline")]
    Timeout,
    #[error("whisper inference failed: {0}")]
    Inference(String),
}

/// Something that turns audio into text: the local worker pool, or a script in tests.
pub trait Transcribe: Send + Sync + 'static {
    /// Answers `request`; dropping the future means nobody needs the answer any more.
    fn transcribe(
        &self,
        request: TranscribeRequest,
    ) -> BoxFuture<'static, Result<Transcript, EngineError>>;
}

/// The handle sessions hold. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    backend: Arc<dyn Transcribe>,
}

impl Engine {
    pub fn new(backend: Arc<dyn Transcribe>) -> Self {
        Self { backend }
    }

    /// Transcribes `request`. A partial is refused at once ([`EngineError::Shed`]) when the
    /// engine is full; a final waits for room. Dropping the future cancels the job.
    pub async fn transcribe(&self, request: TranscribeRequest) -> Result<Transcript, EngineError> {
        self.backend.transcribe(request).await
    }
}

/// One queued request, as the worker threads see it.
pub struct Job {
    pub kind: JobKind,
    pub session: SessionKey,
    pub audio: Arc<Vec<f32>>,
    pub prompt: String,
    pub language: String,
    pub partial: Option<PartialOf>,
    pub guess: Option<Guess>,
    pub reply: oneshot::Sender<Result<Transcript, EngineError>>,
    pub enqueued: Instant,
    /// Cancelled when nobody needs the answer any more (OpenAI answered first): a worker
    /// skips the job instead of spending seconds on it. (whisper-rs 0.16's abort callback
    /// deadlocked the encoder in a trial, so a job already running completes.)
    pub cancel: CancellationToken,
    /// The requesting session's span, entered by the worker so its logs say whose job it is.
    pub span: tracing::Span,
}

impl Job {
    /// A job and the receiver its answer arrives on.
    pub fn new(
        request: TranscribeRequest,
    ) -> (Self, oneshot::Receiver<Result<Transcript, EngineError>>) {
        let (reply, rx) = oneshot::channel();
        (
            Self {
                kind: request.kind,
                session: request.session,
                audio: request.audio,
                prompt: request.prompt,
                language: request.language,
                partial: request.partial,
                guess: request.guess,
                reply,
                enqueued: Instant::now(),
                cancel: CancellationToken::new(),
                span: tracing::Span::current(),
            },
            rx,
        )
    }

    /// An early final whose utterance may still go on.
    pub fn speculative(&self) -> bool {
        self.guess.as_ref().is_some_and(|g| !g.confirmed())
    }

    /// Binds a partial to its utterance's audio as it is now ([`live`]); `false` when that
    /// utterance has ended, so its partial would be thrown away unseen.
    pub fn take_live_audio(&mut self) -> bool {
        let Some(of) = &self.partial else {
            return true;
        };
        match of.live.snapshot(of.utterance) {
            Some(audio) if audio.len() > self.audio.len() => {
                self.audio = audio;
                true
            }
            Some(_) => true,
            None => false,
        }
    }
}

/// The local backend: jobs on the bounded queue, answered by the worker threads.
impl Transcribe for Arc<JobQueue> {
    fn transcribe(
        &self,
        request: TranscribeRequest,
    ) -> BoxFuture<'static, Result<Transcript, EngineError>> {
        let queue = self.clone();
        Box::pin(async move {
            let (job, rx) = Job::new(request);
            // Dropping this future (the answer is no longer needed) cancels the job, so a
            // worker that has not started it skips it.
            let _cancel_when_dropped = job.cancel.clone().drop_guard();
            queue.submit(job).await?;
            rx.await.unwrap_or(Err(EngineError::Closed))
        })
    }
}
