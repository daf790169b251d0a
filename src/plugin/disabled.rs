//! The plugins an operator disabled, remembered in the data directory across restarts.
//!
//! Owns the set and its file (`plugins.json`), written atomically (write, then rename) so a
//! crash never leaves half a file. Does not own what disabling does (`ops`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The persisted operator choices.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PersistedState {
    disabled: BTreeSet<String>,
}

/// Why a change could not be remembered.
#[derive(Debug, thiserror::Error)]
#[error("cannot remember the change in {path}: {error}")]
pub struct PersistError {
    pub path: String,
    pub error: String,
}

pub struct Disabled {
    set: Mutex<BTreeSet<String>>,
    file: PathBuf,
}

impl Disabled {
    /// Reads the set from `<data_dir>/plugins.json`; an unreadable file is logged and no
    /// plugin starts disabled.
    pub fn load(data_dir: &Path) -> Self {
        let file = data_dir.join("plugins.json");
        let set = match std::fs::read_to_string(&file) {
            Ok(text) => match serde_json::from_str::<PersistedState>(&text) {
                Ok(state) => state.disabled,
                Err(error) => {
                    tracing::error!(file = %file.display(), %error, "Unreadable plugin state; no plugin starts disabled.");
                    BTreeSet::new()
                }
            },
            Err(_) => BTreeSet::new(),
        };
        Disabled {
            set: Mutex::new(set),
            file,
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    /// Applies `change` to the set and writes it; on failure the set is unchanged.
    pub fn change(
        &self,
        change: impl FnOnce(&mut BTreeSet<String>) -> bool,
    ) -> Result<(), PersistError> {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = set.clone();
        change(&mut next);
        let fail = |error: std::io::Error| PersistError {
            path: self.file.display().to_string(),
            error: error.to_string(),
        };
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let text = serde_json::to_string_pretty(&PersistedState {
            disabled: next.clone(),
        })
        .unwrap_or_default();
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, &self.file).map_err(fail)?;
        *set = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_a_new_load_and_a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let disabled = Disabled::load(dir.path());
        disabled.change(|s| s.insert("a".into())).unwrap();
        assert!(Disabled::load(dir.path()).contains("a"));
        // A data directory that is a file cannot hold plugins.json.
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let broken = Disabled::load(&file);
        assert!(broken.change(|s| s.insert("b".into())).is_err());
        assert!(!broken.contains("b"));
    }
}
