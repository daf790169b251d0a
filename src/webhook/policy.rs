//! The pure decisions of a delivery: its states, whether an answer counts as delivered, and
//! when to try again (exponential backoff with jitter) or give up (`dead`).
//!
//! Owns no clock and no randomness: the caller passes the attempt count and a uniform sample,
//! so every decision is a function of its inputs and tested as such. Does not send anything
//! (`dispatcher`).

use std::time::Duration;

use serde::Serialize;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Recorded, its first attempt not made yet.
    Pending,
    /// An attempt failed; another one is due at `nextAttemptAt`.
    Retrying,
    /// A 2xx answer came back.
    Delivered,
    /// Every attempt failed (the dead-letter state): no more tries.
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    /// The state a stored row names (an unknown text reads as `dead`: never retried blindly).
    pub fn parse(text: &str) -> DeliveryState {
        match text {
            "pending" => DeliveryState::Pending,
            "retrying" => DeliveryState::Retrying,
            "delivered" => DeliveryState::Delivered,
            _ => DeliveryState::Dead,
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered with this status.
    Answered(u16),
    /// No answer: a network error or the timeout (the reason, for `lastError`).
    Failed(String),
}

impl Attempt {
    /// Only a 2xx counts as delivered; redirects are not followed (a signed body is not sent
    /// to wherever a receiver points).
    pub fn delivered(&self) -> bool {
        matches!(self, Attempt::Answered(status) if (200..300).contains(status))
    }
}

/// What happens after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Try again after this long.
    Retry(Duration),
    Dead,
}

/// Retries (`[webhooks]`): at most `max_attempts` tries in all, the n-th retry after about
/// `base × 2^(n-1)`, never more than `cap`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    /// The wait after the `attempts`-th failed attempt (1-based). "Equal jitter": half the
    /// exponential delay is fixed, the other half drawn by `unit` (uniform in [0, 1)), so
    /// receivers that failed together do not get retried together, and no wait is shorter than
    /// half its step.
    pub fn delay(&self, attempts: u32, unit: f64) -> Duration {
        let exponent = attempts.saturating_sub(1).min(62) as i32;
        let step = (self.base.as_secs_f64() * 2f64.powi(exponent)).min(self.cap.as_secs_f64());
        let unit = unit.clamp(0.0, 1.0);
        Duration::from_secs_f64(step / 2.0 + step / 2.0 * unit)
    }

    /// What follows the `attempts`-th attempt (1-based), which ended as `outcome`.
    pub fn after(&self, attempts: u32, outcome: &Attempt, unit: f64) -> Next {
        if outcome.delivered() {
            Next::Delivered
        } else if attempts >= self.max_attempts {
            Next::Dead
        } else {
            Next::Retry(self.delay(attempts, unit))
        }
    }
}

impl Default for RetryPolicy {
    /// The defaults of `[webhooks]`: 6 attempts, 1 s doubling, at most 5 min.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delays_double_from_the_base_and_stop_at_the_cap() {
        let p = RetryPolicy::default();
        // The top of each step (unit → 1) and its floor (unit 0, half the step).
        assert_eq!(p.delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(p.delay(10, 1.0), Duration::from_secs(300));
        assert_eq!(p.delay(40, 0.0), Duration::from_secs(150));
        assert_eq!(p.delay(u32::MAX, 1.0), Duration::from_secs(300));
    }

    #[test]
    fn only_a_2xx_delivers_and_the_last_failure_is_dead() {
        let p = RetryPolicy::default();
        assert_eq!(p.after(1, &Attempt::Answered(200), 0.5), Next::Delivered);
        assert_eq!(p.after(6, &Attempt::Answered(204), 0.5), Next::Delivered);
        for failure in [
            Attempt::Answered(503),
            Attempt::Answered(302),
            Attempt::Answered(404),
            Attempt::Failed("connection refused".into()),
        ] {
            assert!(
                matches!(p.after(1, &failure, 0.5), Next::Retry(_)),
                "{failure:?}"
            );
            assert!(
                matches!(p.after(5, &failure, 0.5), Next::Retry(_)),
                "{failure:?}"
            );
            assert_eq!(p.after(6, &failure, 0.5), Next::Dead, "{failure:?}");
        }
    }

    #[test]
    fn states_read_back_as_written() {
        for state in [
            DeliveryState::Pending,
            DeliveryState::Retrying,
            DeliveryState::Delivered,
            DeliveryState::Dead,
        ] {
            assert_eq!(DeliveryState::parse(state.as_str()), state);
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
        }
        assert_eq!(DeliveryState::parse("garbage"), DeliveryState::Dead);
    }

    fn arb_policy() -> impl Strategy<Value = RetryPolicy> {
        (1u32..20, 1u64..10_000, 1u64..1_000_000).prop_map(|(max_attempts, base, cap)| {
            RetryPolicy {
                max_attempts,
                base: Duration::from_millis(base),
                cap: Duration::from_millis(cap),
            }
        })
    }

    proptest! {
        #[test]
        fn every_delay_lies_between_half_its_step_and_the_cap(
            p in arb_policy(), attempts in 1u32..200, unit in 0.0f64..1.0
        ) {
            let delay = p.delay(attempts, unit);
            prop_assert!(delay <= p.cap + Duration::from_micros(1));
            let floor = p.base.min(p.cap) / 2;
            prop_assert!(delay + Duration::from_micros(1) >= floor);
        }

        #[test]
        fn the_top_of_a_step_never_shrinks(p in arb_policy(), attempts in 1u32..200) {
            prop_assert!(p.delay(attempts + 1, 1.0) >= p.delay(attempts, 1.0));
        }

        #[test]
        fn a_failing_receiver_gets_exactly_max_attempts(p in arb_policy(), unit in 0.0f64..1.0) {
            let failure = Attempt::Answered(500);
            let mut attempts = 1;
            while let Next::Retry(_) = p.after(attempts, &failure, unit) {
                attempts += 1;
                prop_assert!(attempts <= p.max_attempts);
            }
            prop_assert_eq!(attempts, p.max_attempts);
        }
    }
}
