//! Restart policy: pure decisions, no actors, no clocks of its own.
//!
//! Owns the answer to "a child exited with this reason at this instant: restart it (after how
//! long), leave it stopped, or give up?". The caller supplies the instant and the jitter sample,
//! so the same inputs always give the same decision and the rules can be property-tested.
//! Does not own timers, actors or health reporting (`supervisor::Supervisor` does).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// When a child that exited is started again (OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartType {
    /// Always restarted.
    Permanent,
    /// Restarted only after an abnormal exit (panic or error).
    Transient,
    /// Never restarted.
    Temporary,
}

/// Why a child's actor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// It finished its work on its own.
    Normal,
    /// Its supervisor asked it to stop.
    Shutdown,
    /// It panicked; the text is the panic message.
    Panic(String),
    /// It reported a failure (for example a start that failed).
    Error(String),
}

impl ExitReason {
    pub fn is_abnormal(&self) -> bool {
        matches!(self, ExitReason::Panic(_) | ExitReason::Error(_))
    }

    /// A short human description, used as `lastError`.
    pub fn describe(&self) -> String {
        match self {
            ExitReason::Normal => "exited normally".into(),
            ExitReason::Shutdown => "shut down".into(),
            ExitReason::Panic(msg) => format!("panicked: {msg}"),
            ExitReason::Error(msg) => msg.clone(),
        }
    }
}

/// At most `max_restarts` restarts within any `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intensity {
    pub max_restarts: u32,
    pub period: Duration,
}

/// Exponential backoff with symmetric jitter and a reset after a healthy run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    pub factor: f64,
    /// Fraction of the delay added or removed at random (0.2 = ±20 %).
    pub jitter: f64,
    /// A run this long without a crash resets the delay to `min`.
    pub reset_after: Duration,
}

impl Backoff {
    /// Delay before restart number `attempt` (0-based since the last reset). `unit` is a uniform
    /// sample in [0, 1) that picks the jitter.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.min.as_secs_f64() * self.factor.powi(attempt.min(64) as i32);
        let capped = base.min(self.max.as_secs_f64());
        let spread = self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((capped * (1.0 + spread)).max(0.0))
    }

    /// The bounds every delay lies in.
    pub fn bounds(&self) -> (Duration, Duration) {
        (
            self.min.mul_f64(1.0 - self.jitter),
            self.max.mul_f64(1.0 + self.jitter),
        )
    }
}

/// Intensity plus backoff: everything that decides a restart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    pub intensity: Intensity,
    pub backoff: Backoff,
}

impl Default for RestartPolicy {
    /// The plugin defaults: 5 restarts in 30 s, 200 ms → 30 s, ×2, ±20 %, reset after 60 s.
    fn default() -> Self {
        RestartPolicy {
            intensity: Intensity {
                max_restarts: 5,
                period: Duration::from_secs(30),
            },
            backoff: Backoff {
                min: Duration::from_millis(200),
                max: Duration::from_secs(30),
                factor: 2.0,
                jitter: 0.2,
                reset_after: Duration::from_secs(60),
            },
        }
    }
}

/// What to do about a child that exited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Start it again after `delay`; `attempt` counts restarts since the last reset.
    Restart { delay: Duration, attempt: u32 },
    /// Leave it stopped; its restart type says so.
    Stay,
    /// The restart budget is spent: park it (or escalate).
    GiveUp { restarts_in_period: u32 },
}

/// The restart history of one child.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    /// Instants of restarts still inside the intensity period.
    recent: VecDeque<Instant>,
    /// Restarts since the backoff was last reset.
    consecutive: u32,
    /// When the current instance started running.
    running_since: Option<Instant>,
}

impl RestartTracker {
    /// Records that the child is running (a healthy start).
    pub fn started(&mut self, now: Instant) {
        self.running_since = Some(now);
    }

    /// Restarts counted in the current window, as of `now`.
    pub fn restarts_in_period(&mut self, now: Instant, period: Duration) -> u32 {
        self.prune(now, period);
        self.recent.len() as u32
    }

    fn prune(&mut self, now: Instant, period: Duration) {
        while let Some(first) = self.recent.front() {
            if now.saturating_duration_since(*first) >= period {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    /// Decides what happens after an exit at `now`. A restart is counted when it is decided.
    pub fn on_exit(
        &mut self,
        now: Instant,
        restart: RestartType,
        reason: &ExitReason,
        policy: &RestartPolicy,
        unit: f64,
    ) -> Decision {
        let healthy_run = self
            .running_since
            .take()
            .map(|since| now.saturating_duration_since(since));
        let wants_restart = match restart {
            RestartType::Permanent => *reason != ExitReason::Shutdown,
            RestartType::Transient => reason.is_abnormal(),
            RestartType::Temporary => false,
        };
        if !wants_restart {
            return Decision::Stay;
        }
        if healthy_run.is_some_and(|run| run >= policy.backoff.reset_after) {
            self.consecutive = 0;
        }
        self.prune(now, policy.intensity.period);
        if self.recent.len() as u32 >= policy.intensity.max_restarts {
            return Decision::GiveUp {
                restarts_in_period: self.recent.len() as u32,
            };
        }
        self.recent.push_back(now);
        let attempt = self.consecutive;
        self.consecutive = self.consecutive.saturating_add(1);
        Decision::Restart {
            delay: policy.backoff.delay(attempt, unit),
            attempt,
        }
    }

    /// Forgets the history (a manual restart or an unpark starts from scratch).
    pub fn reset(&mut self) {
        *self = RestartTracker::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RestartPolicy {
        RestartPolicy::default()
    }

    fn panic() -> ExitReason {
        ExitReason::Panic("boom".into())
    }

    #[test]
    fn backoff_doubles_from_min_and_caps_at_max() {
        let b = policy().backoff;
        let mid = 0.5; // no jitter
        assert_eq!(b.delay(0, mid), Duration::from_millis(200));
        assert_eq!(b.delay(1, mid), Duration::from_millis(400));
        assert_eq!(b.delay(3, mid), Duration::from_millis(1600));
        assert_eq!(b.delay(20, mid), Duration::from_secs(30));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(160));
        assert!(b.delay(0, 0.999_999) > Duration::from_millis(239));
    }

    #[test]
    fn sixth_crash_within_the_period_gives_up() {
        let p = policy();
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        for i in 0..5 {
            let now = t0 + Duration::from_secs(i);
            t.started(now);
            assert!(matches!(
                t.on_exit(now, RestartType::Permanent, &panic(), &p, 0.5),
                Decision::Restart { attempt, .. } if attempt == i as u32
            ));
        }
        let d = t.on_exit(
            t0 + Duration::from_secs(5),
            RestartType::Permanent,
            &panic(),
            &p,
            0.5,
        );
        assert_eq!(
            d,
            Decision::GiveUp {
                restarts_in_period: 5
            }
        );
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let p = policy();
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        for i in 0..5 {
            t.on_exit(
                t0 + Duration::from_secs(i),
                RestartType::Permanent,
                &panic(),
                &p,
                0.5,
            );
        }
        // 31 s after the first restart, one slot is free again.
        let d = t.on_exit(
            t0 + Duration::from_secs(31),
            RestartType::Permanent,
            &panic(),
            &p,
            0.5,
        );
        assert!(matches!(d, Decision::Restart { .. }));
    }

    #[test]
    fn a_long_healthy_run_resets_the_backoff() {
        let p = policy();
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        t.on_exit(t0, RestartType::Permanent, &panic(), &p, 0.5);
        t.started(t0);
        let d = t.on_exit(
            t0 + Duration::from_secs(1),
            RestartType::Permanent,
            &panic(),
            &p,
            0.5,
        );
        assert_eq!(
            d,
            Decision::Restart {
                delay: Duration::from_millis(400),
                attempt: 1
            }
        );
        t.started(t0 + Duration::from_secs(1));
        let d = t.on_exit(
            t0 + Duration::from_secs(70),
            RestartType::Permanent,
            &panic(),
            &p,
            0.5,
        );
        assert_eq!(
            d,
            Decision::Restart {
                delay: Duration::from_millis(200),
                attempt: 0
            }
        );
    }

    #[test]
    fn restart_types() {
        let p = policy();
        let now = Instant::now();
        let mut t = RestartTracker::default();
        assert_eq!(
            t.on_exit(now, RestartType::Temporary, &panic(), &p, 0.5),
            Decision::Stay
        );
        assert_eq!(
            t.on_exit(now, RestartType::Transient, &ExitReason::Normal, &p, 0.5),
            Decision::Stay
        );
        assert!(matches!(
            t.on_exit(now, RestartType::Transient, &panic(), &p, 0.5),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            t.on_exit(now, RestartType::Permanent, &ExitReason::Normal, &p, 0.5),
            Decision::Restart { .. }
        ));
        assert_eq!(
            t.on_exit(now, RestartType::Permanent, &ExitReason::Shutdown, &p, 0.5),
            Decision::Stay
        );
    }

    fn arb_policy() -> impl Strategy<Value = RestartPolicy> {
        (
            1u32..8,
            1u64..5_000,
            1u64..1_000,
            1u64..60_000,
            1.0f64..4.0,
            0.0f64..0.99,
        )
            .prop_map(|(max, period, min, max_ms, factor, jitter)| RestartPolicy {
                intensity: Intensity {
                    max_restarts: max,
                    period: Duration::from_millis(period),
                },
                backoff: Backoff {
                    min: Duration::from_millis(min),
                    max: Duration::from_millis(min.max(max_ms)),
                    factor,
                    jitter,
                    reset_after: Duration::from_millis(period),
                },
            })
    }

    fn arb_reason() -> impl Strategy<Value = ExitReason> {
        prop_oneof![
            Just(ExitReason::Normal),
            Just(ExitReason::Panic("p".into())),
            Just(ExitReason::Error("e".into())),
        ]
    }

    proptest! {
        /// Never more than the intensity in any window of the period's length.
        #[test]
        fn never_more_restarts_than_the_intensity_in_any_window(
            policy in arb_policy(),
            gaps in prop::collection::vec(0u64..2_000, 1..200),
            units in prop::collection::vec(0.0f64..1.0, 200),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut t = RestartTracker::default();
            let mut restarts = Vec::new();
            for (i, gap) in gaps.iter().enumerate() {
                now += Duration::from_millis(*gap);
                t.started(now);
                if let Decision::Restart { .. } = t.on_exit(now, RestartType::Permanent, &ExitReason::Panic("x".into()), &policy, units[i]) {
                    restarts.push(now);
                }
            }
            for (i, at) in restarts.iter().enumerate() {
                let in_window = restarts[..=i].iter().filter(|r| at.duration_since(**r) < policy.intensity.period).count();
                prop_assert!(in_window as u32 <= policy.intensity.max_restarts);
            }
        }

        /// Every delay lies within [min·(1−jitter), max·(1+jitter)].
        #[test]
        fn delays_stay_within_bounds(policy in arb_policy(), attempt in 0u32..100, unit in 0.0f64..1.0) {
            let (lo, hi) = policy.backoff.bounds();
            let d = policy.backoff.delay(attempt, unit);
            // One microsecond of slack for float rounding.
            prop_assert!(d + Duration::from_micros(1) >= lo, "{d:?} < {lo:?}");
            prop_assert!(d <= hi + Duration::from_micros(1), "{d:?} > {hi:?}");
        }

        /// Temporary children never restart, whatever happened.
        #[test]
        fn temporary_children_never_restart(policy in arb_policy(), reasons in prop::collection::vec(arb_reason(), 1..50)) {
            let mut t = RestartTracker::default();
            let now = Instant::now();
            for r in &reasons {
                prop_assert_eq!(t.on_exit(now, RestartType::Temporary, r, &policy, 0.5), Decision::Stay);
            }
        }

        /// Transient children restart only after abnormal exits.
        #[test]
        fn transient_children_restart_only_when_abnormal(policy in arb_policy(), reason in arb_reason()) {
            let mut t = RestartTracker::default();
            let d = t.on_exit(Instant::now(), RestartType::Transient, &reason, &policy, 0.5);
            prop_assert_eq!(matches!(d, Decision::Restart { .. }), reason.is_abnormal());
        }
    }
}
