//! `GET /captions/{session}/events`: a session's captions as Server-Sent Events.
//!
//! SSE rather than a WebSocket because the feed is one-way and `EventSource` reconnects by
//! itself, which is all a caption screen or an OBS browser source needs. Each event's data is
//! the same JSON the session's own client gets (`partial`, `final`, then `done`); the stream
//! ends after `done`. Unknown or finished sessions answer 404, a full session 503.
//!
//! Every stream belongs to an open session and ends when the hub closes it, so these
//! long-lived responses never hold up a graceful shutdown for longer than the sessions do.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use crate::captions::{CaptionMessage, SubscribeError, Subscription};
use crate::http::AppState;
use crate::protocol::ServerMessage;

/// Comment lines sent while nobody speaks, so proxies do not time the stream out.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// How long a disconnected `EventSource` waits before reconnecting.
const CLIENT_RETRY: Duration = Duration::from_secs(2);

/// Session ids are short hex or UUID-like strings; anything longer is not worth a lookup.
const MAX_SESSION_ID_LEN: usize = 64;

pub fn routes() -> Router<AppState> {
    Router::new().route("/captions/{session}/events", get(caption_events))
}

async fn caption_events(State(state): State<AppState>, Path(session): Path<String>) -> Response {
    if session.len() > MAX_SESSION_ID_LEN {
        return (StatusCode::NOT_FOUND, SubscribeError::NotFound.to_string()).into_response();
    }
    let subscription = match state.captions.subscribe(&session) {
        Ok(subscription) => subscription,
        Err(err @ SubscribeError::NotFound) => {
            return (StatusCode::NOT_FOUND, err.to_string()).into_response()
        }
        Err(err @ SubscribeError::TooManyViewers(_)) => {
            return (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response()
        }
    };
    tracing::debug!(session = %session, "caption viewer subscribed");
    let mut response = Sse::new(event_stream(subscription))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL))
        .into_response();
    // nginx buffers proxied responses unless told not to, which would hold captions back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The backlog, then live messages until `done` or the session's end.
fn event_stream(subscription: Subscription) -> impl Stream<Item = Result<Event, Infallible>> {
    let Subscription { backlog, receiver } = subscription;
    let retry = stream::once(async { Ok(Event::default().retry(CLIENT_RETRY)) });
    let backlog = stream::iter(backlog.into_iter().map(|msg| Ok(to_event(&msg))));
    let live = stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        loop {
            match receiver.recv().await {
                Ok(msg) => {
                    let event = to_event(&msg);
                    // After `done` the stream ends, so the browser's EventSource sees a clean end.
                    let next = if matches!(*msg, ServerMessage::Done) {
                        None
                    } else {
                        Some(receiver)
                    };
                    return Some((Ok(event), next));
                }
                // A slow viewer skips what it missed: captions are only worth showing live.
                Err(RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, "caption viewer lagged")
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    retry.chain(backlog).chain(live)
}

fn to_event(msg: &CaptionMessage) -> Event {
    Event::default().data(msg.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captions::CaptionHub;

    fn partial(text: &str) -> ServerMessage {
        ServerMessage::Partial {
            utterance: 0,
            text: text.into(),
            stable: String::new(),
            start_ms: 0,
            end_ms: 10,
        }
    }

    #[tokio::test]
    async fn stream_replays_backlog_then_follows_until_done() {
        let hub = CaptionHub::new();
        hub.open("s");
        hub.publish("s", &partial("one"));
        let response = Sse::new(event_stream(hub.subscribe("s").unwrap())).into_response();
        hub.publish("s", &partial("one two"));
        hub.close("s");
        // The body ends by itself after `done`; a hang here fails the test by timeout.
        let body = tokio::time::timeout(
            Duration::from_secs(5),
            axum::body::to_bytes(response.into_body(), 1 << 16),
        )
        .await
        .expect("stream ends after done")
        .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        let data: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert!(body.starts_with("retry: 2000\n"), "{body}");
        assert_eq!(
            data,
            [
                partial("one").to_json(),
                partial("one two").to_json(),
                ServerMessage::Done.to_json()
            ]
        );
    }
}
