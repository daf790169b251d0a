//! Values a hook is given but may never read (the upstream's raw answer and headers), kept on
//! the host side until the plugin reads them: most plugins never do, and converting them into
//! the engine and back was most of an `afterReceive` call.
//!
//! Owns the stash of such values and the marker that stands for an unread one in a hook's
//! answer. Does not define the JavaScript accessors (the prelude does) or convert values
//! (`convert.rs`).

use std::collections::HashMap;

use serde_json::Value as Json;

/// Starts the string an unread value's accessor gives while the host reads a hook's answer;
/// a NUL keeps it apart from any key or text a real answer holds.
pub const MARKER: &str = "\u{0}switchyard:lazy:";

/// The stash. Slots belong to the call that made them and go when it ends.
#[derive(Debug, Default)]
pub struct Lazy {
    next: u64,
    values: HashMap<u64, Json>,
    /// Slots of calls that wait on a promise, by call; the running call's are in `running`.
    waiting: HashMap<u64, Vec<u64>>,
    running: Vec<u64>,
    /// Set while the host reads an answer: an accessor then answers its marker.
    pub exporting: bool,
}

impl Lazy {
    /// Keeps `value` for the running call; the slot's number goes into the accessor.
    pub fn stash(&mut self, value: Json) -> u64 {
        self.next += 1;
        self.values.insert(self.next, value);
        self.running.push(self.next);
        self.next
    }

    /// The plugin read slot `slot`: the value moves into the engine.
    pub fn take(&mut self, slot: u64) -> Option<Json> {
        self.values.remove(&slot)
    }

    /// The value a marker in an answer stands for (an answer may hold it more than once).
    pub fn resolve(&self, text: &str) -> Option<Json> {
        let slot: u64 = text.strip_prefix(MARKER)?.parse().ok()?;
        self.values.get(&slot).cloned()
    }

    /// The marker of slot `slot`.
    pub fn marker(slot: u64) -> String {
        format!("{MARKER}{slot}")
    }

    /// The running call now waits on a promise: its slots stay until call `call` ends.
    pub fn park(&mut self, call: u64) {
        let slots = std::mem::take(&mut self.running);
        if !slots.is_empty() {
            self.waiting.insert(call, slots);
        }
    }

    /// The running call ended: its slots go.
    pub fn end_running(&mut self) {
        for slot in std::mem::take(&mut self.running) {
            self.values.remove(&slot);
        }
    }

    /// Call `call` ended (answered, failed or abandoned): its slots go.
    pub fn end(&mut self, call: u64) {
        for slot in self.waiting.remove(&call).unwrap_or_default() {
            self.values.remove(&slot);
        }
    }

    /// Values held, for tests.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.values.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_marker_resolves_to_its_value_as_often_as_it_appears() {
        let mut lazy = Lazy::default();
        let slot = lazy.stash(json!({"id": 1}));
        let marker = Lazy::marker(slot);
        assert_eq!(lazy.resolve(&marker), Some(json!({"id": 1})));
        assert_eq!(lazy.resolve(&marker), Some(json!({"id": 1})));
        assert_eq!(lazy.resolve("switchyard:lazy:1"), None, "no NUL, no marker");
        assert_eq!(lazy.resolve(&format!("{MARKER}x")), None);
    }

    #[test]
    fn slots_go_with_their_call_sync_or_waiting() {
        let mut lazy = Lazy::default();
        lazy.stash(json!(1));
        lazy.stash(json!(2));
        lazy.end_running();
        assert_eq!(lazy.len(), 0);

        let a = lazy.stash(json!("a"));
        lazy.park(7);
        let b = lazy.stash(json!("b"));
        lazy.park(8);
        assert_eq!(lazy.len(), 2);
        lazy.end(7);
        assert_eq!(lazy.resolve(&Lazy::marker(a)), None);
        assert_eq!(lazy.resolve(&Lazy::marker(b)), Some(json!("b")));
        assert_eq!(lazy.take(b), Some(json!("b")));
        lazy.end(8);
        assert_eq!(lazy.len(), 0);
    }
}
