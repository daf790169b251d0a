//! Where plugins come from: compiled in (native), or loaded from files by an engine that plugs
//! in through [`Loader`] (the script engine does).
//!
//! Owns the description of a discovered plugin ([`Discovered`]: its factory, where its actor
//! runs, and what its files say) and the two traits an engine implements. Does not own any
//! engine: `plugin/` never names one.

use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::{ConnectorPluginInfo, PluginFactory, PluginManifest};
use crate::supervisor::child::Placement;

/// Where a plugin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Compiled into the binary (or passed in by an embedder): never unloaded or reloaded.
    Native,
    /// Loaded from files by the loader of this kind (`script`): reloadable and unloadable.
    Loaded(&'static str),
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Native => "native",
            Source::Loaded(kind) => kind,
        }
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a loaded plugin's files say beyond what its factory builds: the newest good manifest
/// (a reload may change it) and a view for the API. Shared by all its instances.
pub trait LoadedStatus: Send + Sync {
    /// What its loader knows it by (a script plugin's directory name); file changes and
    /// `Loader::load` use it. The plugin's id is what its files declare.
    fn key(&self) -> &str;
    /// Where it comes from, for messages (`x/index.ts`).
    fn origin(&self) -> String;
    /// The next instance must be built from the files (a reload). Otherwise a restart builds
    /// the version that last initialised, so a broken file never takes a running plugin down.
    fn read_files_next(&self);
    /// The manifest of the newest instance that initialised.
    fn manifest(&self) -> Option<PluginManifest>;
    /// The connector plugins of that instance.
    fn connectors(&self) -> Option<Vec<ConnectorPluginInfo>>;
    /// What `GET /api/plugins` shows about the files and the engine.
    fn view(&self) -> Value;
}

/// A plugin found at start-up (or loaded later), before dependency resolution.
pub struct Discovered {
    pub source: Source,
    pub factory: PluginFactory,
    pub placement: Placement,
    pub status: Option<Arc<dyn LoadedStatus>>,
}

impl Discovered {
    pub fn native(factory: PluginFactory) -> Self {
        Discovered {
            source: Source::Native,
            factory,
            placement: Placement::Shared,
            status: None,
        }
    }
}

/// An engine that loads plugins from files. The host asks it at boot, when an operator loads
/// a plugin, and when a plugin's files change.
pub trait Loader: Send + Sync {
    /// The [`Source::Loaded`] kind of its plugins (`script`).
    fn kind(&self) -> &'static str;
    /// Every plugin it finds, in discovery order.
    fn discover(&self) -> Vec<Discovered>;
    /// The plugin its loader knows by `key` (or that declares the id `key`), or why it cannot
    /// be found.
    fn load(&self, key: &str) -> Result<Discovered, String>;
    /// Whether the plugin known by `key` has files now.
    fn exists(&self, key: &str) -> bool;
}
