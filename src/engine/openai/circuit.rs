//! The circuit breaker in front of OpenAI, as a pure state machine: the caller passes the clock.
//!
//! Closed: every utterance goes to OpenAI; `threshold` consecutive failed utterances open it.
//! Open: every utterance fails fast (the local final is used) until `cooldown` has passed.
//! Half-open: one utterance is let through as a probe; its success closes the circuit, its
//! failure opens it for another cooldown, and a probe whose caller gave up (the future was
//! dropped) lets the next utterance probe instead of wedging the breaker half-open.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// What the breaker says to an utterance that wants to call OpenAI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Allowed,
    /// Half-open: go ahead; this request decides whether the circuit closes.
    Probe,
    /// Open, or half-open with a probe in flight: use the local final.
    Rejected,
}

/// A state change worth logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inner {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    /// Consecutive failures that open the circuit; 0 disables the breaker.
    threshold: u32,
    cooldown: Duration,
    inner: Inner,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold,
            cooldown,
            inner: Inner::Closed {
                consecutive_failures: 0,
            },
        }
    }

    /// Asks to send one utterance to OpenAI at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.inner {
            Inner::Closed { .. } => Admission::Allowed,
            Inner::Open { until } if now < until => Admission::Rejected,
            Inner::Open { .. }
            | Inner::HalfOpen {
                probe_in_flight: false,
            } => {
                self.inner = Inner::HalfOpen {
                    probe_in_flight: true,
                };
                Admission::Probe
            }
            Inner::HalfOpen {
                probe_in_flight: true,
            } => Admission::Rejected,
        }
    }

    /// An admitted utterance got its transcript.
    pub fn on_success(&mut self) -> Option<Transition> {
        let was_closed = matches!(self.inner, Inner::Closed { .. });
        self.inner = Inner::Closed {
            consecutive_failures: 0,
        };
        (!was_closed).then_some(Transition::Closed)
    }

    /// An admitted utterance failed at `now`.
    pub fn on_failure(&mut self, now: Instant) -> Option<Transition> {
        let failures = match self.inner {
            Inner::Closed {
                consecutive_failures,
            } => consecutive_failures.saturating_add(1),
            Inner::HalfOpen { .. } => self.threshold,
            // Admitted before the circuit opened: the cooldown already runs; keep it.
            Inner::Open { .. } => return None,
        };
        if self.threshold == 0 || failures < self.threshold {
            self.inner = Inner::Closed {
                consecutive_failures: failures,
            };
            return None;
        }
        self.inner = Inner::Open {
            until: now + self.cooldown,
        };
        Some(Transition::Opened)
    }

    /// An admitted probe ended without an outcome (its caller stopped waiting).
    pub fn on_abandoned_probe(&mut self) {
        if self.inner
            == (Inner::HalfOpen {
                probe_in_flight: true,
            })
        {
            self.inner = Inner::HalfOpen {
                probe_in_flight: false,
            };
        }
    }

    /// The state as seen at `now` (an open circuit whose cooldown is over reads half-open).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.inner {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { until } if now < until => CircuitState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(30);

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut cb = CircuitBreaker::new(3, COOLDOWN);
        assert_eq!(cb.admit(t0), Admission::Allowed);
        assert_eq!(cb.on_failure(t0), None);
        assert_eq!(cb.on_failure(t0), None);
        assert_eq!(cb.state(t0), CircuitState::Closed);
        assert_eq!(cb.on_failure(t0), Some(Transition::Opened));
        assert_eq!(cb.state(t0), CircuitState::Open);
        assert_eq!(
            cb.admit(t0 + COOLDOWN - Duration::from_millis(1)),
            Admission::Rejected
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut cb = CircuitBreaker::new(2, COOLDOWN);
        cb.on_failure(t0);
        assert_eq!(cb.on_success(), None);
        assert_eq!(cb.on_failure(t0), None);
        assert_eq!(cb.state(t0), CircuitState::Closed);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_success_closes() {
        let t0 = Instant::now();
        let mut cb = CircuitBreaker::new(1, COOLDOWN);
        cb.on_failure(t0);
        let later = t0 + COOLDOWN;
        assert_eq!(cb.state(later), CircuitState::HalfOpen);
        assert_eq!(cb.admit(later), Admission::Probe);
        assert_eq!(
            cb.admit(later),
            Admission::Rejected,
            "only one probe at a time"
        );
        assert_eq!(cb.on_success(), Some(Transition::Closed));
        assert_eq!(cb.admit(later), Admission::Allowed);
    }

    #[test]
    fn a_failed_probe_reopens_for_a_full_cooldown() {
        let t0 = Instant::now();
        let mut cb = CircuitBreaker::new(3, COOLDOWN);
        for _ in 0..3 {
            cb.on_failure(t0);
        }
        let t1 = t0 + COOLDOWN;
        assert_eq!(cb.admit(t1), Admission::Probe);
        assert_eq!(cb.on_failure(t1), Some(Transition::Opened));
        assert_eq!(cb.admit(t1 + COOLDOWN / 2), Admission::Rejected);
        assert_eq!(cb.admit(t1 + COOLDOWN), Admission::Probe);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_one_probe() {
        let t0 = Instant::now();
        let mut cb = CircuitBreaker::new(1, COOLDOWN);
        cb.on_failure(t0);
        assert_eq!(cb.admit(t0 + COOLDOWN), Admission::Probe);
        cb.on_abandoned_probe();
        assert_eq!(cb.admit(t0 + COOLDOWN), Admission::Probe);
    }

    #[test]
    fn late_failures_while_open_do_not_extend_or_relog() {
        let t0 = Instant::now();
        let mut cb = CircuitBreaker::new(1, COOLDOWN);
        assert_eq!(cb.on_failure(t0), Some(Transition::Opened));
        // A request admitted before the circuit opened fails afterwards.
        assert_eq!(cb.on_failure(t0 + Duration::from_secs(1)), None);
        assert_eq!(cb.state(t0 + COOLDOWN), CircuitState::HalfOpen);
    }

    #[test]
    fn threshold_zero_never_opens() {
        let t0 = Instant::now();
        let mut cb = CircuitBreaker::new(0, COOLDOWN);
        for _ in 0..100 {
            assert_eq!(cb.on_failure(t0), None);
        }
        assert_eq!(cb.admit(t0), Admission::Allowed);
    }
}
