//! The session's clocks: idle (no audio), no speech (audio, but nothing the VAD calls
//! speech) and the maximum session length.
//!
//! While the session is not reading its socket (too many finals outstanding, see
//! `MAX_PENDING_FINALS`) the idle and no-speech clocks are held: the client may well be
//! sending, we are just not looking. They restart when reading resumes.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{sleep, Instant, Sleep};

use crate::config::Config;
use crate::protocol::ProtocolError;

/// Which clock ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// No audio for `IDLE_TIMEOUT_MS`.
    Idle,
    /// Audio but no speech for `NO_SPEECH_TIMEOUT_MS`.
    NoSpeech,
    /// `MAX_SESSION_MS` since the session started.
    MaxSession,
}

impl Expired {
    /// What the client is told for the limits that end a session by policy.
    pub fn error(self, config: &Config) -> Option<ProtocolError> {
        match self {
            Expired::Idle => None,
            Expired::NoSpeech => Some(ProtocolError::NoSpeech {
                ms: config.no_speech_timeout_ms,
            }),
            Expired::MaxSession => Some(ProtocolError::SessionTooLong {
                max_ms: config.max_session_ms,
            }),
        }
    }
}

pub struct Clocks {
    idle_after: Duration,
    idle: Pin<Box<Sleep>>,
    no_speech_after: Option<Duration>,
    no_speech: Option<Pin<Box<Sleep>>>,
    max_session: Option<Pin<Box<Sleep>>>,
}

impl Clocks {
    pub fn new(config: &Config) -> Self {
        let no_speech_after = config.no_speech_timeout();
        Self {
            idle_after: config.idle_timeout(),
            idle: Box::pin(sleep(config.idle_timeout())),
            no_speech_after,
            no_speech: no_speech_after.map(|d| Box::pin(sleep(d))),
            max_session: config.max_session().map(|d| Box::pin(sleep(d))),
        }
    }

    /// Audio arrived; `speech` when the VAD heard speech in it.
    pub fn audio(&mut self, speech: bool) {
        let now = Instant::now();
        self.idle.as_mut().reset(now + self.idle_after);
        if speech {
            self.reset_no_speech(now);
        }
    }

    /// Reading resumed after backpressure: what arrives now was sent while we were not
    /// looking, so both input clocks start over.
    pub fn resumed(&mut self) {
        let now = Instant::now();
        self.idle.as_mut().reset(now + self.idle_after);
        self.reset_no_speech(now);
    }

    fn reset_no_speech(&mut self, now: Instant) {
        if let (Some(after), Some(timer)) = (self.no_speech_after, self.no_speech.as_mut()) {
            timer.as_mut().reset(now + after);
        }
    }

    /// The next clock to run out; the input clocks only count while `reading`. Cancel-safe.
    pub async fn expired(&mut self, reading: bool) -> Expired {
        tokio::select! {
            _ = self.idle.as_mut(), if reading => Expired::Idle,
            _ = optional(self.no_speech.as_mut()), if reading => Expired::NoSpeech,
            _ = optional(self.max_session.as_mut()) => Expired::MaxSession,
        }
    }
}

async fn optional(timer: Option<&mut Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}
