//! What each client message does to the session: audio through the pipeline into
//! utterances (each ended one queues its final pass), `start`, `flush`, `eof`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

use axum::extract::ws::Message;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;

use super::outbox::Outbox;
use super::partials::Partials;
use super::pipeline::AudioPipeline;
use super::{Session, SessionDeps, StreamParams, NEXT_KEY};
use crate::audio::samples_to_ms;
use crate::config::Config;
use crate::engine::{FinalRequest, JobKind, Preview, TranscribeRequest};
use crate::protocol::{self, ClientMessage, ProtocolError, ServerMessage};
use crate::vad::{SegmentEvent, SegmenterConfig, WebRtcVad};

/// Audio frames already received that a draining session takes at once (a second of 20 ms
/// frames is 50; a burst sent at once may be a few large ones).
const DRAIN_FRAMES: usize = 256;

/// What a message meant for the loop.
pub(super) enum Input {
    Audio,
    Eof,
    Restarted,
    Closed,
    None,
}

impl Session {
    pub(super) fn new(
        id: Arc<str>,
        params: StreamParams,
        deps: SessionDeps,
        outbox: Outbox,
        previews: mpsc::Sender<Preview>,
    ) -> Result<Self, ProtocolError> {
        let pipeline = Self::pipeline(&params, &deps.config)?;
        Ok(Self {
            id,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            deps,
            params,
            pipeline,
            outbox,
            finals: FuturesOrdered::new(),
            previews,
            last_final: None,
            closing: BTreeMap::new(),
            partials: Partials::default(),
            early: Default::default(),
            recent_finals: VecDeque::new(),
            audio_received: false,
            started: false,
            speech_seen: false,
            partial_owed: false,
        })
    }

    fn pipeline(
        params: &StreamParams,
        config: &Config,
    ) -> Result<AudioPipeline<WebRtcVad>, ProtocolError> {
        let segmenter = SegmenterConfig {
            min_speech_ms: config.vad_min_speech_ms,
            preroll_ms: config.vad_preroll_ms,
            silence_ms: config.vad_silence_ms,
            max_utterance_ms: config.max_utterance_ms,
        };
        AudioPipeline::new(params, WebRtcVad::new(config.vad_aggressiveness), segmenter).map_err(
            |e| {
                tracing::error!(error = %e, "resampler construction failed");
                ProtocolError::Internal
            },
        )
    }

    pub(super) async fn send_ready(&mut self) {
        let config = &self.deps.config;
        let ready = ServerMessage::Ready {
            session: self.id.to_string(),
            protocol: protocol::PROTOCOL_VERSION,
            sample_rate: self.params.sample_rate,
            encoding: self.params.encoding,
            channels: self.params.channels,
            language: self.params.language.clone(),
            vad_silence_ms: config.vad_silence_ms,
            idle_timeout_ms: config.idle_timeout_ms,
        };
        self.outbox.send(&ready).await;
    }

    pub(super) fn on_message(
        &mut self,
        msg: Message,
        after_eof: bool,
    ) -> Result<Input, ProtocolError> {
        let max = self.deps.config.max_frame_bytes;
        match msg {
            Message::Binary(bytes) => {
                if after_eof {
                    return Err(ProtocolError::AfterEof);
                }
                if bytes.len() > max {
                    return Err(ProtocolError::FrameTooLarge {
                        got: bytes.len(),
                        max,
                    });
                }
                self.audio_received = true;
                let events = self.pipeline.push(&bytes);
                self.on_segments(events);
                self.maybe_start_early_final();
                let due_now = self.partial_owed || self.partials.awaiting_first();
                if due_now && !self.pipeline.pausing() {
                    self.maybe_request_partial();
                }
                Ok(Input::Audio)
            }
            Message::Text(text) => {
                if text.len() > max {
                    return Err(ProtocolError::FrameTooLarge {
                        got: text.len(),
                        max,
                    });
                }
                if after_eof {
                    return Err(ProtocolError::AfterEof);
                }
                match protocol::parse_client_text(&text)? {
                    ClientMessage::Start(patch) => {
                        if self.started {
                            return Err(ProtocolError::StartRepeated);
                        }
                        if self.audio_received {
                            return Err(ProtocolError::StartAfterAudio);
                        }
                        self.started = true;
                        self.params.apply(&patch)?;
                        self.pipeline = Self::pipeline(&self.params, &self.deps.config)?;
                        Ok(Input::Restarted)
                    }
                    ClientMessage::Flush => {
                        let event = self.pipeline.flush();
                        self.on_segments(event.into_iter().collect());
                        Ok(Input::None)
                    }
                    ClientMessage::Eof => {
                        self.finish_stream();
                        Ok(Input::Eof)
                    }
                }
            }
            Message::Close(_) => Ok(Input::Closed),
            Message::Ping(_) | Message::Pong(_) => Ok(Input::None),
        }
    }

    /// Feeds the audio frames that are already waiting on the socket (at most
    /// [`DRAIN_FRAMES`]), without waiting for more.
    pub(super) fn take_arrived_audio<St, E>(&mut self, stream: &mut St)
    where
        St: Stream<Item = Result<Message, E>> + Unpin,
    {
        for _ in 0..DRAIN_FRAMES {
            let Some(Some(Ok(msg @ Message::Binary(_)))) = stream.next().now_or_never() else {
                return;
            };
            if self.on_message(msg, false).is_err() {
                return;
            }
        }
    }

    /// End of input: the open utterance (and the resampler's tail) becomes a final.
    pub(super) fn finish_stream(&mut self) {
        let events = self.pipeline.finish();
        self.on_segments(events);
    }

    fn on_segments(&mut self, events: Vec<SegmentEvent>) {
        for event in events {
            match event {
                SegmentEvent::Started {
                    utterance,
                    start_sample,
                } => {
                    tracing::debug!(
                        utterance,
                        start_ms = samples_to_ms(start_sample),
                        "utterance started"
                    );
                    self.speech_seen = true;
                    self.partials.utterance_started();
                }
                SegmentEvent::Ended {
                    utterance,
                    start_sample,
                    end_sample,
                    audio,
                    reason,
                } => {
                    tracing::debug!(
                        utterance,
                        ?reason,
                        secs = audio.len() as f32 / 16_000.0,
                        "utterance ended"
                    );
                    self.speech_seen = true;
                    self.deps.metrics.utterance_finished();
                    self.closing
                        .insert(utterance, self.partials.utterance_ended());
                    let prompt = self.prompt();
                    let early =
                        self.early
                            .take(utterance, audio.len(), &prompt, &self.deps.metrics);
                    tracing::debug!(utterance, early = early.is_some(), "final requested");
                    let request = FinalRequest {
                        session: self.key,
                        utterance,
                        start_ms: samples_to_ms(start_sample),
                        end_ms: samples_to_ms(end_sample),
                        audio: Arc::new(audio),
                        prompt,
                        language: self.params.language.clone(),
                        closed_at: Instant::now(),
                        early,
                    };
                    let pass = self.deps.final_pass.clone();
                    let previews = self.previews.clone();
                    self.finals.push_back(Box::pin(pass.run(request, previews)));
                }
            }
        }
        self.partials.sync_live(
            self.pipeline.current().map(|(n, _, audio)| (n, audio)),
            self.pipeline.paused(),
        );
    }

    /// Starts the open utterance's local final once it pauses ([`super::early`]).
    fn maybe_start_early_final(&mut self) {
        let open = self.pipeline.current().map(|(n, _, a)| (n, a.len()));
        if !self
            .early
            .wanted(open, self.pipeline.paused(), &self.deps.metrics)
        {
            return;
        }
        // Asked on every frame of a pause: the audio is copied only when the job will run.
        if !self.deps.final_pass.takes_early() {
            return;
        }
        let Some((utterance, _, audio)) = self.pipeline.current() else {
            return;
        };
        let prompt = self.prompt();
        let request = TranscribeRequest {
            kind: JobKind::Final,
            session: self.key,
            audio: Arc::new(audio.to_vec()),
            prompt: prompt.clone(),
            language: self.params.language.clone(),
            partial: None,
            guess: None,
        };
        let audio_len = request.audio.len();
        let job = self.deps.final_pass.start_early(request);
        self.early.started(utterance, audio_len, prompt, job);
    }

    /// Whether speech was heard since the last call: an utterance is open, or one started or
    /// ended.
    pub(super) fn heard_speech(&mut self) -> bool {
        std::mem::take(&mut self.speech_seen) || self.pipeline.current().is_some()
    }
}
