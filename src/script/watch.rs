//! Hot reload: watches the script plugin directory and, after a trailing debounce per plugin,
//! tells the host which plugin's files changed (it reloads, loads or unloads it). Only changes
//! count: opening or reading a file (the reload itself reads them) is no change. After lost
//! events (an inotify overflow) every plugin on disk or loaded is checked again.
//!
//! Owns the `notify` watcher and the debounce; not what a change means (`PluginHost`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::time::Instant;

use crate::plugin::host::PluginHost;

/// Keeps the watcher alive; dropping it stops watching.
pub struct WatchGuard {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching `root` (the `plugins/core` directory). Must run inside the actix system.
pub fn start(root: &Path, debounce: Duration, host: Arc<PluginHost>) -> notify::Result<WatchGuard> {
    std::fs::create_dir_all(root).map_err(notify::Error::io)?;
    let root = root.canonicalize().map_err(notify::Error::io)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let watched = root.clone();
    let loaded = host.clone();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.need_rescan() => {
                // Events were lost (the kernel's queue overflowed): any plugin may have changed,
                // appeared or gone.
                tracing::warn!("File watcher lost events; rechecking every plugin.");
                for id in rescan(plugin_dirs(&watched), loaded.source_keys()) {
                    let _ = tx.send(id);
                }
            }
            Ok(event) if is_change(&event.kind) => {
                for path in &event.paths {
                    if let Some(id) = plugin_of(&watched, path) {
                        let _ = tx.send(id);
                    }
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "File watcher error."),
        })?;
    watcher.watch(&root, RecursiveMode::Recursive)?;
    tracing::info!(dir = %root.display(), debounce_ms = debounce.as_millis() as u64, "Watching script plugins for changes.");
    actix_web::rt::spawn(async move {
        // Trailing debounce: each plugin's deadline moves on with every change to it.
        let mut due: HashMap<String, Instant> = HashMap::new();
        loop {
            let next = due.values().min().copied();
            tokio::select! {
                changed = rx.recv() => match changed {
                    Some(id) => { due.insert(id, Instant::now() + debounce); }
                    None => break,
                },
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    let now = Instant::now();
                    let ready: Vec<String> = due.iter().filter(|(_, at)| **at <= now).map(|(id, _)| id.clone()).collect();
                    for id in ready {
                        due.remove(&id);
                        host.source_changed(&id).await;
                    }
                }
            }
        }
    });
    Ok(WatchGuard { _watcher: watcher })
}

/// Whether an event changes a plugin's files. The inotify backend also reports opens and
/// closes after reading: counting those made every reload (which reads the files) schedule
/// the next one, a reload per debounce for as long as the process ran, and a save that fell
/// into one of them went live before its own debounce. A close after writing counts: it ends
/// a write.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        // Unknown to the backend: a reload too many beats a change missed.
        EventKind::Other => true,
    }
}

/// What to check again after lost events: every plugin directory on disk and every loaded
/// plugin's (it may be gone), each once.
fn rescan(on_disk: Vec<String>, loaded: Vec<String>) -> Vec<String> {
    let mut all = on_disk;
    all.extend(loaded);
    all.sort();
    all.dedup();
    all
}

/// Every plugin directory under `root` (hidden ones aside).
fn plugin_dirs(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect()
}

/// The plugin directory a changed path belongs to.
fn plugin_of(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let first = relative.components().next()?;
    let name = first.as_os_str().to_string_lossy().into_owned();
    (!name.starts_with('.')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_creations_and_removals_are_changes_opens_and_reads_are_not() {
        use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind};
        for change in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Remove(RemoveKind::Folder),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Any,
            EventKind::Other,
        ] {
            assert!(is_change(&change), "{change:?}");
        }
        for read in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Any),
        ] {
            assert!(!is_change(&read), "{read:?}");
        }
    }

    #[test]
    fn a_rescan_rechecks_every_plugin_directory_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["a", "b", ".git"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        std::fs::write(root.path().join("README.md"), "not a plugin").unwrap();
        let mut found = plugin_dirs(root.path());
        found.sort();
        assert_eq!(found, ["a", "b"]);
        assert!(plugin_dirs(&root.path().join("missing")).is_empty());
        // A loaded plugin whose directory went is checked too (and unloaded), each once.
        assert_eq!(
            rescan(found, vec!["gone".into(), "a".into()]),
            ["a", "b", "gone"]
        );
    }

    #[test]
    fn changes_map_to_their_plugin_directory() {
        let root = Path::new("/p/core");
        assert_eq!(
            plugin_of(root, Path::new("/p/core/a/index.ts")).as_deref(),
            Some("a")
        );
        assert_eq!(
            plugin_of(root, Path::new("/p/core/a")).as_deref(),
            Some("a")
        );
        assert_eq!(plugin_of(root, Path::new("/p/core/.git/x")), None);
        assert_eq!(plugin_of(root, Path::new("/elsewhere/a")), None);
    }
}
