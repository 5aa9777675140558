//! The OpenAI transcription client used for finals: one deadline per utterance, retries inside
//! it, a circuit breaker in front, and a [`FallbackReason`] whenever the caller must use the
//! local transcript instead.
//!
//! Any OpenAI-compatible server works through `OPENAI_BASE_URL`; [`request`] decides the fields
//! per model family. The key lives only in a sensitive `Authorization` header value: errors,
//! logs, status and metrics are built from classified outcomes, never from upstream text, and
//! are scrubbed of the key once more before they are logged.

mod attempt;
pub mod circuit;
pub mod request;
pub mod retry;
pub mod status;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use tracing::{info, warn};

use crate::audio::{wav, PIPELINE_RATE};
use crate::config::{Config, PrimaryService, Secret};
use crate::metrics::Metrics;
use circuit::{Admission, CircuitBreaker, Transition};
use request::ModelFamily;
pub use status::{DeepCheck, OpenAiState, OpenAiStatus};

/// A connection that takes longer than this to open is not going to make a final useful.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a final did not come from OpenAI; `as_str` is the wire protocol's `fallback_reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FallbackReason {
    #[error("OpenAI did not answer within the deadline")]
    Timeout,
    #[error("OpenAI rate limit (HTTP 429)")]
    Http429,
    #[error("OpenAI server error (HTTP 5xx)")]
    Http5xx,
    #[error("OpenAI refused the request (HTTP 4xx)")]
    Http4xx,
    #[error("could not reach OpenAI")]
    Network,
    #[error("OpenAI's answer was not a transcription")]
    BadResponse,
    #[error("OpenAI circuit breaker is open")]
    CircuitOpen,
    #[error("no OpenAI API key is configured")]
    NoApiKey,
}

impl FallbackReason {
    pub const ALL: [FallbackReason; 8] = [
        FallbackReason::Timeout,
        FallbackReason::Http429,
        FallbackReason::Http5xx,
        FallbackReason::Http4xx,
        FallbackReason::Network,
        FallbackReason::BadResponse,
        FallbackReason::CircuitOpen,
        FallbackReason::NoApiKey,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            FallbackReason::Timeout => "timeout",
            FallbackReason::Http429 => "http_429",
            FallbackReason::Http5xx => "http_5xx",
            FallbackReason::Http4xx => "http_4xx",
            FallbackReason::Network => "network",
            FallbackReason::BadResponse => "bad_response",
            FallbackReason::CircuitOpen => "circuit_open",
            FallbackReason::NoApiKey => "no_api_key",
        }
    }

    /// Failures that say nothing new about OpenAI: no request was made.
    fn is_fast_fail(self) -> bool {
        matches!(self, FallbackReason::CircuitOpen | FallbackReason::NoApiKey)
    }
}

/// The OpenAI client; cheap to clone (all clones share the breaker and the status).
#[derive(Clone)]
pub struct OpenAiClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    transcriptions_url: String,
    models_url: String,
    model: String,
    family: ModelFamily,
    /// Validated keywords, for models that take them.
    keywords: Vec<String>,
    /// `Bearer …`, marked sensitive; `None` without a (usable) key.
    auth: Option<HeaderValue>,
    /// Only to scrub log details, in case an upstream ever echoes it.
    key: Secret,
    timeout: Duration,
    /// `OPENAI_MAX_CONCURRENCY` permits: one per request in flight, over all sessions.
    permits: tokio::sync::Semaphore,
    fallback_to_local: bool,
    circuit_cooldown: Duration,
    breaker: Mutex<CircuitBreaker>,
    health: Mutex<status::Health>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("model", &self.inner.model)
            .field("configured", &self.inner.auth.is_some())
            .finish_non_exhaustive()
    }
}

impl OpenAiClient {
    /// `None` when `PRIMARY_SERVICE=local`. Without a usable key the client still exists and
    /// every call fails fast with [`FallbackReason::NoApiKey`]; that is warned about here, once.
    pub fn from_config(config: &Config, metrics: Arc<Metrics>) -> Option<Self> {
        if config.primary_service == PrimaryService::Local {
            return None;
        }
        let base = config.openai_base_url.trim().trim_end_matches('/');
        if reqwest::Url::parse(base).is_err() {
            tracing::error!(
                base_url = crate::config::without_userinfo(base),
                "OPENAI_BASE_URL is not a URL; every openai request will fail"
            );
        }
        let auth = bearer(&config.openai_api_key);
        match (auth.is_some(), config.fallback_to_local) {
            (true, _) => {}
            (false, true) => warn!(
                "PRIMARY_SERVICE=openai but OPENAI_API_KEY is empty or not a valid header value: \
                 openai is disabled, finals come from the local model (fallback_reason no_api_key)"
            ),
            (false, false) => warn!(
                "PRIMARY_SERVICE=openai but OPENAI_API_KEY is empty or not a valid header value, \
                 and FALLBACK_TO_LOCAL=false: every utterance gets an openai_failed error, no final"
            ),
        }
        let family = ModelFamily::of(&config.openai_model);
        let cooldown = Duration::from_millis(config.openai_circuit_cooldown_ms);
        let keywords = configured_keywords(config, family);
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirect would resend the upload (and the key) elsewhere; a 3xx means a wrong URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("whisper-api/", env!("CARGO_PKG_VERSION")))
            .build()
            // Only fails when the TLS backend cannot start, which no request could survive.
            .expect("HTTP client builds");
        info!(
            model = config.openai_model,
            family = ?family,
            timeout_ms = config.openai_timeout_ms,
            keywords = keywords.len(),
            configured = auth.is_some(),
            "openai client ready"
        );
        Some(Self {
            inner: Arc::new(Inner {
                http,
                transcriptions_url: format!("{base}/audio/transcriptions"),
                models_url: format!("{base}/models"),
                model: config.openai_model.trim().to_string(),
                family,
                keywords,
                auth,
                key: config.openai_api_key.clone(),
                timeout: config.openai_timeout(),
                permits: tokio::sync::Semaphore::new(config.openai_max_concurrency as usize),
                fallback_to_local: config.fallback_to_local,
                circuit_cooldown: cooldown,
                breaker: Mutex::new(CircuitBreaker::new(
                    config.openai_circuit_failures,
                    cooldown,
                )),
                health: Mutex::new(status::Health::default()),
                metrics,
            }),
        })
    }

    /// Transcribes one utterance (16 kHz mono samples) within the per-utterance deadline
    /// (`OPENAI_TIMEOUT_MS`), retries included. On failure it has already logged the fallback
    /// line and counted `whisper_fallbacks_total`; the caller only picks the local text.
    pub async fn transcribe(
        &self,
        samples_16k: &[f32],
        prompt: &str,
        language: &str,
    ) -> Result<String, FallbackReason> {
        let started = Instant::now();
        let (result, attempts) = self
            .transcribe_within_deadline(samples_16k, prompt, language, started)
            .await;
        if let Err(reason) = result {
            self.inner.metrics.fallback(reason.as_str());
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let fast = reason.is_fast_fail();
            let reason = reason.as_str();
            if !self.inner.fallback_to_local {
                warn!(
                    reason,
                    attempts, elapsed_ms, "openai failed; no fallback (FALLBACK_TO_LOCAL=false)"
                );
            } else if fast {
                // Expected while the circuit is open or no key is set: not worth a warning each.
                info!(
                    reason,
                    attempts, elapsed_ms, "openai skipped; fallback to local final"
                );
            } else {
                warn!(
                    reason,
                    attempts, elapsed_ms, "openai failed; fallback to local final"
                );
            }
        }
        result
    }

    async fn transcribe_within_deadline(
        &self,
        samples_16k: &[f32],
        prompt: &str,
        language: &str,
        started: Instant,
    ) -> (Result<String, FallbackReason>, u32) {
        let inner = &self.inner;
        let Some(auth) = &inner.auth else {
            return (Err(FallbackReason::NoApiKey), 0);
        };
        let deadline = started + inner.timeout;
        // Waiting for a free slot counts against the utterance's deadline; running out of
        // time here is a timeout like any other, but says nothing about OpenAI's health, so
        // the breaker and /health are left alone.
        let Ok(Ok(_permit)) =
            tokio::time::timeout_at(deadline.into(), inner.permits.acquire()).await
        else {
            return (Err(FallbackReason::Timeout), 0);
        };
        let admission = self.breaker().admit(Instant::now());
        if admission == Admission::Rejected {
            return (Err(FallbackReason::CircuitOpen), 0);
        }
        let mut probe = ProbeGuard {
            client: self,
            armed: admission == Admission::Probe,
        };
        let wav = wav::encode_mono_s16(samples_16k, PIPELINE_RATE);
        let fields = request::text_fields(
            inner.family,
            &inner.model,
            language,
            prompt,
            &inner.keywords,
        );
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let attempt_started = Instant::now();
            let budget = deadline.saturating_duration_since(attempt_started);
            let attempt = attempt::transcribe_once(
                &inner.http,
                &inner.transcriptions_url,
                auth,
                &fields,
                &wav,
                budget,
            )
            .await;
            self.log_attempt(&attempt, attempts, attempt_started.elapsed());
            let reason = match attempt.result {
                Ok(text) => break Ok(text),
                Err(reason) => reason,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            match retry::next_delay(
                attempts,
                reason,
                attempt.retry_after,
                remaining,
                retry::jitter(),
            ) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => break Err((reason, attempt.status)),
            }
        };
        probe.armed = false;
        match outcome {
            Ok(text) => {
                self.health().record_success();
                let transition = self.breaker().on_success();
                self.note_transition(transition);
                (Ok(text), attempts)
            }
            Err((reason, status)) => {
                self.health().record_error(reason, status);
                let transition = self.breaker().on_failure(Instant::now());
                self.note_transition(transition);
                (Err(reason), attempts)
            }
        }
    }

    fn log_attempt(&self, attempt: &attempt::Attempt, number: u32, elapsed: Duration) {
        let outcome = attempt.outcome();
        self.inner.metrics.openai_request(outcome);
        let elapsed_ms = elapsed.as_millis() as u64;
        let status = attempt.status;
        match &attempt.detail {
            _ if attempt.result.is_ok() => info!(
                outcome,
                status,
                attempt = number,
                elapsed_ms,
                "openai attempt"
            ),
            Some(detail) => {
                let detail = scrub(detail, &self.inner.key);
                warn!(
                    outcome,
                    status,
                    attempt = number,
                    elapsed_ms,
                    detail,
                    "openai attempt failed"
                )
            }
            None => warn!(
                outcome,
                status,
                attempt = number,
                elapsed_ms,
                "openai attempt failed"
            ),
        }
    }

    fn note_transition(&self, transition: Option<Transition>) {
        let cooldown_ms = self.inner.circuit_cooldown.as_millis() as u64;
        match transition {
            Some(Transition::Opened) => {
                self.inner.metrics.set_openai_circuit_open(true);
                warn!(
                    cooldown_ms,
                    "openai circuit open: finals fall back to local until a probe succeeds"
                );
            }
            Some(Transition::Closed) => {
                self.inner.metrics.set_openai_circuit_open(false);
                info!("openai circuit closed: probe succeeded");
            }
            None => {}
        }
    }

    /// `/health`'s `openai` object. Overall health is degraded whenever `state` is not `ok`.
    pub fn status(&self) -> OpenAiStatus {
        let circuit = self.breaker().state(Instant::now());
        self.health()
            .status(&self.inner.model, self.inner.auth.is_some(), circuit)
    }

    /// One `GET {base}/models` with the key, within `OPENAI_TIMEOUT_MS`; no retries, no
    /// effect on the breaker.
    pub async fn deep_check(&self) -> DeepCheck {
        let inner = &self.inner;
        let check = match &inner.auth {
            None => DeepCheck::failed(FallbackReason::NoApiKey, 0),
            Some(auth) => {
                attempt::list_models(
                    &inner.http,
                    &inner.models_url,
                    auth,
                    &inner.model,
                    inner.timeout,
                )
                .await
            }
        };
        info!(
            reachable = check.reachable,
            status = check.status_code,
            latency_ms = check.latency_ms,
            "openai deep check"
        );
        check
    }

    fn breaker(&self) -> MutexGuard<'_, CircuitBreaker> {
        // Held for a few instructions, never across an await; a panic elsewhere cannot
        // leave it inconsistent, so a poisoned lock is still usable.
        self.inner.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn health(&self) -> MutexGuard<'_, status::Health> {
        self.inner.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Releases a half-open probe whose utterance was dropped mid-request (session gone), so the
/// breaker lets the next utterance probe rather than staying half-open for ever.
struct ProbeGuard<'a> {
    client: &'a OpenAiClient,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.client.breaker().on_abandoned_probe();
        }
    }
}

/// The `Authorization` value, marked sensitive so `Debug` and HTTP/2 HPACK never expose it.
fn bearer(key: &Secret) -> Option<HeaderValue> {
    if key.is_empty() {
        return None;
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose().trim())).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// `OPENAI_KEYWORDS`, validated now so that no request is ever rejected for them.
fn configured_keywords(config: &Config, family: ModelFamily) -> Vec<String> {
    let (keywords, dropped) = request::validate_keywords(&config.keywords());
    for (keyword, problem) in dropped {
        warn!(keyword = %keyword.escape_debug(), problem = problem.describe(), "OPENAI_KEYWORDS: keyword dropped");
    }
    if !keywords.is_empty() && !family.takes_keywords() {
        warn!(
            model = config.openai_model,
            "OPENAI_KEYWORDS ignored: this model takes no keywords"
        );
        return Vec::new();
    }
    keywords
}

/// Replaces the key, should an upstream ever echo it, before a detail is logged.
fn scrub(text: &str, key: &Secret) -> String {
    let key = key.expose().trim();
    if key.len() < 4 {
        return text.to_string();
    }
    text.replace(key, "[redacted]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{FALLBACK_REASONS, OPENAI_OUTCOMES};

    #[test]
    fn reason_strings_are_the_metric_label_sets() {
        let reasons: Vec<_> = FallbackReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(reasons, FALLBACK_REASONS);
        // Every attempt outcome but "ok" is a reason a request can fail with.
        assert_eq!(OPENAI_OUTCOMES[0], "ok");
        for outcome in &OPENAI_OUTCOMES[1..] {
            let reason = FallbackReason::ALL.iter().find(|r| r.as_str() == *outcome);
            assert!(reason.is_some_and(|r| !r.is_fast_fail()), "{outcome}");
        }
    }

    #[test]
    fn the_client_and_its_futures_can_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        fn send<F: Send>(_: &F) {}
        send_sync::<OpenAiClient>();
        let mut config = Config::defaults();
        config.openai_api_key = Secret::new("sk-unit-test");
        let client = OpenAiClient::from_config(&config, Arc::new(Metrics::new())).unwrap();
        send(&client.transcribe(&[], "", "en"));
        send(&client.deep_check());
    }

    #[test]
    fn bearer_is_sensitive_and_scrub_removes_the_key() {
        let value = bearer(&Secret::new(" sk-abcdef ")).unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Bearer sk-abcdef");
        assert!(format!("{value:?}").contains("Sensitive"));
        assert_eq!(bearer(&Secret::new("")), None);
        assert_eq!(bearer(&Secret::new("sk-with\nnewline")), None);
        let scrubbed = scrub("echo sk-abcdef twice sk-abcdef", &Secret::new("sk-abcdef"));
        assert_eq!(scrubbed, "echo [redacted] twice [redacted]");
    }
}
