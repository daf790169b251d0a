//! Where a message for a session that is not live here must go, when instances share a store.
//!
//! Owns the pure decision ([`step`]) from a session's lease (as `store::lease::decide` reads
//! it) and whether the request was forwarded already: forward it to the owner, take the
//! session over, or tell the client its owner is unavailable for now. Does not own the lease
//! SQL (`store::lease`), the HTTP hop (`api::sessions`) nor rebuilding the session
//! (`SessionManager::take_over`).

use crate::store::lease::Decision;

/// What to do with a message for a session that is not live on this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Another instance owns it and its lease runs: send the request there. Should that
    /// instance not answer, the client is told to retry after the lease's remaining time.
    Forward { owner: String, retry_after_ms: i64 },
    /// Nobody holds a valid lease on it (or this instance does, without the session live):
    /// take the lease and rebuild the session here. `from` is the lease's last owner.
    TakeOver { from: Option<String> },
    /// Another instance owns it, but the request came from another instance already: never a
    /// second hop (the instances disagree on the owner for a moment); retry later.
    Unavailable { owner: String, retry_after_ms: i64 },
}

/// The step for a session whose lease reads `decision` on an instance that does not run it;
/// `forwarded` says the request came from another instance (the loop guard).
pub fn step(decision: Decision, forwarded: bool) -> Step {
    match decision {
        Decision::Wait { owner, for_ms } if forwarded => Step::Unavailable {
            owner,
            retry_after_ms: for_ms,
        },
        Decision::Wait { owner, for_ms } => Step::Forward {
            owner,
            retry_after_ms: for_ms,
        },
        Decision::Acquire => Step::TakeOver { from: None },
        Decision::TakeOver { from } => Step::TakeOver { from: Some(from) },
        // Ours on paper but not live here (this instance restarted within the lease, or the
        // session's actor is gone): rebuild it, re-acquiring the lease first.
        Decision::Renew | Decision::Lapsed => Step::TakeOver { from: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_lease_of_another_instance_is_forwarded_once_and_never_twice() {
        let wait = Decision::Wait {
            owner: "a".into(),
            for_ms: 2_500,
        };
        assert_eq!(
            step(wait.clone(), false),
            Step::Forward {
                owner: "a".into(),
                retry_after_ms: 2_500
            }
        );
        assert_eq!(
            step(wait, true),
            Step::Unavailable {
                owner: "a".into(),
                retry_after_ms: 2_500
            }
        );
    }

    #[test]
    fn an_expired_or_missing_lease_is_taken_over_whoever_asks() {
        for forwarded in [false, true] {
            assert_eq!(
                step(Decision::TakeOver { from: "a".into() }, forwarded),
                Step::TakeOver {
                    from: Some("a".into())
                }
            );
            assert_eq!(
                step(Decision::Acquire, forwarded),
                Step::TakeOver { from: None }
            );
        }
    }

    #[test]
    fn a_lease_of_our_own_without_the_session_live_is_rebuilt_here() {
        assert_eq!(step(Decision::Renew, true), Step::TakeOver { from: None });
        assert_eq!(step(Decision::Lapsed, false), Step::TakeOver { from: None });
    }
}
