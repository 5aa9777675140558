//! `GET /ws`: admission (model ready, session limit, valid parameters), then the session.
//!
//! Refusals happen after the upgrade, as an `error` message and a close code, because a
//! browser's WebSocket API cannot read an HTTP error response.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::Uri;
use axum::response::Response;

use std::net::IpAddr;

use super::auth::ClientIp;
use super::AppState;
use crate::protocol::{ProtocolError, ServerMessage};
use futures_util::StreamExt;

use crate::session::{self, RawQuery, SessionDeps, StreamParams};

/// tungstenite's own limit, above the configured one so that an oversized message still
/// reaches the session and gets a proper `frame_too_large` error.
const TRANSPORT_LIMIT_FACTOR: usize = 4;
/// Outgoing bytes tungstenite may hold for a client that does not read. Uncapped, it keeps
/// the automatic pong to every ping of a client that pings and never reads, without end. Our
/// own messages are small and bounded by the outbox, so a reading client never gets near it;
/// past it, pongs are dropped and the session's next message fails, which ends the session.
/// Above tungstenite's 128 KiB write buffer, as it requires.
const MAX_WRITE_BUFFER_BYTES: usize = 1 << 20;

pub async fn upgrade(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let limit = state
        .config
        .max_frame_bytes
        .saturating_mul(TRANSPORT_LIMIT_FACTOR);
    // Every field is optional and validated by the session, so a malformed query string
    // just means defaults (and the `ready` message shows what was used).
    let query = Query::<RawQuery>::try_from_uri(&uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| admit(socket, query, client, state))
}

async fn admit(socket: WebSocket, query: RawQuery, client: Option<IpAddr>, state: AppState) {
    if state.shutdown.is_cancelled() {
        return refuse(socket, refused(&state, ProtocolError::ShuttingDown)).await;
    }
    let (Some(engine), Some(final_pass)) = (state.engine.get(), state.final_pass.get()) else {
        return refuse(socket, refused(&state, ProtocolError::NotReady)).await;
    };
    let Ok(permit) = state.sessions.clone().try_acquire_owned() else {
        state.metrics.session_rejected();
        let busy = ProtocolError::ServerBusy(state.config.max_sessions);
        return refuse(socket, refused(&state, busy)).await;
    };
    // Taken after the global permit, so a full server reports server_busy to everyone.
    let ip_permit = match client.map(|ip| state.access.per_ip.try_acquire(ip)) {
        Some(None) => {
            tracing::info!(client = ?client, "session refused: MAX_SESSIONS_PER_IP reached");
            let limit = ProtocolError::IpLimit(state.access.per_ip.max());
            return refuse(socket, refused(&state, limit)).await;
        }
        Some(Some(permit)) => Some(permit),
        None => None,
    };
    let params = match StreamParams::from_query(&query, &state.config.language) {
        Ok(p) => p,
        Err(e) => return refuse(socket, e).await,
    };
    let deps = SessionDeps {
        config: state.config.clone(),
        engine: engine.handle(),
        final_pass: final_pass.clone(),
        metrics: state.metrics.clone(),
        captions: state.captions.clone(),
        recorder: state.recorder.clone(),
        shutdown: state.shutdown.clone(),
    };
    // Tracked so shutdown waits for the session to send its finals and close.
    state.tracker.spawn(async move {
        let (sink, stream) = socket.split();
        session::run(sink, stream, params, deps).await;
        drop(permit);
        drop(ip_permit);
    });
}

/// Counts a refusal by the server's own limits or state (`whisper_refusals_total`); bad
/// parameters are the client's error and are not counted.
fn refused(state: &AppState, error: ProtocolError) -> ProtocolError {
    state.metrics.refusal(error.code());
    error
}

async fn refuse(mut socket: WebSocket, error: ProtocolError) {
    let msg = ServerMessage::Error {
        code: error.code().into(),
        message: error.to_string(),
        utterance: None,
    };
    let _ = socket.send(Message::Text(msg.to_json().into())).await;
    let frame = CloseFrame {
        code: error.close_code(),
        reason: error.code().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
