//! One audio file through the live pipeline: decode → 16 kHz → VAD utterances → final pass.
//!
//! Decoding, resampling and segmenting are synchronous and run on a blocking thread, which
//! hands finished utterances over a small bounded channel, so a long file is never held as
//! samples and never sent upstream whole. Each utterance goes through the same
//! [`FinalPass`] as a live one (local model; with `PRIMARY_SERVICE=openai` the upstream
//! deadline, retries, breaker and fallback), several at once but yielded in order.
//! Dropping the stream (the client went away) stops the job: the pending passes are
//! dropped, which cancels their engine jobs, and the decoder stops at its next send.

use std::sync::Arc;
use tokio::time::Instant;

use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::mpsc;

use crate::audio::decode::{DecodeError, FileDecoder};
use crate::audio::resample::StreamResampler;
use crate::audio::samples_to_ms;
use crate::engine::openai::FallbackReason;
use crate::engine::{FinalPass, FinalRequest, FinalResult};
use crate::vad::{SegmentEvent, Segmenter, SegmenterConfig, WebRtcVad};

/// What a file job needs from the server.
#[derive(Clone)]
pub struct FileJob {
    pub final_pass: FinalPass,
    pub segmenter: SegmenterConfig,
    pub vad_aggressiveness: u8,
    /// Utterances transcribed at once (the local engine's workers).
    pub concurrency: usize,
    pub language: String,
    /// The client's `prompt`, given to every utterance (they run in parallel, so earlier
    /// finals cannot be the prompt as they are live).
    pub prompt: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JobError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("cannot resample the file: {0}")]
    Resample(String),
    /// OpenAI failed on an utterance and local fallback is disabled.
    #[error("the upstream transcription failed ({0}) and local fallback is disabled")]
    Upstream(FallbackReason),
}

/// What the job yields, in order: each utterance's final, then the file's length.
#[derive(Debug)]
pub enum JobEvent {
    Final(FinalResult),
    Done { duration_ms: u64 },
}

impl FileJob {
    /// Runs the job over an opened file; the stream ends after `Done` or the first error.
    pub fn run(self, decoder: FileDecoder) -> impl Stream<Item = Result<JobEvent, JobError>> {
        let (tx, rx) = mpsc::channel::<FinalRequest>(self.concurrency.max(1));
        let segmenter = self.segmenter;
        let aggressiveness = self.vad_aggressiveness;
        let (language, prompt) = (self.language.clone(), self.prompt.clone());
        let cutter = tokio::task::spawn_blocking(move || {
            cut(decoder, segmenter, aggressiveness, &language, &prompt, tx)
        });
        // Nobody reads early local texts of a file: the final follows at once.
        let (previews, _) = mpsc::channel(1);
        let pass = self.final_pass.clone();
        let finals = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
            .map(move |request| pass.clone().run(request, previews.clone()))
            .buffered(self.concurrency.max(1))
            .map(|result| match result.failure {
                Some(reason) => Err(JobError::Upstream(reason)),
                None => Ok(JobEvent::Final(result)),
            });
        let end = stream::once(async move {
            match cutter.await {
                Ok(Ok(samples)) => Ok(JobEvent::Done {
                    duration_ms: samples_to_ms(samples),
                }),
                Ok(Err(e)) => Err(e),
                Err(e) => {
                    tracing::error!(error = %e, "file decoder task failed");
                    Err(JobError::Decode(DecodeError::NoAudio))
                }
            }
        });
        // Stop after the first error: later utterances would only be a partial transcript.
        finals.chain(end).scan(false, |failed, item| {
            let stop = *failed;
            *failed |= item.is_err();
            std::future::ready((!stop).then_some(item))
        })
    }
}

/// The blocking half: decodes, resamples and segments the whole file, sending each
/// utterance as it closes. Returns the file's length in 16 kHz samples.
fn cut(
    mut decoder: FileDecoder,
    config: SegmenterConfig,
    aggressiveness: u8,
    language: &str,
    prompt: &str,
    tx: mpsc::Sender<FinalRequest>,
) -> Result<u64, JobError> {
    let mut resampler = StreamResampler::new(decoder.sample_rate())
        .map_err(|e| JobError::Resample(e.to_string()))?;
    let mut segmenter = Segmenter::new(WebRtcVad::new(aggressiveness), config);
    let (mut chunk, mut resampled) = (Vec::new(), Vec::new());
    let mut total = 0u64;
    loop {
        chunk.clear();
        resampled.clear();
        let more = decoder.next_chunk(&mut chunk)?;
        if more {
            resampler.process(&chunk, &mut resampled);
        } else {
            resampler.finish(&mut resampled);
        }
        total += resampled.len() as u64;
        let mut events = segmenter.push(&resampled);
        if !more {
            events.extend(segmenter.flush());
        }
        for event in events {
            let SegmentEvent::Ended {
                utterance,
                start_sample,
                end_sample,
                audio,
                ..
            } = event
            else {
                continue;
            };
            let request = FinalRequest {
                session: 0,
                utterance,
                start_ms: samples_to_ms(start_sample),
                end_ms: samples_to_ms(end_sample),
                audio: Arc::new(audio),
                prompt: prompt.to_string(),
                language: language.to_string(),
                closed_at: Instant::now(),
                early: None,
            };
            if tx.blocking_send(request).is_err() {
                // The stream was dropped: the client is gone.
                return Ok(total);
            }
        }
        if !more {
            return Ok(total);
        }
    }
}
