//! One WebSocket connection, from `ready` to close.
//!
//! The reader loop is the only owner of the session's state: it decodes audio, runs the
//! segmenter, schedules partials (at most one in flight, latest audio wins) and queues one
//! final-pass future per utterance in a `FuturesOrdered`, which yields them in utterance
//! order however the engine or OpenAI finish. Everything it sends goes through the
//! [`outbox::Outbox`]. The loop is generic over the socket's two halves, so tests drive it
//! with channels and a scripted engine under a paused clock (`tests.rs`).

pub mod outbox;
pub mod params;
pub mod partials;
pub mod pipeline;
pub mod stable;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, Sink, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::audio::samples_to_ms;
use crate::captions::CaptionHub;
use crate::config::Config;
use crate::engine::Transcript;
use crate::engine::{Engine, EngineError, FinalPass, FinalRequest, FinalResult, Preview};
use crate::metrics::Metrics;
use crate::protocol::{self, close, ClientMessage, ProtocolError, ServerMessage};
use crate::storage::{FinalRecord, Recorder};
use crate::vad::{SegmentEvent, SegmenterConfig, WebRtcVad};

use outbox::Outbox;
pub use params::{RawQuery, StreamParams};
use partials::{Answer, Partials, Ticket};
use pipeline::AudioPipeline;
use stable::Agreement;

/// Audio frames already received that a draining session still takes (a second of 20 ms
/// frames is 50; a burst sent at once may be a few large ones).
const DRAIN_FRAMES: usize = 256;
/// How long a closing session waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Characters of earlier finals passed to whisper as the prompt.
const PROMPT_CHARS: usize = 200;
/// Early local texts waiting to be sent; more only happen with many finals outstanding, and
/// a dropped preview costs nothing (the final follows).
const PREVIEW_CAPACITY: usize = 16;

/// Everything a session needs from the server.
#[derive(Clone)]
pub struct SessionDeps {
    pub config: Arc<Config>,
    /// Partials go straight to the engine; finals through the final pass.
    pub engine: Engine,
    pub final_pass: FinalPass,
    pub metrics: Arc<Metrics>,
    pub captions: Arc<CaptionHub>,
    /// Finals are stored through it before they are sent.
    pub recorder: Recorder,
    pub shutdown: CancellationToken,
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every final was sent (after `eof`, the idle timeout or a shutdown drain).
    Completed,
    /// Shutdown's grace period ran out before every final was sent.
    GraceExpired,
    /// The connection broke or ended without a close frame.
    ClientGone,
    /// The client sent a close frame.
    ClientClosed,
    /// The client broke the protocol; the code is the `error.code` it was sent.
    ClientError(&'static str),
    /// Refused before it started (bad parameters, or the pipeline could not be built).
    Rejected(&'static str),
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::GraceExpired => "grace expired",
            Outcome::ClientGone => "client gone",
            Outcome::ClientClosed => "client closed",
            Outcome::ClientError(code) | Outcome::Rejected(code) => code,
        }
    }
}

/// Why the reader loop stopped taking input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Eof,
    Idle,
    Shutdown,
}

type FinalFuture = Pin<Box<dyn Future<Output = FinalResult> + Send>>;

struct Session {
    id: Arc<str>,
    deps: SessionDeps,
    params: StreamParams,
    pipeline: AudioPipeline<WebRtcVad>,
    outbox: Outbox,
    finals: FuturesOrdered<FinalFuture>,
    previews: mpsc::Sender<Preview>,
    /// The last utterance whose final was sent; later previews of it are stale.
    last_final: Option<u64>,
    /// Committed partial text of ended utterances whose finals are not out yet.
    closing: BTreeMap<u64, Agreement>,
    partials: Partials,
    recent_finals: VecDeque<String>,
    audio_received: bool,
}

/// Runs a session to its end over the socket's sending and receiving halves. `params` come
/// from the query string.
pub async fn run<Si, St, E>(
    sink: Si,
    stream: St,
    params: StreamParams,
    deps: SessionDeps,
) -> Outcome
where
    Si: Sink<Message> + Unpin + Send + 'static,
    Si::Error: std::fmt::Display,
    St: Stream<Item = Result<Message, E>> + Unpin + Send,
{
    let id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let span = tracing::info_span!("session", id = &id[..8]);
    async move {
        let started = Instant::now();
        deps.metrics.session_opened();
        deps.recorder
            .session_opened(&id, "live", &params.to_json())
            .await;
        deps.captions.open(&id);
        let outcome = run_inner(sink, stream, params, deps.clone(), id.clone()).await;
        deps.captions.close(&id);
        deps.recorder.session_closed(&id, outcome.as_str()).await;
        deps.metrics.session_closed();
        tracing::info!(
            ended = outcome.as_str(),
            secs = started.elapsed().as_secs_f32(),
            "session ended"
        );
        outcome
    }
    .instrument(span)
    .await
}

/// The session loop.
async fn run_inner<Si, St, E>(
    sink: Si,
    mut stream: St,
    params: StreamParams,
    deps: SessionDeps,
    id: Arc<str>,
) -> Outcome
where
    Si: Sink<Message> + Unpin + Send + 'static,
    Si::Error: std::fmt::Display,
    St: Stream<Item = Result<Message, E>> + Unpin + Send,
{
    let (outbox, writer) = Outbox::spawn(sink, id.clone(), deps.captions.clone());
    let (preview_tx, mut preview_rx) = mpsc::channel(PREVIEW_CAPACITY);
    let mut session = match Session::new(id, params, deps, outbox.clone(), preview_tx) {
        Ok(s) => s,
        Err(e) => {
            fail(&outbox, &e).await;
            drop(outbox);
            let _ = writer.await;
            return Outcome::Rejected(e.code());
        }
    };
    session.send_ready().await;
    let config = session.deps.config.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(
        config.partial_interval_ms.max(50) as u64
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let idle = tokio::time::sleep(config.idle_timeout());
    tokio::pin!(idle);
    let shutdown = session.deps.shutdown.clone();
    let mut ending: Option<Ending> = None;
    let mut grace_deadline: Option<tokio::time::Instant> = None;

    let outcome = loop {
        if ending.is_some() && session.finals.is_empty() {
            break Outcome::Completed;
        }
        // Biased: deliver results before reading more input, so finals are never starved;
        // previews before finals, so an utterance's early local text precedes its final.
        tokio::select! {
            biased;
            Some(preview) = preview_rx.recv() => session.send_preview(preview).await,
            Some(result) = session.finals.next() => session.send_final(result).await,
            done = session.partials.next() => session.on_partial(done).await,
            _ = shutdown.cancelled(), if ending.is_none() => {
                // Audio that has already arrived is still transcribed; then open utterances
                // are finished and their finals go out before the 1012 close.
                session.take_arrived_audio(&mut stream);
                session.finish_stream();
                ending = Some(Ending::Shutdown);
                grace_deadline = Some(tokio::time::Instant::now() + config.shutdown_grace());
            }
            _ = sleep_until_opt(grace_deadline) => break Outcome::GraceExpired,
            msg = stream.next(), if ending != Some(Ending::Shutdown) => {
                let Some(Ok(msg)) = msg else { break Outcome::ClientGone };
                match session.on_message(msg, ending.is_some()) {
                    Ok(Input::Audio) => idle.as_mut().reset(tokio::time::Instant::now() + config.idle_timeout()),
                    Ok(Input::Eof) => ending = Some(Ending::Eof),
                    Ok(Input::Restarted) => session.send_ready().await,
                    Ok(Input::None) => {}
                    Ok(Input::Closed) => break Outcome::ClientClosed,
                    Err(e) => {
                        fail(&outbox, &e).await;
                        break Outcome::ClientError(e.code());
                    }
                }
            }
            _ = &mut idle, if ending.is_none() => {
                tracing::info!(idle_ms = config.idle_timeout_ms, "no audio: ending session");
                session.finish_stream();
                ending = Some(Ending::Idle);
            }
            _ = tick.tick(), if ending.is_none() => session.maybe_request_partial(),
        }
    };
    match ending {
        Some(Ending::Shutdown) => {
            outbox
                .close(close::SERVICE_RESTART, "server restarting")
                .await
        }
        Some(_) if outcome == Outcome::Completed => {
            outbox.send(&ServerMessage::Done).await;
            outbox.close(close::NORMAL, "done").await;
        }
        _ => {}
    }
    drop(session);
    drop(outbox);
    let _ = writer.await;
    if !matches!(outcome, Outcome::ClientGone | Outcome::ClientClosed) {
        linger(&mut stream).await;
    }
    outcome
}

/// After our close frame, reads (and discards) what the client still sends until its close
/// frame arrives. Dropping a socket with unread data makes the kernel send a reset, and the
/// browser then reports 1006 instead of our close code.
async fn linger<St, E>(stream: &mut St)
where
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    let drain = async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
}

async fn fail(outbox: &Outbox, e: &ProtocolError) {
    tracing::info!(code = e.code(), error = %e, "closing session on client error");
    outbox.send(&e.to_message()).await;
    outbox.close(e.close_code(), e.code()).await;
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

enum Input {
    Audio,
    Eof,
    Restarted,
    Closed,
    None,
}

impl Session {
    fn new(
        id: Arc<str>,
        params: StreamParams,
        deps: SessionDeps,
        outbox: Outbox,
        previews: mpsc::Sender<Preview>,
    ) -> Result<Self, ProtocolError> {
        let pipeline = Self::pipeline(&params, &deps.config)?;
        Ok(Self {
            id,
            deps,
            params,
            pipeline,
            outbox,
            finals: FuturesOrdered::new(),
            previews,
            last_final: None,
            closing: BTreeMap::new(),
            partials: Partials::default(),
            recent_finals: VecDeque::new(),
            audio_received: false,
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

    async fn send_ready(&mut self) {
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

    fn on_message(&mut self, msg: Message, after_eof: bool) -> Result<Input, ProtocolError> {
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
                        if self.audio_received {
                            return Err(ProtocolError::StartAfterAudio);
                        }
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
    fn take_arrived_audio<St, E>(&mut self, stream: &mut St)
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
    fn finish_stream(&mut self) {
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
                    self.deps.metrics.utterance_finished();
                    self.closing
                        .insert(utterance, self.partials.utterance_ended());
                    let request = FinalRequest {
                        utterance,
                        start_ms: samples_to_ms(start_sample),
                        end_ms: samples_to_ms(end_sample),
                        audio: Arc::new(audio),
                        prompt: self.prompt(),
                        language: self.params.language.clone(),
                        closed_at: Instant::now(),
                    };
                    let pass = self.deps.final_pass.clone();
                    let previews = self.previews.clone();
                    self.finals.push_back(Box::pin(pass.run(request, previews)));
                }
            }
        }
    }

    fn prompt(&self) -> String {
        prompt_from(&self.recent_finals)
    }

    /// Sends an utterance's early local text as its last partial, unless its final is out.
    async fn send_preview(&mut self, preview: Preview) {
        if self.last_final.is_some_and(|n| n >= preview.utterance) {
            return;
        }
        let shown = self
            .closing
            .get(&preview.utterance)
            .map(|a| a.with_text(&preview.text))
            .unwrap_or(stable::Shown {
                stable: String::new(),
                text: preview.text,
            });
        let message = ServerMessage::Partial {
            utterance: preview.utterance,
            text: shown.text,
            stable: shown.stable,
            start_ms: preview.start_ms,
            end_ms: preview.end_ms,
        };
        self.outbox.send(&message).await;
    }

    async fn send_final(&mut self, result: FinalResult) {
        self.last_final = Some(result.utterance);
        self.closing.retain(|&n, _| n > result.utterance);
        let message = result.to_message();
        if !result.text.is_empty() {
            self.recent_finals.push_back(result.text.clone());
            if self.recent_finals.len() > 4 {
                self.recent_finals.pop_front();
            }
        }
        if result.failure.is_none() {
            self.deps
                .metrics
                .observe_final_latency(result.closed_at.elapsed(), result.source);
        }
        // Stored before it is sent: a client that saw a final can always read it back.
        if let Some(record) = FinalRecord::from_message(&message) {
            self.deps.recorder.final_ready(&self.id, &record).await;
        }
        self.outbox.send(&message).await;
    }

    fn maybe_request_partial(&mut self) {
        let language = self.params.language.clone();
        let recent = &self.recent_finals;
        let prompt = || prompt_from(recent);
        let Some((request, ticket)) = self
            .partials
            .due(self.pipeline.current(), prompt, &language)
        else {
            return;
        };
        let engine = self.deps.engine.clone();
        // A full engine answers a partial with `Shed` at once (counted in `on_partial`).
        let reply = Box::pin(async move { engine.transcribe(request).await });
        self.partials.submitted(ticket, reply);
    }

    async fn on_partial(&mut self, done: (Ticket, Result<Transcript, EngineError>)) {
        let open = self.pipeline.current().map(|(n, _, _)| n);
        match self.partials.answer(done, open) {
            Answer::Send(message, lag) => {
                self.deps.metrics.observe_partial_latency(lag);
                self.outbox.send(&message).await;
            }
            Answer::Shed => self.deps.metrics.partial_shed(),
            Answer::Nothing => {}
        }
    }
}

/// The last [`PROMPT_CHARS`] characters of the session's recent finals.
fn prompt_from(recent_finals: &VecDeque<String>) -> String {
    let joined = recent_finals
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let skip = joined.chars().count().saturating_sub(PROMPT_CHARS);
    joined.chars().skip(skip).collect()
}
