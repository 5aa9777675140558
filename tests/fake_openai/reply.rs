//! The fake's answers: what to reply to one valid request, and after how long.

use std::time::Duration;

/// How to answer one valid request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub delay: Duration,
    pub kind: ReplyKind,
}

#[derive(Clone, Debug)]
pub enum ReplyKind {
    /// 200 `{"text": …}`.
    Text(String),
    /// An OpenAI-style error body with this status (and a `Retry-After` in seconds).
    Status {
        code: u16,
        retry_after_s: Option<u64>,
    },
    /// Never answer (the client must give up).
    Hang,
    /// 200 with a body that is not JSON.
    Malformed,
    /// 429 with this exact `Retry-After` header text (`1e20`, `-1`, …).
    RetryAfterRaw(String),
    /// 200 `{"text":"aaaa…"}` of about this many bytes, with a content-length or streamed
    /// in 64 KiB chunks without one.
    Huge { bytes: usize, chunked: bool },
    /// 200 `{"text":"…"}`, one byte per `interval`.
    Trickle { interval: Duration },
    /// 200 with a JSON object that has no `text`.
    NoText,
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            delay: Duration::ZERO,
            kind: ReplyKind::Text(text.into()),
        }
    }
    pub fn status(code: u16) -> Self {
        Self {
            delay: Duration::ZERO,
            kind: ReplyKind::Status {
                code,
                retry_after_s: None,
            },
        }
    }
    pub fn rate_limited(retry_after_s: u64) -> Self {
        let kind = ReplyKind::Status {
            code: 429,
            retry_after_s: Some(retry_after_s),
        };
        Self {
            delay: Duration::ZERO,
            kind,
        }
    }
    pub fn hang() -> Self {
        Self {
            delay: Duration::ZERO,
            kind: ReplyKind::Hang,
        }
    }
    pub fn malformed() -> Self {
        Self {
            delay: Duration::ZERO,
            kind: ReplyKind::Malformed,
        }
    }
    pub fn retry_after_raw(value: impl Into<String>) -> Self {
        Self {
            delay: Duration::ZERO,
            kind: ReplyKind::RetryAfterRaw(value.into()),
        }
    }
    pub fn huge(bytes: usize, chunked: bool) -> Self {
        Self {
            delay: Duration::ZERO,
            kind: ReplyKind::Huge { bytes, chunked },
        }
    }
    pub fn trickle(interval: Duration) -> Self {
        Self {
            delay: Duration::ZERO,
            kind: ReplyKind::Trickle { interval },
        }
    }
    pub fn no_text() -> Self {
        Self {
            delay: Duration::ZERO,
            kind: ReplyKind::NoText,
        }
    }
    /// The same answer, sent `delay` after the request arrived.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}
