//! One HTTP attempt at a transcription, and how its answer (or failure) is classified.
//!
//! This is the only code that sees upstream bytes and reqwest errors; what leaves it is a
//! [`FallbackReason`], the status, a `Retry-After` and a short detail for the log built from
//! error kinds and upstream error codes, never from upstream messages (OpenAI's 401 message
//! echoes part of the key) or URLs.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;

use super::{retry, DeepCheck, FallbackReason};
use crate::engine::filter;

/// The uploaded file's name and type; OpenAI infers the format from the name.
const FILE_NAME: &str = "utterance.wav";
const FILE_MIME: &str = "audio/wav";
/// Upstream error codes are logged only when they look like codes, not prose.
const CODE_MAX_CHARS: usize = 64;
/// Largest upstream body read: a transcription of 30 s of audio is a few KiB, a model list a
/// few tens; anything bigger is broken or hostile and is not kept in memory.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Why an upstream body could not be read.
#[derive(Debug)]
enum BodyError {
    TooLarge,
    Http(reqwest::Error),
}

impl From<reqwest::Error> for BodyError {
    fn from(e: reqwest::Error) -> Self {
        BodyError::Http(e)
    }
}

/// Reads the body, refusing it (without buffering the rest) once it passes `cap` bytes.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What one attempt came to.
#[derive(Debug)]
pub struct Attempt {
    pub result: Result<String, FallbackReason>,
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// Safe to log: an error kind chain or an upstream error code.
    pub detail: Option<String>,
}

impl Attempt {
    fn failed(reason: FallbackReason, detail: Option<String>) -> Self {
        Self {
            result: Err(reason),
            status: None,
            retry_after: None,
            detail,
        }
    }

    /// The `whisper_openai_requests_total` outcome label.
    pub fn outcome(&self) -> &'static str {
        match &self.result {
            Ok(_) => "ok",
            Err(reason) => reason.as_str(),
        }
    }
}

/// Posts one multipart transcription request and waits at most `budget` for the whole answer.
pub async fn transcribe_once(
    http: &reqwest::Client,
    url: &str,
    auth: &HeaderValue,
    fields: &[(&'static str, String)],
    wav: &[u8],
    budget: Duration,
) -> Attempt {
    let file = Part::bytes(wav.to_vec())
        .file_name(FILE_NAME)
        .mime_str(FILE_MIME)
        .expect("a constant, valid MIME type");
    let form = fields.iter().fold(Form::new(), |form, (name, value)| {
        form.text(*name, value.clone())
    });
    let request = http
        .post(url)
        .header(AUTHORIZATION, auth.clone())
        .multipart(form.part("file", file));
    let exchange = async {
        let response = request.send().await?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = read_capped(response, MAX_BODY_BYTES).await?;
        Ok::<_, BodyError>((status, retry_after, body))
    };
    // The timeout covers sending, waiting and reading the body (a body trickling in byte by
    // byte included): the deadline is for the text.
    match tokio::time::timeout(budget, exchange).await {
        Err(_elapsed) => Attempt::failed(FallbackReason::Timeout, None),
        Ok(Err(BodyError::TooLarge)) => Attempt::failed(
            FallbackReason::BadResponse,
            Some(format!("response body over {MAX_BODY_BYTES} bytes")),
        ),
        Ok(Err(BodyError::Http(e))) if e.is_timeout() => {
            Attempt::failed(FallbackReason::Timeout, Some(error_chain(e)))
        }
        Ok(Err(BodyError::Http(e))) => {
            Attempt::failed(FallbackReason::Network, Some(error_chain(e)))
        }
        Ok(Ok((status, retry_after, body))) => {
            let result = match classify_status(status) {
                None => parse_text(&body).ok_or(FallbackReason::BadResponse),
                Some(reason) => Err(reason),
            };
            let detail = result.is_err().then(|| upstream_code(&body)).flatten();
            Attempt {
                result,
                status: Some(status.as_u16()),
                retry_after,
                detail,
            }
        }
    }
}

/// `GET {base}/models` with the key, within `budget`: the deep health check.
pub async fn list_models(
    http: &reqwest::Client,
    url: &str,
    auth: &HeaderValue,
    model: &str,
    budget: Duration,
) -> DeepCheck {
    let started = std::time::Instant::now();
    let exchange = async {
        let response = http
            .get(url)
            .header(AUTHORIZATION, auth.clone())
            .send()
            .await?;
        let status = response.status();
        Ok::<_, BodyError>((status, read_capped(response, MAX_BODY_BYTES).await?))
    };
    let answer = tokio::time::timeout(budget, exchange).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    match answer {
        Err(_elapsed) => DeepCheck::failed(FallbackReason::Timeout, latency_ms),
        Ok(Err(BodyError::TooLarge)) => DeepCheck::failed(FallbackReason::BadResponse, latency_ms),
        Ok(Err(BodyError::Http(e))) if e.is_timeout() => {
            DeepCheck::failed(FallbackReason::Timeout, latency_ms)
        }
        Ok(Err(BodyError::Http(_))) => DeepCheck::failed(FallbackReason::Network, latency_ms),
        Ok(Ok((status, body))) => DeepCheck {
            reachable: true,
            ok: status.is_success(),
            status_code: Some(status.as_u16()),
            model_listed: status
                .is_success()
                .then(|| model_listed(&body, model))
                .flatten(),
            error: classify_status(status).map(|r| r.as_str().to_string()),
            latency_ms,
        },
    }
}

/// Whether a `/models` list names `model`; `None` when the body is not such a list.
fn model_listed(body: &[u8], model: &str) -> Option<bool> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = value.get("data")?.as_array()?;
    Some(
        data.iter()
            .any(|m| m.get("id").and_then(|id| id.as_str()) == Some(model)),
    )
}

/// `None` for success; redirects are not followed, so a 3xx means a wrong base URL.
pub fn classify_status(status: StatusCode) -> Option<FallbackReason> {
    match status.as_u16() {
        200..=299 => None,
        429 => Some(FallbackReason::Http429),
        400..=499 => Some(FallbackReason::Http4xx),
        500..=599 => Some(FallbackReason::Http5xx),
        _ => Some(FallbackReason::BadResponse),
    }
}

/// The `text` of a JSON `{"text": …}` answer, sanitised ([`filter::sanitize`]); `None` (a
/// bad response) when there is no string `text`.
pub fn parse_text(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("text")?.as_str().map(filter::sanitize)
}

/// `retry-after-ms` (sent by OpenAI and Azure) or `Retry-After` in seconds; HTTP dates are
/// ignored (the normal backoff applies).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    retry::parse_retry_after(value("retry-after-ms"), value("retry-after"))
}

/// `error.code` (or `error.type`) of an OpenAI-style error body, when it is a plain token.
pub fn upstream_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let code = error
        .get("code")
        .and_then(|c| c.as_str())
        .or_else(|| error.get("type")?.as_str())?;
    let plain = !code.is_empty()
        && code.len() <= CODE_MAX_CHARS
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    plain.then(|| code.to_string())
}

/// The error and its causes ("error sending request: client error (Connect): tcp connect
/// error: Connection refused"), without the URL.
pub fn error_chain(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_reasons() {
        let reason = |code: u16| classify_status(StatusCode::from_u16(code).unwrap());
        assert_eq!(reason(200), None);
        assert_eq!(reason(429), Some(FallbackReason::Http429));
        for code in [400, 401, 403, 404, 413] {
            assert_eq!(reason(code), Some(FallbackReason::Http4xx));
        }
        assert_eq!(reason(503), Some(FallbackReason::Http5xx));
        assert_eq!(reason(302), Some(FallbackReason::BadResponse));
    }

    #[test]
    fn parses_text_or_refuses() {
        assert_eq!(
            parse_text(br#"{"text":" Hello world. ","usage":{}}"#).as_deref(),
            Some("Hello world.")
        );
        assert_eq!(parse_text(br#"{"text":""}"#).as_deref(), Some(""));
        assert_eq!(parse_text(b"Hello world."), None);
        assert_eq!(parse_text(br#"{"text":42}"#), None);
        assert_eq!(parse_text(br#"{"txt":"x"}"#), None);
    }

    #[test]
    fn retry_after_in_ms_or_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("350"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(350)));
        let mut date = HeaderMap::new();
        date.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&date), None);
    }

    #[test]
    fn upstream_text_is_sanitised_and_a_missing_text_is_refused() {
        assert_eq!(
            parse_text(br#"{"text":"ask not\u0000 what\u001b[2J"}"#).as_deref(),
            Some("ask not what [2J")
        );
        assert_eq!(parse_text(br#"{"text":null}"#), None);
        assert_eq!(parse_text(b"{}"), None);
    }

    #[test]
    fn only_token_like_upstream_codes_are_kept() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-ab***yz","code":"invalid_api_key"}}"#;
        assert_eq!(upstream_code(body).as_deref(), Some("invalid_api_key"));
        let prose = br#"{"error":{"message":"m","type":"this is not a code: sk-secret"}}"#;
        assert_eq!(upstream_code(prose), None);
        assert_eq!(upstream_code(b"<html>"), None);
    }
}
