//! The table of each plugin's current instance: its actor's address and mailbox gauge, and the
//! instance itself when its connector hooks run inline.
//!
//! Owns the stable handle callers look plugins up by: every restart and reload replaces the
//! entry, so a caller that keeps a plugin's id (never its `Addr`) always reaches the current
//! instance. Does not own starting or stopping instances (`lifecycle`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix::Addr;

use super::actor::PluginActor;
use super::Plugin;
use crate::health::MailboxGauge;

/// A plugin actor's address with its mailbox gauge (senders count what they queue).
pub type PluginAddr = (Addr<PluginActor>, Arc<MailboxGauge>);

/// Current actor address of each plugin, replaced on every restart, and the instance itself
/// for plugins whose hooks run inline ([`Plugin::hooks_inline`]).
#[derive(Default)]
pub struct AddrTable {
    addrs: RwLock<HashMap<String, PluginAddr>>,
    inline: RwLock<HashMap<String, Arc<dyn Plugin>>>,
}

impl AddrTable {
    pub fn set(&self, id: &str, addr: Addr<PluginActor>, gauge: Arc<MailboxGauge>) {
        self.addrs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), (addr, gauge));
    }

    /// Records the running instance of a plugin whose hooks run inline (or forgets it).
    pub fn set_inline(&self, id: &str, plugin: Option<Arc<dyn Plugin>>) {
        let mut inline = self.inline.write().unwrap_or_else(|e| e.into_inner());
        match plugin {
            Some(p) => inline.insert(id.to_string(), p),
            None => inline.remove(id),
        };
    }

    pub fn inline(&self, id: &str) -> Option<Arc<dyn Plugin>> {
        self.inline
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn get(&self, id: &str) -> Option<PluginAddr> {
        self.addrs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}
