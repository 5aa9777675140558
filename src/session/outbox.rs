//! The session's outgoing side: a writer task that owns the WebSocket sink.
//!
//! Everything a session sends goes through one bounded channel, so messages from the reader
//! loop and from final-pass tasks keep a single order, a slow client pushes back on the
//! session instead of growing memory, and every sent message also reaches the caption feed.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::captions::CaptionHub;
use crate::protocol::ServerMessage;

/// Messages queued for one client before the session waits for it to read.
const OUTBOX_CAPACITY: usize = 64;
/// A client that accepts no data for this long is treated as gone.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the final flush and close of the socket may take; a client that stopped reading
/// would otherwise hold the writer (and its socket) forever.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

enum Outbound {
    Text(String),
    Close(u16, String),
}

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    session: Arc<str>,
    captions: Arc<CaptionHub>,
}

impl Outbox {
    /// Starts the writer task for `sink` (the WebSocket's sending half, or a test double).
    pub fn spawn<S>(sink: S, session: Arc<str>, captions: Arc<CaptionHub>) -> (Self, JoinHandle<()>)
    where
        S: Sink<Message> + Unpin + Send + 'static,
        S::Error: std::fmt::Display,
    {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let writer = tokio::spawn(write_loop(sink, rx));
        (
            Self {
                tx,
                session,
                captions,
            },
            writer,
        )
    }

    /// Queues a message; false when the client is gone.
    pub async fn send(&self, msg: &ServerMessage) -> bool {
        if matches!(
            msg,
            ServerMessage::Partial { .. } | ServerMessage::Final { .. } | ServerMessage::Done
        ) {
            self.captions.publish(&self.session, msg);
        }
        self.tx.send(Outbound::Text(msg.to_json())).await.is_ok()
    }

    /// Resolves once the writer has stopped: after a close frame, a failed write, or a client
    /// that accepted nothing for [`WRITE_TIMEOUT`]. Nothing can reach the client any more.
    pub async fn gone(&self) {
        self.tx.closed().await
    }

    /// Queues a close frame; the writer stops after sending it.
    pub async fn close(&self, code: u16, reason: &str) {
        let _ = self
            .tx
            .send(Outbound::Close(code, reason.to_string()))
            .await;
    }
}

async fn write_loop<S>(mut sink: S, mut rx: mpsc::Receiver<Outbound>)
where
    S: Sink<Message> + Unpin,
    S::Error: std::fmt::Display,
{
    while let Some(out) = rx.recv().await {
        let (message, last) = match out {
            Outbound::Text(text) => (Message::Text(text.into()), false),
            Outbound::Close(code, reason) => (
                Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })),
                true,
            ),
        };
        match tokio::time::timeout(WRITE_TIMEOUT, sink.send(message)).await {
            Ok(Ok(())) if !last => {}
            Ok(Ok(())) => break,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "client write failed");
                break;
            }
            Err(_) => {
                tracing::warn!("client stopped reading; dropping connection");
                break;
            }
        }
    }
    // Flush the close frame (if any) before the socket drops.
    if tokio::time::timeout(CLOSE_TIMEOUT, sink.close())
        .await
        .is_err()
    {
        tracing::debug!("socket close timed out");
    }
}
