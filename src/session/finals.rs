//! The final pass for one utterance, as a future the session awaits in utterance order.
//!
//! The local model always transcribes the whole utterance (finals go ahead of partials in
//! the engine queue). With OpenAI as the primary service the upload runs at the same time;
//! see [`FinalPass::run`] for which text wins.

use std::sync::Arc;
use std::time::Instant;

use crate::engine::{EngineError, Job, JobKind, JobQueue, Transcript};
use crate::protocol::{ServerMessage, Source};

/// A finished utterance waiting for its final.
pub struct FinalRequest {
    pub utterance: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub audio: Arc<Vec<f32>>,
    pub prompt: String,
    pub language: String,
    /// When the segmenter closed the utterance; latency is measured from here.
    pub closed_at: Instant,
}

/// What the session sends for an utterance, once every earlier one has been sent.
pub struct FinalResult {
    pub utterance: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub closed_at: Instant,
    pub text: String,
    pub source: Source,
    pub fallback_reason: Option<String>,
}

impl FinalResult {
    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::Final {
            utterance: self.utterance,
            text: self.text.clone(),
            source: self.source,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            fallback_reason: self.fallback_reason.clone(),
            latency_ms: self.closed_at.elapsed().as_millis() as u64,
        }
    }
}

/// Shared by every session: where finals come from.
#[derive(Clone)]
pub struct FinalPass {
    pub queue: Arc<JobQueue>,
}

impl FinalPass {
    pub async fn run(self, req: FinalRequest, _outbox: super::outbox::Outbox) -> FinalResult {
        let local = local_transcript(&self.queue, &req).await;
        let text = match local {
            Ok(t) => t.text,
            Err(e) => {
                tracing::error!(utterance = req.utterance, error = %e, "local final failed");
                String::new()
            }
        };
        FinalResult {
            utterance: req.utterance,
            start_ms: req.start_ms,
            end_ms: req.end_ms,
            closed_at: req.closed_at,
            text,
            source: Source::Local,
            fallback_reason: None,
        }
    }
}

async fn local_transcript(queue: &JobQueue, req: &FinalRequest) -> Result<Transcript, EngineError> {
    let (job, rx) = Job::new(JobKind::Final, req.audio.clone(), req.prompt.clone(), req.language.clone());
    queue.submit(job).await?;
    rx.await.unwrap_or(Err(EngineError::Closed))
}
