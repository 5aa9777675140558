//! Wire protocol v1 (docs/protocol.md): client and server messages, error codes, close codes.
//!
//! This is the one place where failures become what a client sees: [`ProtocolError`] carries
//! the `error.code` string, the human message and the WebSocket close code for every failure a
//! session can hit. Internal details are logged by the caller, never put in the message.

use serde::{Deserialize, Serialize};

/// Version announced in `ready`.
pub const PROTOCOL_VERSION: u32 = 1;

/// WebSocket close codes (RFC 6455 §7.4.1 and the IANA registry).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Server restart (a deploy): clients should reconnect.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Server full: clients should retry later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Sample encodings a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Signed 16-bit little-endian integers.
    S16le,
    /// 32-bit little-endian IEEE floats in [-1, 1].
    F32le,
}

impl Encoding {
    pub fn bytes_per_sample(self) -> usize {
        match self {
            Encoding::S16le => 2,
            Encoding::F32le => 4,
        }
    }

    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        match s {
            "s16le" | "pcm_s16le" => Ok(Encoding::S16le),
            "f32le" | "pcm_f32le" => Ok(Encoding::F32le),
            other => Err(ProtocolError::BadEncoding(other.chars().take(32).collect())),
        }
    }
}

/// Text messages from the client.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    /// Stream parameters, instead of query parameters; only before any audio.
    Start(StreamParamsPatch),
    /// End the current utterance now.
    Flush,
    /// No more audio: finalise, send outstanding finals, `done`, close 1000.
    Eof,
}

/// Optional stream parameters, from the query string or a `start` message.
#[derive(Debug, Default, Deserialize, PartialEq, Clone)]
pub struct StreamParamsPatch {
    pub sample_rate: Option<u32>,
    pub encoding: Option<String>,
    pub channels: Option<u16>,
    pub language: Option<String>,
}

/// Where a final's text came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Local,
    Openai,
}

/// Messages from the server, sent as JSON text frames.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    Ready {
        session: String,
        protocol: u32,
        sample_rate: u32,
        encoding: Encoding,
        channels: u16,
        language: String,
        /// Silence after which an utterance ends, so clients can size their own timers.
        vad_silence_ms: u32,
        /// Audio pause after which the server ends the session by itself.
        idle_timeout_ms: u64,
    },
    Partial {
        utterance: u64,
        /// The whole provisional text; starts with `stable`.
        text: String,
        /// The committed prefix of `text`: it never changes within an utterance, only grows.
        #[serde(default)]
        stable: String,
        start_ms: u64,
        end_ms: u64,
    },
    Final {
        utterance: u64,
        text: String,
        source: Source,
        start_ms: u64,
        end_ms: u64,
        /// Why the local text stands in for OpenAI's (absent when `source` is `openai`).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        fallback_reason: Option<String>,
        /// Server time from the end of the utterance to this final, in milliseconds.
        latency_ms: u64,
    },
    Error {
        code: String,
        message: String,
        /// The utterance this error is about, when it is about one.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        utterance: Option<u64>,
    },
    Done,
}

/// Every failure a client can be told about.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtocolError {
    #[error("sample_rate must be an integer from {min} to {max} Hz, got {got}")]
    BadSampleRate { got: String, min: u32, max: u32 },
    #[error("encoding must be s16le or f32le, got {0:?}")]
    BadEncoding(String),
    #[error("channels must be 1 or 2, got {0}")]
    BadChannels(String),
    #[error("language must be a language code such as en or de, or auto; got {0:?}")]
    BadLanguage(String),
    #[error("text messages must be JSON objects with a \"type\": {0}")]
    BadJson(String),
    #[error("unknown message type {0:?}; expected start, flush or eof")]
    UnknownType(String),
    #[error("message of {got} bytes is over the {max}-byte limit")]
    FrameTooLarge { got: usize, max: usize },
    #[error("audio or commands received after eof")]
    AfterEof,
    #[error("start must come before any audio")]
    StartAfterAudio,
    #[error("start may be sent only once")]
    StartRepeated,
    #[error("no speech heard for {ms} ms; session ended")]
    NoSpeech { ms: u64 },
    #[error("session reached the server's limit of {max_ms} ms")]
    SessionTooLong { max_ms: u64 },
    #[error("server is at its limit of {0} sessions; retry later")]
    ServerBusy(usize),
    #[error("this address already has {0} open sessions (MAX_SESSIONS_PER_IP); close one first")]
    IpLimit(usize),
    #[error("the model is still loading; retry in a few seconds")]
    NotReady,
    #[error("server is restarting; reconnect")]
    ShuttingDown,
    #[error("internal error; the session cannot continue")]
    Internal,
}

impl ProtocolError {
    /// The stable `error.code` string clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::BadSampleRate { .. } => "bad_sample_rate",
            ProtocolError::BadEncoding(_) => "bad_encoding",
            ProtocolError::BadChannels(_) => "bad_channels",
            ProtocolError::BadLanguage(_) => "bad_language",
            ProtocolError::BadJson(_) => "bad_json",
            ProtocolError::UnknownType(_) => "unknown_type",
            ProtocolError::FrameTooLarge { .. } => "frame_too_large",
            ProtocolError::AfterEof => "after_eof",
            ProtocolError::StartAfterAudio => "start_after_audio",
            ProtocolError::StartRepeated => "start_repeated",
            ProtocolError::NoSpeech { .. } => "no_speech",
            ProtocolError::SessionTooLong { .. } => "session_too_long",
            ProtocolError::ServerBusy(_) => "server_busy",
            ProtocolError::IpLimit(_) => "ip_limit",
            ProtocolError::NotReady => "not_ready",
            ProtocolError::ShuttingDown => "shutting_down",
            ProtocolError::Internal => "internal",
        }
    }

    /// The close code that follows the error message.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::BadSampleRate { .. }
            | ProtocolError::BadEncoding(_)
            | ProtocolError::BadChannels(_)
            | ProtocolError::BadLanguage(_) => close::POLICY_VIOLATION,
            ProtocolError::BadJson(_) | ProtocolError::UnknownType(_) => close::INVALID_PAYLOAD,
            ProtocolError::FrameTooLarge { .. } => close::MESSAGE_TOO_BIG,
            ProtocolError::AfterEof
            | ProtocolError::StartAfterAudio
            | ProtocolError::StartRepeated
            | ProtocolError::NoSpeech { .. }
            | ProtocolError::SessionTooLong { .. } => close::POLICY_VIOLATION,
            ProtocolError::ServerBusy(_) | ProtocolError::NotReady | ProtocolError::IpLimit(_) => {
                close::TRY_AGAIN_LATER
            }
            ProtocolError::ShuttingDown => close::SERVICE_RESTART,
            ProtocolError::Internal => close::INTERNAL_ERROR,
        }
    }

    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::Error {
            code: self.code().to_string(),
            message: self.to_string(),
            utterance: None,
        }
    }
}

/// Longest parser detail echoed to a client: serde's messages quote the offending value,
/// which may be most of a 1 MiB frame.
const DETAIL_MAX_CHARS: usize = 160;

fn bad_json(error: serde_json::Error) -> ProtocolError {
    ProtocolError::BadJson(error.to_string().chars().take(DETAIL_MAX_CHARS).collect())
}

/// Parses a client text frame.
pub fn parse_client_text(text: &str) -> Result<ClientMessage, ProtocolError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(bad_json)?;
    let kind = value
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| ProtocolError::BadJson("missing \"type\"".into()))?;
    if !matches!(kind, "start" | "flush" | "eof") {
        return Err(ProtocolError::UnknownType(kind.chars().take(32).collect()));
    }
    serde_json::from_value(value).map_err(bad_json)
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).expect("server messages serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_messages() {
        assert_eq!(
            parse_client_text(r#"{"type":"eof"}"#),
            Ok(ClientMessage::Eof)
        );
        assert_eq!(
            parse_client_text(r#"{"type":"flush"}"#),
            Ok(ClientMessage::Flush)
        );
        let start = parse_client_text(r#"{"type":"start","sample_rate":48000}"#).unwrap();
        assert_eq!(
            start,
            ClientMessage::Start(StreamParamsPatch {
                sample_rate: Some(48000),
                ..Default::default()
            })
        );
    }

    #[test]
    fn rejects_bad_text_with_codes() {
        assert_eq!(
            parse_client_text("not json").unwrap_err().code(),
            "bad_json"
        );
        assert_eq!(parse_client_text("[1,2]").unwrap_err().code(), "bad_json");
        assert_eq!(
            parse_client_text(r#"{"type":"dance"}"#).unwrap_err().code(),
            "unknown_type"
        );
        let wrong_field = parse_client_text(r#"{"type":"start","sample_rate":"fast"}"#);
        assert_eq!(
            wrong_field.unwrap_err().close_code(),
            close::INVALID_PAYLOAD
        );
    }

    #[test]
    fn final_serialises_with_documented_names() {
        let msg = ServerMessage::Final {
            utterance: 2,
            text: "hi".into(),
            source: Source::Local,
            start_ms: 10,
            end_ms: 20,
            fallback_reason: Some("timeout".into()),
            latency_ms: 5,
        };
        let v: serde_json::Value = serde_json::from_str(&msg.to_json()).unwrap();
        assert_eq!(v["type"], "final");
        assert_eq!(v["source"], "local");
        assert_eq!(v["fallback_reason"], "timeout");
        assert_eq!(v["utterance"], 2);
    }
}
