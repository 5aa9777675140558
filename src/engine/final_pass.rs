//! The final pass for one utterance: which text becomes its final.
//!
//! Built once by the server and shared by every session. The local model always transcribes
//! the whole utterance (finals go ahead of partials in the engine queue). With OpenAI as the
//! primary service the upload runs at the same time; see [`FinalPass::run`] for which text
//! wins. The pass never writes to a client: it returns the final and offers the early local
//! text as a [`Preview`], and the session decides what to send.
//!
//! With local finals the decode may start before the utterance closes
//! ([`FinalPass::start_early`]): once the speaker pauses, the audio a final would get is
//! known, and decoding it during the end-of-speech silence instead of after it takes up to
//! `VAD_SILENCE_MS` minus the kept tail (300 ms by default) off every final. When speech
//! resumes the early job is dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
// tokio's clock, so latency logic is testable under `tokio::time::pause`.
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::openai::{FallbackReason, OpenAiClient};
use super::{
    filter, Engine, EngineError, Guess, JobKind, SessionKey, TranscribeRequest, Transcript,
};
use crate::protocol::{ServerMessage, Source};

/// A finished utterance waiting for its final.
pub struct FinalRequest {
    /// The session it belongs to, for the engine queue's round-robin.
    pub session: SessionKey,
    pub utterance: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub audio: Arc<Vec<f32>>,
    pub prompt: String,
    pub language: String,
    /// When the segmenter closed the utterance; latency is measured from here.
    pub closed_at: Instant,
    /// The local decode of this very audio and prompt, started during the pause that ended
    /// the utterance: the pass waits for it instead of queuing another.
    pub early: Option<EarlyLocal>,
}

/// A local final running ahead of its utterance's end; dropping it cancels the job.
pub struct EarlyLocal {
    job: AbortOnDropHandle<Result<Transcript, EngineError>>,
    guess: Guess,
}

impl EarlyLocal {
    /// An early job that answers with `job` (tests).
    #[cfg(test)]
    pub(crate) fn from_task(job: AbortOnDropHandle<Result<Transcript, EngineError>>) -> Self {
        Self {
            job,
            guess: Guess::default(),
        }
    }

    /// The utterance has ended with this job's audio: it waits as a final from now on.
    pub async fn confirmed(self) -> Result<Transcript, EngineError> {
        self.guess.confirm();
        self.job
            .await
            .unwrap_or_else(|e| Err(EngineError::Inference(e.to_string())))
    }
}

/// The local text of an utterance whose final still waits for OpenAI.
#[derive(Clone, Debug, PartialEq)]
pub struct Preview {
    pub utterance: u64,
    pub text: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// What the session sends for an utterance, once every earlier one has been sent.
#[derive(Clone, Debug)]
pub struct FinalResult {
    pub utterance: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub closed_at: Instant,
    pub text: String,
    pub source: Source,
    pub fallback_reason: Option<String>,
    /// OpenAI failed and fallback is disabled: an `openai_failed` error takes the final's place.
    pub failure: Option<FallbackReason>,
    /// The local job missed its deadline: a `local_timeout` error takes the final's place.
    pub local_timeout: bool,
}

impl FinalResult {
    pub fn to_message(&self) -> ServerMessage {
        if self.local_timeout {
            return ServerMessage::Error {
                code: "local_timeout".into(),
                message: "the local model did not transcribe this utterance in time".into(),
                utterance: Some(self.utterance),
            };
        }
        if let Some(reason) = self.failure {
            return ServerMessage::Error {
                code: "openai_failed".into(),
                message: format!("{reason}; local fallback is disabled (FALLBACK_TO_LOCAL=false)"),
                utterance: Some(self.utterance),
            };
        }
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

/// Where finals come from; cheap to clone.
#[derive(Clone)]
pub struct FinalPass {
    engine: Engine,
    /// `None` with `PRIMARY_SERVICE=local`.
    openai: Option<OpenAiClient>,
    fallback_to_local: bool,
    /// Longest a local final may take, queue wait included (`LOCAL_TIMEOUT_MS`).
    local_deadline: Duration,
}

/// The local deadline until [`FinalPass::with_local_deadline`] sets the configured one.
const DEFAULT_LOCAL_DEADLINE: Duration = Duration::from_secs(60);

impl FinalPass {
    pub fn new(engine: Engine, openai: Option<OpenAiClient>, fallback_to_local: bool) -> Self {
        Self {
            engine,
            openai,
            fallback_to_local,
            local_deadline: DEFAULT_LOCAL_DEADLINE,
        }
    }

    /// A local final that takes longer than `deadline` (a hung worker, a queue that never
    /// drains) gives up, so the session is not held open forever.
    pub fn with_local_deadline(mut self, deadline: Duration) -> Self {
        self.local_deadline = deadline;
        self
    }

    /// Whether a pausing utterance's local final may start: finals are local. A busy engine
    /// takes it too, as a [`Guess`] queued behind every confirmed final: about half the
    /// pauses that fill the kept tail turn out to be inside speech, and a guess decoded in
    /// vain is then a caption update lost, not a final delayed. (8 streams on 2 cores,
    /// interleaved runs: final p50 / p95 1.76–1.88 / 2.92–3.19 s, against 1.99–2.46 /
    /// 3.81–4.20 s when only an idle engine took early finals, which let 1 of 152 start.)
    pub fn takes_early(&self) -> bool {
        self.openai.is_none()
    }

    /// Starts the local final of a pausing utterance (when [`FinalPass::takes_early`]).
    pub fn start_early(&self, mut request: TranscribeRequest) -> EarlyLocal {
        let guess = Guess::default();
        request.guess = Some(guess.clone());
        let engine = self.engine.clone();
        // In the session's span, so the worker's logs say whose job it is.
        let job = tokio::spawn(
            async move { engine.transcribe(request).await }.instrument(tracing::Span::current()),
        );
        EarlyLocal {
            job: AbortOnDropHandle::new(job),
            guess,
        }
    }

    /// Produces the utterance's final.
    ///
    /// Local only: the local transcript. With OpenAI: the local job and the upload run at
    /// once; the local text is offered on `previews` as soon as it exists (the session sends
    /// it as the utterance's last partial), and the final is OpenAI's text, or — when OpenAI
    /// fails within its deadline — the local text with the reason (or an `openai_failed`
    /// error when fallback is disabled).
    pub async fn run(self, mut req: FinalRequest, previews: mpsc::Sender<Preview>) -> FinalResult {
        let Some(openai) = self.openai.clone() else {
            let early = req.early.take();
            let transcript = self.local_transcript(&req, early).await;
            if transcript == Err(EngineError::Timeout) {
                return req.timed_out();
            }
            let text = local_text(transcript, &req);
            return req.result(Ok(text), Source::Local);
        };
        let early = req.early.take();
        let local = self.local_transcript(&req, early);
        let remote = openai.transcribe(&req.audio, &req.prompt, &req.language);
        tokio::pin!(local, remote);
        // The local answer, kept whole: a missed deadline must still become `local_timeout`
        // when OpenAI fails after it (it used to turn into an empty fallback final).
        let mut local_done: Option<Result<Transcript, EngineError>> = None;
        let reason = loop {
            tokio::select! {
                // Biased towards OpenAI: once it has answered, the local text is not needed
                // (dropping `local` cancels its job).
                biased;
                answer = &mut remote => match answer {
                    Ok(text) => {
                        let text = filter::clean(&text, 0.0, &req.audio);
                        return req.result(Ok(text), Source::Openai);
                    }
                    Err(reason) => break reason,
                },
                transcript = &mut local, if local_done.is_none() => {
                    match &transcript {
                        Ok(t) if !t.text.is_empty() => {
                            // A full channel only loses the preview; the final still follows.
                            let _ = previews.try_send(Preview {
                                utterance: req.utterance,
                                text: t.text.clone(),
                                start_ms: req.start_ms,
                                end_ms: req.end_ms,
                            });
                        }
                        _ => {}
                    }
                    local_done = Some(transcript);
                }
            }
        };
        if !self.fallback_to_local {
            return req.result(Err(reason), Source::Openai);
        }
        let transcript = match local_done {
            Some(transcript) => transcript,
            None => local.await,
        };
        if transcript == Err(EngineError::Timeout) {
            return req.timed_out();
        }
        let text = local_text(transcript, &req);
        let mut result = req.result(Ok(text), Source::Local);
        result.fallback_reason = Some(reason.as_str().to_string());
        result
    }

    /// The utterance's local transcript: the early job when there is one, else a new job.
    async fn local_transcript(
        &self,
        req: &FinalRequest,
        early: Option<EarlyLocal>,
    ) -> Result<Transcript, EngineError> {
        let job = match early {
            Some(early) => Box::pin(early.confirmed()) as futures_util::future::BoxFuture<'_, _>,
            None => Box::pin(self.engine.transcribe(TranscribeRequest {
                kind: JobKind::Final,
                session: req.session,
                audio: req.audio.clone(),
                prompt: req.prompt.clone(),
                language: req.language.clone(),
                partial: None,
                guess: None,
            })),
        };
        // Dropping the job on timeout cancels it if no worker has started it.
        tokio::time::timeout(self.local_deadline, job)
            .await
            .unwrap_or(Err(EngineError::Timeout))
    }
}

impl FinalRequest {
    fn result(&self, text: Result<String, FallbackReason>, source: Source) -> FinalResult {
        let (text, failure) = match text {
            Ok(text) => (text, None),
            Err(reason) => (String::new(), Some(reason)),
        };
        FinalResult {
            utterance: self.utterance,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            closed_at: self.closed_at,
            text,
            source,
            fallback_reason: None,
            failure,
            local_timeout: false,
        }
    }

    fn timed_out(&self) -> FinalResult {
        tracing::error!(
            utterance = self.utterance,
            "local final missed its deadline"
        );
        let mut result = self.result(Ok(String::new()), Source::Local);
        result.local_timeout = true;
        result
    }
}

/// The local text, or empty (logged) when the engine failed.
fn local_text(result: Result<Transcript, EngineError>, req: &FinalRequest) -> String {
    match result {
        Ok(t) => t.text,
        Err(e) => {
            tracing::error!(utterance = req.utterance, error = %e, "local final failed");
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::JobQueue;

    #[tokio::test]
    async fn an_early_final_is_a_guess_until_its_utterance_ends() {
        let queue = Arc::new(JobQueue::new(4));
        let pass = FinalPass::new(Engine::new(Arc::new(queue.clone())), None, true);
        assert!(pass.takes_early(), "local finals start early, busy or not");
        let early = pass.start_early(TranscribeRequest {
            kind: JobKind::Final,
            session: 1,
            audio: Arc::new(vec![0.0; 1600]),
            prompt: String::new(),
            language: "en".into(),
            partial: None,
            guess: None,
        });
        let job = tokio::task::spawn_blocking({
            let queue = queue.clone();
            move || queue.take().expect("the early job is queued")
        })
        .await
        .unwrap();
        assert!(job.speculative(), "queued as a guess");
        let answer = tokio::spawn(early.confirmed());
        let confirmed = async {
            while job.speculative() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), confirmed)
            .await
            .expect("waiting for its answer confirms the guess");
        job.reply
            .send(Ok(Transcript {
                text: "hello".into(),
                ..Transcript::default()
            }))
            .unwrap();
        assert_eq!(answer.await.unwrap().unwrap().text, "hello");
    }
}
