//! The per-provider circuit breaker, as pure code (as Open Astra's resilient client does).
//!
//! Closed → open after `failure_threshold` failures within `window`; open → half-open once
//! `open_for` has passed; half-open → closed after `close_after` successes in a row, and back
//! to open on any failure. Time is passed in, so every transition is tested without sleeping.
//! Does not own which failures count (the client does: only retryable ones) nor the fallback.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Breaker thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failure_threshold: u32,
    pub window: Duration,
    pub open_for: Duration,
    pub close_after: u32,
}

impl Default for BreakerPolicy {
    /// Open Astra's figures: 5 failures in 60 s, 60 s open, 2 successes to close.
    fn default() -> Self {
        BreakerPolicy {
            failure_threshold: 5,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(60),
            close_after: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// One provider's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: BreakerState,
    /// Failure times inside the window (closed state only).
    failures: VecDeque<Instant>,
    opened_at: Option<Instant>,
    successes: u32,
    /// Times the breaker opened, for `/health`.
    pub trips: u64,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Breaker {
            policy,
            state: BreakerState::Closed,
            failures: VecDeque::new(),
            opened_at: None,
            successes: 0,
            trips: 0,
        }
    }

    /// The state at `now` (an open breaker whose time is up reads as half-open).
    pub fn state(&mut self, now: Instant) -> BreakerState {
        if self.state == BreakerState::Open
            && self
                .opened_at
                .is_some_and(|at| now.saturating_duration_since(at) >= self.policy.open_for)
        {
            self.state = BreakerState::HalfOpen;
            self.successes = 0;
        }
        self.state
    }

    /// May a call go to the provider now? (Closed and half-open let calls through.)
    pub fn allow(&mut self, now: Instant) -> bool {
        self.state(now) != BreakerState::Open
    }

    /// How long until an open breaker lets a probe through.
    pub fn retry_in(&mut self, now: Instant) -> Duration {
        match (self.state(now), self.opened_at) {
            (BreakerState::Open, Some(at)) => self
                .policy
                .open_for
                .saturating_sub(now.saturating_duration_since(at)),
            _ => Duration::ZERO,
        }
    }

    pub fn record_success(&mut self, now: Instant) {
        match self.state(now) {
            BreakerState::HalfOpen => {
                self.successes += 1;
                if self.successes >= self.policy.close_after {
                    self.state = BreakerState::Closed;
                    self.failures.clear();
                    self.opened_at = None;
                }
            }
            BreakerState::Closed | BreakerState::Open => {}
        }
    }

    pub fn record_failure(&mut self, now: Instant) {
        match self.state(now) {
            BreakerState::HalfOpen => self.open(now),
            BreakerState::Open => {}
            BreakerState::Closed => {
                self.failures.push_back(now);
                while self
                    .failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > self.policy.window)
                {
                    self.failures.pop_front();
                }
                if self.failures.len() as u32 >= self.policy.failure_threshold {
                    self.open(now);
                }
            }
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.failures.clear();
        self.successes = 0;
        self.trips += 1;
    }

    /// Failures counted in the current window (closed state).
    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn five_failures_in_the_window_open_it_and_it_half_opens_after_the_open_time() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerPolicy::default());
        for i in 0..4 {
            b.record_failure(t0 + i * S);
        }
        assert_eq!(b.state(t0 + 4 * S), BreakerState::Closed);
        b.record_failure(t0 + 5 * S);
        assert_eq!(b.state(t0 + 5 * S), BreakerState::Open);
        assert!(!b.allow(t0 + 64 * S));
        assert_eq!(b.retry_in(t0 + 64 * S), S);
        assert_eq!(b.state(t0 + 65 * S), BreakerState::HalfOpen);
        b.record_success(t0 + 66 * S);
        assert_eq!(
            b.state(t0 + 66 * S),
            BreakerState::HalfOpen,
            "one success is not enough"
        );
        b.record_success(t0 + 67 * S);
        assert_eq!(b.state(t0 + 67 * S), BreakerState::Closed);
        assert_eq!(b.trips, 1);
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_open_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerPolicy::default());
        for i in 0..20 {
            b.record_failure(t0 + i * 16 * S);
        }
        assert_eq!(b.state(t0 + 400 * S), BreakerState::Closed);
    }

    #[test]
    fn a_failure_while_half_open_opens_it_again_for_a_full_period() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerPolicy::default());
        for _ in 0..5 {
            b.record_failure(t0);
        }
        b.record_success(t0 + 61 * S);
        b.record_failure(t0 + 62 * S);
        assert_eq!(b.state(t0 + 62 * S), BreakerState::Open);
        assert_eq!(b.state(t0 + 121 * S), BreakerState::Open);
        assert_eq!(b.state(t0 + 122 * S), BreakerState::HalfOpen);
        assert_eq!(b.trips, 2);
    }

    proptest! {
        /// Whatever happens, the breaker never opens with fewer than `threshold` failures in a
        /// window while closed, and an open breaker always refuses calls until `open_for` passed.
        #[test]
        fn open_only_after_threshold_and_stays_open_for_the_period(
            events in proptest::collection::vec((0u64..5_000, any::<bool>()), 1..200)
        ) {
            let policy = BreakerPolicy { failure_threshold: 3, window: Duration::from_millis(1_000),
                open_for: Duration::from_millis(2_000), close_after: 2 };
            let t0 = Instant::now();
            let mut b = Breaker::new(policy);
            let mut now = t0;
            let mut failures: Vec<Instant> = Vec::new();
            for (step, ok) in events {
                now += Duration::from_millis(step);
                let before = b.state(now);
                if before == BreakerState::Open {
                    prop_assert!(!b.allow(now));
                    continue;
                }
                if ok { b.record_success(now) } else { b.record_failure(now) }
                if !ok && before == BreakerState::Closed {
                    failures.push(now);
                    let in_window = failures.iter().filter(|t| now.duration_since(**t) <= policy.window).count();
                    let opened = b.state(now) == BreakerState::Open;
                    prop_assert_eq!(opened, in_window >= 3);
                    if opened { failures.clear(); }
                }
                if before == BreakerState::HalfOpen && !ok {
                    prop_assert_eq!(b.state(now), BreakerState::Open);
                    failures.clear();
                }
                if b.state(now) == BreakerState::Closed && before != BreakerState::Closed {
                    failures.clear();
                }
            }
        }
    }
}
