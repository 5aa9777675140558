//! When to try an OpenAI request again, and after how long: pure, so the clock and the dice
//! are arguments.
//!
//! Only failures that another attempt can fix are retried: 429 (rate limit), 5xx and
//! connection errors. A 400/401/403 will fail the same way again, a malformed answer points at
//! a misconfigured base URL, and a timeout has used the whole deadline. Every retry must fit
//! in the utterance's deadline with some time left for the request itself, because a final
//! that arrives after the deadline is worth less than the local one available now.

use std::time::Duration;

use super::FallbackReason;

/// First backoff; doubled per attempt up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_millis(1_500);
/// A retry needs at least this much of the deadline left after its wait: a transcription
/// round trip rarely takes less.
pub const MIN_ATTEMPT_BUDGET: Duration = Duration::from_millis(150);
/// Even with a long deadline, stop hammering a failing upstream after this many attempts.
pub const MAX_ATTEMPTS: u32 = 5;
/// Longest `Retry-After` taken literally; longer ones exceed every utterance deadline anyway,
/// so [`next_delay`] gives up, and clamping keeps absurd values (`1e20`) from overflowing.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3_600);

/// `retry-after-ms` (milliseconds, preferred) or `Retry-After` (seconds) header values as
/// a wait: never panics, `None` for anything that is not a finite non-negative number (HTTP
/// dates included), clamped to [`RETRY_AFTER_MAX`].
pub fn parse_retry_after(ms: Option<&str>, seconds: Option<&str>) -> Option<Duration> {
    let parse = |text: &str, ms_per_unit: f64| -> Option<Duration> {
        let value: f64 = text.trim().parse().ok()?;
        if !(value.is_finite() && value >= 0.0) {
            return None;
        }
        let cap = RETRY_AFTER_MAX.as_millis() as f64;
        Some(Duration::from_millis(
            (value * ms_per_unit).min(cap).round() as u64,
        ))
    };
    ms.and_then(|ms| parse(ms, 1.0))
        .or_else(|| seconds.and_then(|s| parse(s, 1_000.0)))
}

pub fn is_retryable(reason: FallbackReason) -> bool {
    matches!(
        reason,
        FallbackReason::Http429 | FallbackReason::Http5xx | FallbackReason::Network
    )
}

/// Exponential backoff before attempt `attempt + 1`, with "equal jitter": half fixed, half
/// random (`jitter` in [0, 1)), so that sessions failing together do not retry together.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX);
    full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// The wait before another attempt, or `None` to give up with `reason`.
///
/// `attempt` is the number of attempts made so far; `retry_after` is the server's
/// `Retry-After`, honoured exactly when it fits in `remaining` (the deadline left now), and a
/// reason to give up at once when it does not.
pub fn next_delay(
    attempt: u32,
    reason: FallbackReason,
    retry_after: Option<Duration>,
    remaining: Duration,
    jitter: f64,
) -> Option<Duration> {
    if !is_retryable(reason) || attempt >= MAX_ATTEMPTS {
        return None;
    }
    let delay = retry_after.unwrap_or_else(|| backoff(attempt, jitter));
    (delay + MIN_ATTEMPT_BUDGET <= remaining).then_some(delay)
}

/// A random number in [0, 1) without a crate: `RandomState` is seeded per instance.
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use FallbackReason::*;

    const PLENTY: Duration = Duration::from_secs(30);

    #[test]
    fn only_transient_failures_are_retried() {
        for reason in [Http429, Http5xx, Network] {
            assert!(
                next_delay(1, reason, None, PLENTY, 0.5).is_some(),
                "{reason:?}"
            );
        }
        for reason in [Timeout, Http4xx, BadResponse, CircuitOpen, NoApiKey] {
            assert_eq!(next_delay(1, reason, None, PLENTY, 0.5), None, "{reason:?}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        assert_eq!(backoff(1, 0.0), BACKOFF_BASE / 2);
        assert_eq!(backoff(1, 1.0), BACKOFF_BASE);
        assert_eq!(backoff(2, 0.0), BACKOFF_BASE);
        assert_eq!(backoff(3, 1.0), BACKOFF_BASE * 4);
        assert_eq!(backoff(30, 1.0), BACKOFF_MAX);
        let d = backoff(2, 0.5);
        assert!(d > BACKOFF_BASE && d < BACKOFF_BASE * 2);
    }

    #[test]
    fn retry_after_is_honoured_when_it_fits_else_give_up() {
        let ra = Duration::from_secs(1);
        assert_eq!(
            next_delay(1, Http429, Some(ra), Duration::from_secs(3), 0.5),
            Some(ra)
        );
        assert_eq!(
            next_delay(
                1,
                Http429,
                Some(Duration::from_secs(10)),
                Duration::from_secs(3),
                0.5
            ),
            None
        );
        assert_eq!(
            next_delay(1, Http429, Some(ra), ra, 0.5),
            None,
            "no time left for the request"
        );
    }

    #[test]
    fn gives_up_when_backoff_exceeds_the_deadline_or_attempts_run_out() {
        assert_eq!(
            next_delay(1, Http5xx, None, Duration::from_millis(200), 1.0),
            None
        );
        assert!(next_delay(MAX_ATTEMPTS - 1, Network, None, PLENTY, 0.0).is_some());
        assert_eq!(next_delay(MAX_ATTEMPTS, Network, None, PLENTY, 0.0), None);
    }

    #[test]
    fn absurd_retry_after_is_clamped_not_a_panic() {
        assert_eq!(parse_retry_after(None, Some("1e20")), Some(RETRY_AFTER_MAX));
        assert_eq!(
            parse_retry_after(Some("1e308"), None),
            Some(RETRY_AFTER_MAX)
        );
        assert_eq!(parse_retry_after(None, Some("-1")), None);
        assert_eq!(parse_retry_after(None, Some("NaN")), None);
        assert_eq!(parse_retry_after(None, Some("inf")), None);
        assert_eq!(
            parse_retry_after(Some("junk"), Some("0.25")),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let values: Vec<f64> = (0..20).map(|_| jitter()).collect();
        assert!(values.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(values.windows(2).any(|w| w[0] != w[1]));
    }
}
