//! Errors of the `/v1` HTTP API, in OpenAI's JSON shape:
//! `{"error": {"message", "type", "param", "code"}}`, with the status codes OpenAI uses, so
//! OpenAI SDKs raise their usual exceptions (`BadRequestError`, `RateLimitError`…).
//!
//! This is the one place where `/v1` failures become what a client sees; internal details
//! (database errors, decoder messages) are logged by the caller and summarised here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `server_error`…
    pub kind: &'static str,
    pub code: &'static str,
    pub param: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            message,
            kind,
            code,
            param: None,
        }
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    pub fn unsupported_format(detail: impl std::fmt::Display) -> Self {
        Self::bad_request(
            "unsupported_format",
            format!(
                "could not decode the audio file ({detail}); supported formats: \
                 wav, flac, mp3, ogg (vorbis)"
            ),
        )
        .with_param("file")
    }

    pub fn too_large(max: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "file_too_large",
            format!("the upload is over the {max}-byte limit (MAX_UPLOAD_BYTES)"),
        )
        .with_param("file")
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            format!("no {what} with that id"),
        )
    }

    /// 401 with OpenAI's code for a bad key, so SDKs raise `AuthenticationError`.
    pub fn unauthorized(message: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            message.into(),
        )
    }

    pub fn forbidden(code: &'static str, message: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    pub fn not_found_with(code: &'static str, message: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            code,
            message.into(),
        )
    }

    /// DELETE of a session or file job that is still running.
    pub fn session_live() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "session_live",
            "the session is still running; delete it once it has ended".into(),
        )
    }

    pub fn storage_disabled() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "storage_disabled",
            "transcript storage is off on this server (STORAGE_URL=none)".into(),
        )
    }

    pub fn busy(max: usize) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "engine_busy",
            format!("the server is running its limit of {max} file transcriptions; retry later"),
        )
    }

    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "not_ready",
            "the model is still loading; retry in a few seconds".into(),
        )
    }

    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "shutting_down",
            "the server is restarting; retry in a few seconds".into(),
        )
    }

    pub fn upstream(reason: &crate::engine::openai::FallbackReason) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            "upstream_failed",
            format!("{reason}; local fallback is disabled (FALLBACK_TO_LOCAL=false)"),
        )
    }

    pub fn internal(what: &str) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            format!("{what} failed; see the server log"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        (self.status, Json(body)).into_response()
    }
}
