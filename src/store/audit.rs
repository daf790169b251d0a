//! The audit log: every entry the audit plugin records, kept where the operator can read it.
//!
//! Owns keeping entries: in the database when the store is on (kept by the retention rules,
//! read back after restarts), otherwise in memory, bounded per session and in sessions kept.
//! Either way it outlives plugin restarts and closed sessions (Krawall kept it in memory,
//! unbounded, lost on restart). Does not own what an entry says (the audit plugin does).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::writer::{StoreHandle, Write};
use super::{AuditEntry, StoreError};

/// The audit log. With the store on, entries are written to the database (kept by the
/// retention rules, read back after restarts); without it, they stay in memory, bounded per
/// session and in sessions kept. Either way it outlives plugin restarts and closed sessions
/// (Krawall kept it in memory, unbounded, lost on restart).
pub struct AuditLog {
    per_session: usize,
    sessions: usize,
    entries: Mutex<AuditEntries>,
    store: Option<StoreHandle>,
}

/// Entries by session, and sessions in the order they first appeared (to evict the oldest).
#[derive(Default)]
struct AuditEntries {
    by_session: HashMap<String, VecDeque<AuditEntry>>,
    order: VecDeque<String>,
}

impl AuditLog {
    pub fn new(per_session: usize, sessions: usize, store: Option<StoreHandle>) -> Arc<Self> {
        Arc::new(AuditLog {
            per_session,
            sessions,
            entries: Mutex::new(AuditEntries::default()),
            store,
        })
    }

    pub fn push(&self, entry: AuditEntry) {
        if let Some(store) = &self.store {
            store.write(Write::Audit(entry));
            return;
        }
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let AuditEntries {
            by_session: map,
            order,
        } = &mut *guard;
        if !map.contains_key(&entry.session_id) {
            order.push_back(entry.session_id.clone());
            while order.len() > self.sessions {
                if let Some(oldest) = order.pop_front() {
                    map.remove(&oldest);
                }
            }
        }
        let log = map.entry(entry.session_id.clone()).or_default();
        log.push_back(entry);
        while log.len() > self.per_session {
            log.pop_front();
        }
    }

    /// A session's entries, oldest first (from the store when it is on); `None` when there
    /// are none.
    pub async fn entries(&self, session_id: &str) -> Result<Option<Vec<AuditEntry>>, StoreError> {
        match &self.store {
            Some(store) => {
                store.flush().await;
                let entries = store.store().audit(session_id).await?;
                Ok((!entries.is_empty()).then_some(entries))
            }
            None => Ok(self.get(session_id)),
        }
    }

    /// A session's entries in memory, oldest first; `None` when the log has none for it.
    pub fn get(&self, session_id: &str) -> Option<Vec<AuditEntry>> {
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .by_session
            .get(session_id)
            .map(|log| log.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditDirection;

    #[test]
    fn the_audit_log_is_bounded() {
        let log = AuditLog::new(3, 2, None);
        let entry = |s: &str, m: &str| AuditEntry {
            timestamp: String::new(),
            direction: AuditDirection::Sent,
            session_id: s.into(),
            target_id: "t".into(),
            message: Some(m.into()),
            response_content: None,
            response_time_ms: None,
            token_usage: None,
        };
        for i in 0..5 {
            log.push(entry("a", &i.to_string()));
        }
        let kept: Vec<String> = log
            .get("a")
            .unwrap()
            .into_iter()
            .filter_map(|e| e.message)
            .collect();
        assert_eq!(kept, ["2", "3", "4"]);
        log.push(entry("b", "x"));
        log.push(entry("c", "y"));
        assert!(log.get("a").is_none(), "the oldest session is evicted");
        assert!(log.get("b").is_some() && log.get("c").is_some());
    }
}
