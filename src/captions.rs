//! Read-only caption feeds that follow a live session.
//!
//! A session publishes every `partial`, `final` and `done` it sends to its client here as well;
//! any number of viewers (a caption screen, an OBS browser source) subscribe to that session and
//! receive the same messages through `GET /captions/{session}/events` (see `http::captions`).
//!
//! Each session has a [`tokio::sync::broadcast`] channel of small capacity: publishing never
//! waits, and a viewer that falls behind loses the oldest messages rather than slowing the
//! session (captions are only worth showing live). A late viewer first gets a short backlog,
//! the last few finals and the current partial, so the screen is not blank until someone speaks.
//!
//! Who may subscribe: whoever knows the session id. Ids are 128-bit random values handed only
//! to the client that opened the session, so the id works as a capability; docs/captions.md
//! says how to restrict the feed further at the reverse proxy.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::protocol::ServerMessage;

/// Messages a viewer may fall behind by before it skips ahead. Partials arrive every
/// PARTIAL_INTERVAL_MS (700 ms by default), so this is several seconds of captions.
pub const SUBSCRIBER_BUFFER: usize = 16;

/// Finals replayed to a viewer that joins a running session: enough for a two-line view.
pub const BACKLOG_FINALS: usize = 3;

/// Viewers one session may have at once, so one leaked link cannot open unbounded streams.
pub const MAX_SUBSCRIBERS_PER_SESSION: usize = 32;

/// A message as viewers receive it: shared, so a publish costs one allocation, not one per viewer.
pub type CaptionMessage = Arc<ServerMessage>;

/// Why a viewer could not subscribe.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubscribeError {
    #[error("no live session with this id")]
    NotFound,
    #[error("this session already has {0} caption viewers")]
    TooManyViewers(usize),
}

/// One viewer's feed: the backlog to show first, then live messages.
pub struct Subscription {
    /// Recent finals and the current partial, oldest first.
    pub backlog: Vec<CaptionMessage>,
    /// Live messages; `Lagged` means the viewer skipped some, `Closed` that the session ended.
    pub receiver: broadcast::Receiver<CaptionMessage>,
}

struct Feed {
    sender: broadcast::Sender<CaptionMessage>,
    finals: VecDeque<CaptionMessage>,
    partial: Option<CaptionMessage>,
    done_sent: bool,
}

impl Feed {
    fn new() -> Self {
        let (sender, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        Self {
            sender,
            finals: VecDeque::with_capacity(BACKLOG_FINALS),
            partial: None,
            done_sent: false,
        }
    }

    fn record(&mut self, msg: &CaptionMessage) {
        match msg.as_ref() {
            ServerMessage::Partial { .. } => self.partial = Some(msg.clone()),
            ServerMessage::Final { .. } => {
                self.partial = None;
                if self.finals.len() == BACKLOG_FINALS {
                    self.finals.pop_front();
                }
                self.finals.push_back(msg.clone());
            }
            ServerMessage::Done => self.done_sent = true,
            _ => {}
        }
    }
}

/// Keeps a session's feed open; dropping it closes the feed ([`CaptionHub::close`]).
#[must_use = "the feed closes when the guard is dropped"]
pub struct FeedGuard {
    hub: Arc<CaptionHub>,
    session: String,
}

impl Drop for FeedGuard {
    fn drop(&mut self) {
        self.hub.close(&self.session);
    }
}

/// Caption feeds of all live sessions. Held in an `Arc` by the HTTP state and the sessions.
#[derive(Default)]
pub struct CaptionHub {
    // One lock for all feeds: it is held only to update a backlog and hand a message to a
    // non-blocking broadcast send, at most a few times a second per session.
    feeds: Mutex<HashMap<String, Feed>>,
}

impl CaptionHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a session's feed available to viewers.
    pub fn open(&self, session: &str) {
        self.lock()
            .entry(session.to_string())
            .or_insert_with(Feed::new);
    }

    /// Passes a message the session sent to its client on to the viewers. Only `partial`,
    /// `final` and `done` are captions; other messages are ignored.
    pub fn publish(&self, session: &str, msg: &ServerMessage) {
        if !matches!(
            msg,
            ServerMessage::Partial { .. } | ServerMessage::Final { .. } | ServerMessage::Done
        ) {
            return;
        }
        let mut feeds = self.lock();
        let Some(feed) = feeds.get_mut(session) else {
            return;
        };
        if feed.done_sent {
            return;
        }
        let msg = Arc::new(msg.clone());
        feed.record(&msg);
        // An error only means nobody is watching right now.
        let _ = feed.sender.send(msg);
    }

    /// Opens a session's feed and returns a guard that closes it when dropped, whatever
    /// ends the session.
    pub fn feed(self: &Arc<Self>, session: &str) -> FeedGuard {
        self.open(session);
        FeedGuard {
            hub: self.clone(),
            session: session.to_string(),
        }
    }

    /// Ends a session's feed: viewers get `done` (unless the session already sent it) and then
    /// their stream ends, because dropping the sender closes the channel.
    pub fn close(&self, session: &str) {
        let Some(feed) = self.lock().remove(session) else {
            return;
        };
        if !feed.done_sent {
            let _ = feed.sender.send(Arc::new(ServerMessage::Done));
        }
    }

    /// Follows a live session. The backlog is taken under the same lock as the subscription,
    /// so no message is both replayed and received, nor lost between the two.
    pub fn subscribe(&self, session: &str) -> Result<Subscription, SubscribeError> {
        let feeds = self.lock();
        let feed = feeds.get(session).ok_or(SubscribeError::NotFound)?;
        if feed.sender.receiver_count() >= MAX_SUBSCRIBERS_PER_SESSION {
            return Err(SubscribeError::TooManyViewers(MAX_SUBSCRIBERS_PER_SESSION));
        }
        let mut backlog: Vec<CaptionMessage> = feed.finals.iter().cloned().collect();
        backlog.extend(feed.partial.iter().cloned());
        Ok(Subscription {
            backlog,
            receiver: feed.sender.subscribe(),
        })
    }

    /// Sessions with an open feed.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Feed>> {
        // A panic while holding the lock cannot leave a feed half-updated in a way that
        // matters to viewers, so recover the map rather than take the server down.
        self.feeds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Source;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};

    fn partial(utterance: u64, text: &str) -> ServerMessage {
        ServerMessage::Partial {
            utterance,
            text: text.into(),
            stable: String::new(),
            start_ms: 0,
            end_ms: 100,
        }
    }

    fn final_(utterance: u64, text: &str) -> ServerMessage {
        ServerMessage::Final {
            utterance,
            text: text.into(),
            source: Source::Local,
            start_ms: 0,
            end_ms: 100,
            fallback_reason: None,
            latency_ms: 5,
        }
    }

    #[test]
    fn unknown_sessions_cannot_be_followed() {
        let hub = CaptionHub::new();
        assert_eq!(hub.subscribe("nope").err(), Some(SubscribeError::NotFound));
        hub.publish("nope", &partial(0, "ignored"));
        assert!(hub.is_empty());
    }

    #[test]
    fn subscribers_receive_captions_in_order_and_not_other_messages() {
        let hub = CaptionHub::new();
        hub.open("s");
        let mut sub = hub.subscribe("s").unwrap();
        assert!(sub.backlog.is_empty());
        hub.publish("s", &partial(0, "hel"));
        hub.publish(
            "s",
            &ServerMessage::Error {
                code: "x".into(),
                message: "y".into(),
                utterance: None,
            },
        );
        hub.publish("s", &final_(0, "hello"));
        assert_eq!(*sub.receiver.try_recv().unwrap(), partial(0, "hel"));
        assert_eq!(*sub.receiver.try_recv().unwrap(), final_(0, "hello"));
        assert_eq!(sub.receiver.try_recv().unwrap_err(), TryRecvError::Empty);
    }

    #[test]
    fn late_subscribers_get_recent_finals_and_the_current_partial() {
        let hub = CaptionHub::new();
        hub.open("s");
        for n in 0..5 {
            hub.publish("s", &partial(n, "p"));
            hub.publish("s", &final_(n, &format!("final {n}")));
        }
        hub.publish("s", &partial(5, "still talking"));
        let sub = hub.subscribe("s").unwrap();
        let expected: Vec<ServerMessage> = vec![
            final_(2, "final 2"),
            final_(3, "final 3"),
            final_(4, "final 4"),
            partial(5, "still talking"),
        ];
        assert_eq!(
            sub.backlog
                .iter()
                .map(|m| (**m).clone())
                .collect::<Vec<_>>(),
            expected
        );
    }

    #[test]
    fn a_slow_subscriber_skips_ahead_without_blocking_the_session() {
        let hub = CaptionHub::new();
        hub.open("s");
        let mut slow = hub.subscribe("s").unwrap();
        let extra = 5;
        for n in 0..(SUBSCRIBER_BUFFER + extra) as u64 {
            hub.publish("s", &partial(0, &n.to_string()));
        }
        assert_eq!(
            slow.receiver.try_recv().unwrap_err(),
            TryRecvError::Lagged(extra as u64)
        );
        assert_eq!(
            *slow.receiver.try_recv().unwrap(),
            partial(0, &extra.to_string())
        );
    }

    #[tokio::test]
    async fn a_dropped_feed_guard_closes_the_feed() {
        let hub = Arc::new(CaptionHub::new());
        let guard = hub.feed("s");
        let mut sub = hub.subscribe("s").unwrap();
        // A session future dropped mid-way (a panic, an aborted task) drops its guard.
        drop(guard);
        assert_eq!(*sub.receiver.recv().await.unwrap(), ServerMessage::Done);
        assert_eq!(sub.receiver.recv().await, Err(RecvError::Closed));
        assert!(hub.is_empty());
    }

    #[tokio::test]
    async fn close_sends_done_once_and_ends_the_stream() {
        let hub = CaptionHub::new();
        hub.open("a");
        hub.open("b");
        let mut a = hub.subscribe("a").unwrap();
        let mut b = hub.subscribe("b").unwrap();
        // "a" sends its own done (eof from the client); "b" is closed without one.
        hub.publish("a", &ServerMessage::Done);
        hub.publish("a", &final_(9, "after done is dropped"));
        hub.close("a");
        hub.close("b");
        assert_eq!(*a.receiver.recv().await.unwrap(), ServerMessage::Done);
        assert_eq!(a.receiver.recv().await.unwrap_err(), RecvError::Closed);
        assert_eq!(*b.receiver.recv().await.unwrap(), ServerMessage::Done);
        assert_eq!(b.receiver.recv().await.unwrap_err(), RecvError::Closed);
        assert!(hub.is_empty());
        assert_eq!(hub.subscribe("a").err(), Some(SubscribeError::NotFound));
    }

    #[test]
    fn viewers_per_session_are_bounded() {
        let hub = CaptionHub::new();
        hub.open("s");
        let subs: Vec<_> = (0..MAX_SUBSCRIBERS_PER_SESSION)
            .map(|_| hub.subscribe("s").unwrap())
            .collect();
        assert_eq!(
            hub.subscribe("s").err(),
            Some(SubscribeError::TooManyViewers(MAX_SUBSCRIBERS_PER_SESSION))
        );
        drop(subs);
        assert!(hub.subscribe("s").is_ok());
    }
}
