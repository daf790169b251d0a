//! Where a message for a session that is not live here must go, when instances share a store.
//!
//! Owns the pure decision ([`step`]) from a session's lease (as `store::lease::decide` reads
//! it) and whether the request was forwarded already: forward it to the owner, take the
//! session over, or tell the client its owner is unavailable for now; and the cache of owners
//! ([`OwnerCache`]) that spares a forwarding instance the database reads per message while a
//! lease it read still runs. Does not own the lease SQL (`store::lease`), the HTTP hop
//! (`api::sessions`) nor rebuilding the session (`SessionManager::take_over`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

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

/// Where sessions owned by other instances were last found: their owner and its URL, each
/// until the lease read then runs out. Within that time no other instance may take the session
/// over (the owner renews, or the lease must expire first), so forwarding there is what a
/// fresh read would say, save for a session its owner gave up early (closed or handed over):
/// the forward then fails or answers for itself, and the caller forgets the entry.
#[derive(Debug, Default)]
pub struct OwnerCache {
    entries: HashMap<String, Cached>,
}

#[derive(Debug, Clone)]
struct Cached {
    owner: String,
    url: String,
    until: Instant,
}

/// A cached owner: where to send the request and how long its lease has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub owner: String,
    pub url: String,
    pub retry_after_ms: i64,
}

impl OwnerCache {
    /// At most this many sessions are remembered; past it, expired entries go first, and all
    /// if none had expired (a cache, not a record: a miss costs three reads).
    pub const MAX_ENTRIES: usize = 100_000;

    /// Session `id`'s owner, if one was found and its lease still runs at `now`.
    pub fn get(&self, id: &str, now: Instant) -> Option<Route> {
        let entry = self.entries.get(id)?;
        let left = entry.until.checked_duration_since(now)?;
        if left.is_zero() {
            return None;
        }
        Some(Route {
            owner: entry.owner.clone(),
            url: entry.url.clone(),
            retry_after_ms: left.as_millis().min(i64::MAX as u128) as i64,
        })
    }

    /// Remembers that `owner` (at `url`) holds session `id`'s lease for `for_ms` more from
    /// `now`.
    pub fn remember(&mut self, id: &str, owner: &str, url: &str, for_ms: i64, now: Instant) {
        if for_ms <= 0 {
            self.entries.remove(id);
            return;
        }
        if self.entries.len() >= Self::MAX_ENTRIES && !self.entries.contains_key(id) {
            self.entries.retain(|_, e| e.until > now);
            if self.entries.len() >= Self::MAX_ENTRIES {
                self.entries.clear();
            }
        }
        self.entries.insert(
            id.to_string(),
            Cached {
                owner: owner.to_string(),
                url: url.to_string(),
                until: now + Duration::from_millis(for_ms as u64),
            },
        );
    }

    /// Forgets session `id` (its owner could not be reached, or the session is live here now);
    /// answers whether there was an entry.
    pub fn forget(&mut self, id: &str) -> bool {
        self.entries.remove(id).is_some()
    }

    /// Sessions remembered, expired ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_remembered_until_the_lease_it_read_runs_out() {
        let mut cache = OwnerCache::default();
        let t0 = Instant::now();
        cache.remember("s", "a", "http://a", 3_000, t0);
        let route = cache.get("s", t0 + Duration::from_millis(1_000)).unwrap();
        assert_eq!(
            (route.owner.as_str(), route.url.as_str()),
            ("a", "http://a")
        );
        assert_eq!(route.retry_after_ms, 2_000);
        assert_eq!(cache.get("s", t0 + Duration::from_millis(3_000)), None);
        assert_eq!(cache.get("other", t0), None);
    }

    #[test]
    fn a_forgotten_or_spent_owner_is_read_again() {
        let mut cache = OwnerCache::default();
        let t0 = Instant::now();
        cache.remember("s", "a", "http://a", 3_000, t0);
        assert!(cache.forget("s"));
        assert!(!cache.forget("s"));
        assert_eq!(cache.get("s", t0), None);
        cache.remember("s", "a", "http://a", 3_000, t0);
        cache.remember("s", "a", "http://a", 0, t0);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_stays_bounded_dropping_expired_entries_first() {
        let mut cache = OwnerCache::default();
        let t0 = Instant::now();
        for i in 0..OwnerCache::MAX_ENTRIES {
            let ttl = if i == 0 { 5_000 } else { 10 };
            cache.remember(&format!("s{i}"), "a", "http://a", ttl, t0);
        }
        let later = t0 + Duration::from_millis(100);
        cache.remember("new", "b", "http://b", 1_000, later);
        assert_eq!(
            cache.len(),
            2,
            "the expired entries went, the running ones stayed"
        );
        assert!(cache.get("s0", later).is_some());
        assert!(cache.get("new", later).is_some());
    }

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
