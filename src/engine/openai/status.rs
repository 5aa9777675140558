//! What `/health` says about OpenAI: the serialisable status, the deep check's answer, and the
//! record of the last success and error they are built from. Nothing here holds the key.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::circuit::CircuitState;
use super::FallbackReason;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenAiState {
    /// The last request succeeded (or none has been made yet).
    Ok,
    /// The last utterance fell back to local, or the breaker is about to probe.
    Degraded,
    /// Finals go straight to local until the cooldown ends.
    CircuitOpen,
    /// No key (or `PRIMARY_SERVICE=local`): OpenAI is never called.
    Disabled,
}

/// `/health`'s `openai` object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpenAiStatus {
    /// A key is set, so finals are sent to OpenAI.
    pub configured: bool,
    pub model: String,
    pub state: OpenAiState,
    pub last_success: Option<Event>,
    pub last_error: Option<ErrorEvent>,
}

impl OpenAiStatus {
    /// The status to show when `PRIMARY_SERVICE=local` (no client exists).
    pub fn local_only(config: &crate::Config) -> Self {
        Self {
            configured: !config.openai_api_key.is_empty(),
            model: config.openai_model.clone(),
            state: OpenAiState::Disabled,
            last_success: None,
            last_error: None,
        }
    }
}

/// When something happened: wall-clock seconds since the epoch, and how long ago.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub unix_s: u64,
    pub ago_s: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorEvent {
    #[serde(flatten)]
    pub at: Event,
    /// A `fallback_reason` string.
    pub reason: &'static str,
    /// The HTTP status, when there was a response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// `/health?deep=1`'s `openai_check`: one `GET {base}/models` with the key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeepCheck {
    /// An HTTP response came back (whatever its status).
    pub reachable: bool,
    /// The response was 2xx: the key is accepted.
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Whether the configured model is in the list (absent when the list could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_listed: Option<bool>,
    /// A fallback-reason-like word (`timeout`, `network`, `no_api_key`, `http_4xx`…), never
    /// upstream text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
}

impl DeepCheck {
    /// No HTTP answer (or no request at all, for `no_api_key`).
    pub fn failed(reason: FallbackReason, latency_ms: u64) -> Self {
        Self {
            reachable: false,
            ok: false,
            status_code: None,
            model_listed: None,
            error: Some(reason.as_str().to_string()),
            latency_ms,
        }
    }
}

/// Monotonic time for "ago", wall time for "when".
#[derive(Clone, Copy, Debug)]
struct Stamp {
    mono: Instant,
    wall: SystemTime,
}

impl Stamp {
    fn now() -> Self {
        Self {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }
    fn event(&self) -> Event {
        Event {
            unix_s: self
                .wall
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            ago_s: self.mono.elapsed().as_secs(),
        }
    }
}

/// The outcomes of past requests that the status reports.
#[derive(Debug, Default)]
pub struct Health {
    last_success: Option<Stamp>,
    last_error: Option<(Stamp, FallbackReason, Option<u16>)>,
    last_was_error: bool,
}

impl Health {
    pub fn record_success(&mut self) {
        self.last_success = Some(Stamp::now());
        self.last_was_error = false;
    }

    /// A failed utterance; fast failures (circuit open, no key) are not news and not recorded.
    pub fn record_error(&mut self, reason: FallbackReason, status: Option<u16>) {
        self.last_error = Some((Stamp::now(), reason, status));
        self.last_was_error = true;
    }

    pub fn status(&self, model: &str, configured: bool, circuit: CircuitState) -> OpenAiStatus {
        let state = match (configured, circuit) {
            (false, _) => OpenAiState::Disabled,
            (true, CircuitState::Open) => OpenAiState::CircuitOpen,
            (true, CircuitState::HalfOpen) => OpenAiState::Degraded,
            (true, CircuitState::Closed) if self.last_was_error => OpenAiState::Degraded,
            (true, CircuitState::Closed) => OpenAiState::Ok,
        };
        OpenAiStatus {
            configured,
            model: model.to_string(),
            state,
            last_success: self.last_success.map(|s| s.event()),
            last_error: self.last_error.map(|(at, reason, status)| ErrorEvent {
                at: at.event(),
                reason: reason.as_str(),
                status,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_key_circuit_and_last_outcome() {
        let mut h = Health::default();
        assert_eq!(
            h.status("m", false, CircuitState::Closed).state,
            OpenAiState::Disabled
        );
        assert_eq!(
            h.status("m", true, CircuitState::Closed).state,
            OpenAiState::Ok
        );
        h.record_error(FallbackReason::Http5xx, Some(503));
        assert_eq!(
            h.status("m", true, CircuitState::Closed).state,
            OpenAiState::Degraded
        );
        assert_eq!(
            h.status("m", true, CircuitState::Open).state,
            OpenAiState::CircuitOpen
        );
        h.record_success();
        let status = h.status("m", true, CircuitState::Closed);
        assert_eq!(status.state, OpenAiState::Ok);
        assert!(status.last_success.is_some());
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["state"], "ok");
        assert_eq!(json["last_error"]["reason"], "http_5xx");
        assert_eq!(json["last_error"]["status"], 503);
        assert!(json["last_error"]["unix_s"].as_u64().unwrap() > 1_600_000_000);
    }

    #[test]
    fn circuit_open_serialises_snake_case() {
        let json = serde_json::to_value(OpenAiState::CircuitOpen).unwrap();
        assert_eq!(json, "circuit_open");
    }
}
