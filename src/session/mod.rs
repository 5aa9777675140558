//! One WebSocket connection, from `ready` to close.
//!
//! The reader loop ([`event_loop`]) is the only owner of the session's state: it decodes
//! audio, runs the segmenter, schedules partials (at most one in flight, latest audio wins)
//! and queues one final-pass future per utterance in a `FuturesOrdered`, which yields them in
//! utterance order however the engine or OpenAI finish. Everything it sends goes through the
//! [`outbox::Outbox`]. The loop is generic over the socket's two halves, so tests drive it
//! with channels and a scripted engine under a paused clock (`tests.rs`, `limit_tests.rs`).
//!
//! - [`input`]: what each client message does (audio, `start`, `flush`, `eof`).
//! - [`results`]: partials, previews and finals on their way out.
//! - [`limits`]: the session's clocks (idle, no speech, maximum length).

mod early;
mod event_loop;
mod input;
#[cfg(test)]
mod limit_tests;
mod limits;
pub mod outbox;
pub mod params;
pub mod partials;
#[cfg(test)]
mod pause_tests;
pub mod pipeline;
mod results;
#[cfg(test)]
mod socket_tests;
pub mod stable;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Message;
use futures_util::stream::FuturesOrdered;
use futures_util::{Sink, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::captions::CaptionHub;
use crate::config::Config;
use crate::engine::{Engine, FinalPass, FinalResult, Preview, SessionKey};
use crate::metrics::Metrics;
use crate::storage::Recorder;
use crate::vad::WebRtcVad;

use early::EarlyFinals;
use outbox::Outbox;
pub use params::{RawQuery, StreamParams};
use partials::Partials;
use pipeline::AudioPipeline;
use stable::Agreement;

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
    /// The connection broke or ended without a close frame, or the client stopped reading.
    ClientGone,
    /// The client sent a close frame.
    ClientClosed,
    /// The client broke the protocol; the code is the `error.code` it was sent.
    ClientError(&'static str),
    /// A server limit ended it (`MAX_SESSION_MS`, `NO_SPEECH_TIMEOUT_MS`) after every final
    /// was sent; the code is the `error.code` it was sent.
    Limited(&'static str),
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
            Outcome::ClientError(code) | Outcome::Limited(code) | Outcome::Rejected(code) => code,
        }
    }
}

type FinalFuture = Pin<Box<dyn Future<Output = FinalResult> + Send>>;

/// Session keys for the engine queue's round-robin; 0 is left to one-off jobs.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

struct Session {
    id: Arc<str>,
    key: SessionKey,
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
    /// The local final of a pausing utterance, started before the pause ends it.
    early: EarlyFinals,
    recent_finals: VecDeque<String>,
    audio_received: bool,
    /// A `start` message was taken (only one is allowed).
    started: bool,
    /// An utterance started or ended since the loop last asked ([`Session::heard_speech`]).
    speech_seen: bool,
    /// A partial fell due while the speaker paused; it is asked for when speech resumes.
    partial_owed: bool,
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
        // Closes the caption feed however this future ends (completion, panic, or being
        // dropped), so viewers never wait on a feed nobody publishes to.
        let feed = deps.captions.feed(&id);
        let outcome = event_loop::run_inner(sink, stream, params, deps.clone(), id.clone()).await;
        drop(feed);
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
