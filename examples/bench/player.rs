//! Plays clips into the server like microphones: real-time 20 ms frames, then a little
//! silence (so the server's own endpointing ends the last utterance), then `eof`. Every
//! frame's send time and every message's arrival time are kept for the scoring.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::clips::Clip;
use crate::common::Received;

/// Audio per WebSocket message, as a browser's audio worklet batches it.
pub const FRAME_MS: u64 = 20;
/// Silence after each clip beyond the server's end-of-speech silence, so the VAD (not `eof`)
/// closes the last utterance and its final latency includes endpointing.
const TAIL_MARGIN_MS: u64 = 500;
/// A session that has not closed this long after `eof` counts as lost.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(120);

/// Which clip each stream is playing (`None` between clips), for the fake upstream.
pub type NowPlaying = Arc<Mutex<Vec<Option<usize>>>>;

/// One clip played over one session.
pub struct Play {
    pub clip: usize,
    pub stream: usize,
    /// When each frame had been handed to the socket (index `i` covers audio up to
    /// `(i + 1) * FRAME_MS`), silence tail included.
    pub frame_sent: Vec<Instant>,
    pub messages: Vec<Received>,
    /// The server sent `done` and closed.
    pub done: bool,
    pub error: Option<String>,
}

impl Play {
    /// When the audio up to `ms` (stream time) had been sent.
    pub fn sent_at(&self, ms: f64) -> Option<Instant> {
        let frame = (ms / FRAME_MS as f64).ceil().max(1.0) as usize - 1;
        self.frame_sent
            .get(frame.min(self.frame_sent.len().checked_sub(1)?))
            .copied()
    }

    pub fn of_kind(&self, kind: &str) -> impl Iterator<Item = &Received> {
        let kind = kind.to_string();
        self.messages.iter().filter(move |m| m.kind() == kind)
    }
}

/// Streams `clip` at real time to `url` and records the session.
pub async fn play(url: &str, clip: &Clip, rate: u32, tail_ms: u64, ids: (usize, usize)) -> Play {
    let mut out = Play {
        clip: ids.0,
        stream: ids.1,
        frame_sent: Vec::new(),
        messages: Vec::new(),
        done: false,
        error: None,
    };
    let ws = match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => ws,
        Err(e) => {
            out.error = Some(format!("connect: {e}"));
            return out;
        }
    };
    let (mut tx, mut rx) = ws.split();
    let frame_bytes = rate as usize * FRAME_MS as usize / 1000 * 2;
    let silence = vec![0u8; ((tail_ms + TAIL_MARGIN_MS) * rate as u64 / 1000 * 2) as usize];
    let writer = async {
        let mut sent = Vec::new();
        let started = Instant::now();
        let frames = clip
            .pcm
            .chunks(frame_bytes)
            .chain(silence.chunks(frame_bytes));
        for (i, frame) in frames.enumerate() {
            if tx
                .send(Message::Binary(frame.to_vec().into()))
                .await
                .is_err()
            {
                return (sent, Some("send failed".to_string()));
            }
            sent.push(Instant::now());
            let due = started + Duration::from_millis((i as u64 + 1) * FRAME_MS);
            tokio::time::sleep_until(due.into()).await;
        }
        let eof = tx.send(Message::Text(r#"{"type":"eof"}"#.into())).await;
        (sent, eof.err().map(|e| format!("eof: {e}")))
    };
    let reader = async {
        let mut messages = Vec::new();
        let mut done = false;
        // The deadline covers the whole clip plus the wait for its finals.
        let deadline = Instant::now() + Duration::from_secs_f64(clip.secs) + CLOSE_TIMEOUT;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline.into(), rx.next()).await {
            match msg {
                Message::Text(t) => {
                    let json: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                    done |= json["type"] == "done";
                    messages.push(Received {
                        at: Instant::now(),
                        json,
                    });
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        (messages, done)
    };
    let ((sent, error), (messages, done)) = tokio::join!(writer, reader);
    out.frame_sent = sent;
    out.messages = messages;
    out.done = done;
    out.error = error;
    out
}

/// Runs `streams` concurrent sessions for one level. Every stream plays every clip once, each
/// starting at a different clip of the rotation, so all `streams` sessions stay busy for the
/// whole level and, at any moment, mostly play different clips.
pub async fn run_level(
    url: &str,
    clips: &Arc<Vec<Clip>>,
    rate: u32,
    tail_ms: u64,
    streams: usize,
    now_playing: Option<NowPlaying>,
) -> Vec<Play> {
    let tasks: Vec<_> = (0..streams)
        .map(|stream| {
            let (url, clips, now_playing) = (url.to_string(), clips.clone(), now_playing.clone());
            let mark = move |clip: Option<usize>| {
                if let Some(np) = &now_playing {
                    np.lock().unwrap()[stream] = clip;
                }
            };
            tokio::spawn(async move {
                let offset = stream * clips.len() / streams.max(1);
                let mut plays = Vec::with_capacity(clips.len());
                for k in 0..clips.len() {
                    let clip = (offset + k) % clips.len();
                    mark(Some(clip));
                    plays.push(play(&url, &clips[clip], rate, tail_ms, (clip, stream)).await);
                    mark(None);
                }
                plays
            })
        })
        .collect();
    let mut plays = Vec::new();
    for task in tasks {
        plays.extend(task.await.expect("stream task"));
    }
    plays
}
