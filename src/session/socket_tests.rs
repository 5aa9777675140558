//! A socket that stops taking data, under the paused clock: the writer gives up on a close
//! that never completes after `CLOSE_TIMEOUT`, and a client that stops reading ends its
//! session after `WRITE_TIMEOUT` instead of being transcribed for nobody. Harness in `tests.rs`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::Sink;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::event_loop::CLOSE_LINGER;
use super::outbox::{Outbox, CLOSE_TIMEOUT, WRITE_TIMEOUT};
use super::tests::{deps, jfk, scripted, stream, FRAME_MS, FRAME_SAMPLES};
use super::{run, Outcome, StreamParams};
use crate::captions::CaptionHub;
use crate::config::Config;
use crate::protocol::{close, ServerMessage};

/// Longer than any session here; a regression fails instead of hanging the test.
const NEVER: Duration = Duration::from_secs(600);
/// How long a scripted final takes.
const FINAL_DELAY: Duration = Duration::from_millis(100);

/// A socket's sending half that takes `accepts` messages, then never has room again (a client
/// that stopped reading, with full buffers), and whose close never completes.
struct StuckSink {
    sent: Arc<Mutex<Vec<Message>>>,
    accepts: usize,
}

impl StuckSink {
    fn new(accepts: usize) -> (Self, Arc<Mutex<Vec<Message>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sink = Self {
            sent: sent.clone(),
            accepts,
        };
        (sink, sent)
    }
}

// Pending without registering a waker: nothing will ever wake it, as with a peer that never
// reads again. Only the writer's own timeouts get it going.
impl Sink<Message> for StuckSink {
    type Error = Infallible;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.sent.lock().unwrap().len() < self.accepts {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Infallible> {
        self.sent.lock().unwrap().push(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Pending
    }
}

fn close_code(sent: &[Message]) -> Option<u16> {
    sent.iter().find_map(|m| match m {
        Message::Close(frame) => frame.as_ref().map(|f| f.code),
        _ => None,
    })
}

fn s16(frame: &[f32]) -> Message {
    let bytes: Vec<u8> = frame
        .iter()
        .flat_map(|s| ((s * 32767.0) as i16).to_le_bytes())
        .collect();
    Message::Binary(bytes.into())
}

#[tokio::test(start_paused = true)]
async fn the_writer_gives_up_on_a_close_that_never_completes() {
    let (sink, sent) = StuckSink::new(usize::MAX);
    let (outbox, writer) = Outbox::spawn(sink, "test".into(), Arc::new(CaptionHub::new()));
    assert!(outbox.send(&ServerMessage::Done).await);
    outbox.close(close::NORMAL, "done").await;
    let began = Instant::now();
    tokio::time::timeout(NEVER, writer)
        .await
        .expect("the writer ends")
        .unwrap();
    assert_eq!(began.elapsed(), CLOSE_TIMEOUT);
    let sent = sent.lock().unwrap().clone();
    assert_eq!(
        sent.len(),
        2,
        "the message and the close frame went out first"
    );
    assert_eq!(close_code(&sent), Some(close::NORMAL));
    // The writer has stopped, so the session sees the client as gone.
    tokio::time::timeout(Duration::ZERO, outbox.gone())
        .await
        .expect("gone at once");
}

#[tokio::test(start_paused = true)]
async fn a_session_ends_even_if_its_socket_never_finishes_closing() {
    let (sink, sent) = StuckSink::new(usize::MAX);
    let deps = deps(scripted(|_| FINAL_DELAY), Config::defaults());
    let params = StreamParams::from_query(&Default::default(), "en").unwrap();
    let (to_server, rx) = mpsc::channel(8);
    let session = tokio::spawn(run(sink, stream(rx), params, deps));
    for frame in jfk()[..16_000 * 3].chunks(FRAME_SAMPLES) {
        to_server.send(s16(frame)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(FRAME_MS)).await;
    }
    let eof = Message::Text(r#"{"type":"eof"}"#.into());
    to_server.send(eof).await.unwrap();
    let began = Instant::now();
    let outcome = tokio::time::timeout(NEVER, session)
        .await
        .expect("the session ends")
        .unwrap();
    let took = began.elapsed();
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(close_code(&sent.lock().unwrap()), Some(close::NORMAL));
    // The open utterance's final, the close that never completes, then the wait for the
    // client's close frame (which this client never sends either).
    let most = FINAL_DELAY + CLOSE_TIMEOUT + CLOSE_LINGER + Duration::from_millis(100);
    assert!(
        took >= CLOSE_TIMEOUT && took <= most,
        "ended after {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_loses_its_session() {
    // Takes `ready`, then nothing: the client keeps talking but never reads.
    let (sink, sent) = StuckSink::new(1);
    let deps = deps(scripted(|_| FINAL_DELAY), Config::defaults());
    let params = StreamParams::from_query(&Default::default(), "en").unwrap();
    let (to_server, rx) = mpsc::channel(8);
    let began = Instant::now();
    let session = tokio::spawn(run(sink, stream(rx), params, deps));
    // Twice jfk.wav, 22 s of speech: longer than the write and close timeouts together.
    let audio = [jfk(), jfk()].concat();
    let frames = audio.len().div_ceil(FRAME_SAMPLES);
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        for frame in audio.chunks(FRAME_SAMPLES) {
            if to_server.send(s16(frame)).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(FRAME_MS)).await;
        }
        sent
    });
    let outcome = tokio::time::timeout(NEVER, session)
        .await
        .expect("the session ends")
        .unwrap();
    let took = began.elapsed();
    assert_eq!(outcome, Outcome::ClientGone);
    // The first partial blocks the writer: WRITE_TIMEOUT after it, then the close attempt.
    let most = WRITE_TIMEOUT + CLOSE_TIMEOUT + Duration::from_secs(2);
    assert!(
        took >= WRITE_TIMEOUT + CLOSE_TIMEOUT && took <= most,
        "ended after {took:?}"
    );
    let delivered = sender.await.unwrap();
    assert!(
        delivered < frames,
        "the socket was dropped while the client still talked ({delivered} of {frames} frames)"
    );
    assert_eq!(sent.lock().unwrap().len(), 1, "only ready got through");
}
