//! The session loop: one `select!` over results, input, shutdown and the clocks.
//!
//! Backpressure: while [`Config::max_pending_finals`] finals are outstanding the loop does not
//! read the socket. Frames then wait in the kernel's buffers, the client's TCP window closes
//! and its sends block: a file sent at full speed is paced to the engine, not refused, and
//! one session's audio never piles up in server memory.
//!
//! [`Config::max_pending_finals`]: crate::config::Config::max_pending_finals

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, Stream, StreamExt};
use tokio::sync::mpsc;

use super::input::Input;
use super::limits::Clocks;
use super::outbox::Outbox;
use super::{Outcome, Session, SessionDeps, StreamParams};
use crate::protocol::{close, ProtocolError, ServerMessage};

/// During a shutdown drain, audio is still read for this fraction of the grace period (a
/// quarter); the rest is left for the finals, which on a loaded machine take several seconds
/// (the deploy test lost finals when half of a 10 s grace went to reading).
const DRAIN_INPUT_SHARE: u32 = 4;

/// How long a closing session waits for the client's close frame.
pub(super) const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Early local texts waiting to be sent; more only happen with many finals outstanding, and
/// a dropped preview costs nothing (the final follows).
const PREVIEW_CAPACITY: usize = 16;

/// Why the loop is finishing.
#[derive(Debug, PartialEq)]
enum Ending {
    Eof,
    /// No audio for `IDLE_TIMEOUT_MS`. Soft: audio that arrives before the session has closed
    /// (a network stall that outlasted the timeout) resumes it with a new utterance.
    Idle,
    /// A shutdown drain: input is still read for the first quarter of the grace period.
    Shutdown,
    /// A limit ran out; the error is sent after the last final.
    Limit(ProtocolError),
}

/// The session loop.
pub(super) async fn run_inner<Si, St, E>(
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
    let mut clocks = Clocks::new(&config);
    let shutdown = session.deps.shutdown.clone();
    let max_pending = config.max_pending_finals as usize;
    let mut ending: Option<Ending> = None;
    // False once input is over for good (eof, a limit, the end of a drain's input window).
    let mut accepting = true;
    let mut drain_cutoff: Option<tokio::time::Instant> = None;
    let mut grace_deadline: Option<tokio::time::Instant> = None;
    let mut was_blocked = false;

    let outcome = loop {
        if ending.is_some() && session.finals.is_empty() && session.pipeline.current().is_none() {
            break match ending {
                Some(Ending::Limit(ref e)) => Outcome::Limited(e.code()),
                _ => Outcome::Completed,
            };
        }
        let blocked = session.finals.len() >= max_pending;
        if blocked != was_blocked {
            tracing::debug!(blocked, pending = session.finals.len(), "backpressure");
            if !blocked {
                clocks.resumed();
            }
            was_blocked = blocked;
        }
        let reading = accepting && !blocked;
        // Biased: deliver results before reading more input, so finals are never starved;
        // previews before finals, so an utterance's early local text precedes its final.
        tokio::select! {
            biased;
            // The writer gave up (a client that stopped reading, a broken socket): the
            // session ends and drops the socket. Without this it would go on reading and
            // transcribing audio for a client that can never receive the results.
            _ = outbox.gone() => break Outcome::ClientGone,
            Some(preview) = preview_rx.recv() => session.send_preview(preview).await,
            Some(result) = session.finals.next() => session.send_final(result).await,
            done = session.partials.next() => session.on_partial(done).await,
            _ = shutdown.cancelled(), if !matches!(ending, Some(Ending::Shutdown)) => {
                // Audio that has already arrived is transcribed at once and audio still
                // coming is read for a quarter of the grace period; then open utterances are
                // finished and their finals go out before the 1012 close.
                session.take_arrived_audio(&mut stream);
                session.finish_stream();
                let now = tokio::time::Instant::now();
                let grace = config.shutdown_grace();
                ending = Some(Ending::Shutdown);
                drain_cutoff = Some(now + grace / DRAIN_INPUT_SHARE);
                grace_deadline = Some(now + grace);
            }
            _ = sleep_until_opt(grace_deadline) => break Outcome::GraceExpired,
            _ = sleep_until_opt(drain_cutoff), if accepting => {
                session.finish_stream();
                accepting = false;
            }
            msg = stream.next(), if reading => {
                let Some(Ok(msg)) = msg else { break Outcome::ClientGone };
                match session.on_message(msg, ending == Some(Ending::Eof)) {
                    Ok(Input::Audio) => {
                        clocks.audio(session.heard_speech());
                        if ending == Some(Ending::Idle) {
                            tracing::info!("audio after the idle timeout: session resumes");
                            ending = None;
                        }
                    }
                    Ok(Input::Eof) if ending == Some(Ending::Shutdown) => accepting = false,
                    // Reading goes on after eof, so that audio sent after it is refused
                    // with `after_eof` rather than silently dropped.
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
            expired = clocks.expired(reading), if ending.is_none() => {
                session.finish_stream();
                match expired.error(&config) {
                    None => {
                        tracing::info!(idle_ms = config.idle_timeout_ms, "no audio: ending session");
                        ending = Some(Ending::Idle);
                    }
                    Some(e) => {
                        tracing::info!(code = e.code(), "session limit reached");
                        session.deps.metrics.refusal(e.code());
                        ending = Some(Ending::Limit(e));
                        accepting = false;
                        grace_deadline =
                            Some(tokio::time::Instant::now() + config.shutdown_grace());
                    }
                }
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
        Some(Ending::Limit(e)) if matches!(outcome, Outcome::Limited(_)) => fail(&outbox, &e).await,
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

pub(super) async fn fail(outbox: &Outbox, e: &ProtocolError) {
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
