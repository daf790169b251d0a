//! What plugins add to the gateway through their context: routes, tools and agents.
//!
//! Owns the bundle of registries the context writes to, and installing or removing one plugin
//! instance's registrations as a unit: a plugin's `init` stages them, and once it succeeds they
//! replace that plugin's previous ones in every table at once (a reload swaps routes and tools
//! atomically; a collision refuses the whole set and the old version keeps serving). A clean
//! stop removes what that instance installed. Does not own the tables' rules (`route`, `tool`,
//! `agent`) nor calling into plugins (`actor`).

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::agent::{Agent, AgentRegistry};
use crate::inference::Inference;
use crate::route::{Route, RouteTable};
use crate::tool::{Tool, ToolRegistry};

/// One plugin instance's registrations, collected during `init`.
#[derive(Default)]
pub struct Staged {
    pub routes: Vec<Route>,
    pub tools: Vec<Tool>,
    pub agents: Vec<Agent>,
}

/// The registries plugins extend, and the inference client factory they resolve from.
pub struct Extensions {
    pub routes: RouteTable,
    pub tools: ToolRegistry,
    pub agents: AgentRegistry,
    pub inference: Arc<Inference>,
    /// Installs are checked against all three tables, then applied: one at a time.
    install: Mutex<()>,
}

/// What one plugin has registered, for `GET /api/plugins/{id}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PluginRegistrations {
    pub routes: Vec<Route>,
    pub tools: Vec<String>,
    pub agents: Vec<String>,
}

impl Extensions {
    pub fn new(agents: AgentRegistry, inference: Arc<Inference>) -> Arc<Self> {
        Arc::new(Extensions {
            routes: RouteTable::default(),
            tools: ToolRegistry::default(),
            agents,
            inference,
            install: Mutex::new(()),
        })
    }

    /// Replaces everything `plugin` registered with `staged`, in every table at once, or
    /// changes nothing and says why.
    pub fn install(&self, plugin: &str, staged: Staged) -> Result<(), String> {
        let _one_at_a_time = self.install.lock().unwrap_or_else(|e| e.into_inner());
        for (i, route) in staged.routes.iter().enumerate() {
            self.routes
                .check(route, &staged.routes[..i])
                .map_err(|e| e.to_string())?;
        }
        for (i, tool) in staged.tools.iter().enumerate() {
            self.tools
                .check(tool, &staged.tools[..i])
                .map_err(|e| e.to_string())?;
        }
        for (i, agent) in staged.agents.iter().enumerate() {
            self.agents
                .check(agent, &staged.agents[..i])
                .map_err(|e| e.to_string())?;
        }
        let counts = (staged.routes.len(), staged.tools.len(), staged.agents.len());
        // Checked above under the install lock, so these cannot fail now.
        self.routes
            .replace(plugin, staged.routes)
            .map_err(|e| e.to_string())?;
        self.tools
            .replace(plugin, staged.tools)
            .map_err(|e| e.to_string())?;
        self.agents
            .replace(plugin, staged.agents)
            .map_err(|e| e.to_string())?;
        if counts != (0, 0, 0) {
            tracing::info!(
                plugin,
                routes = counts.0,
                tools = counts.1,
                agents = counts.2,
                "Plugin registrations installed."
            );
        }
        Ok(())
    }

    /// Removes what `plugin` registered (only instance `instance`'s, when given).
    pub fn remove(&self, plugin: &str, instance: Option<u64>) {
        let _one_at_a_time = self.install.lock().unwrap_or_else(|e| e.into_inner());
        let routes = self.routes.remove(plugin, instance);
        let tools = self.tools.remove(plugin, instance);
        let agents = self.agents.remove(plugin, instance);
        if routes + tools + agents > 0 {
            tracing::info!(
                plugin,
                routes,
                tools,
                agents,
                "Plugin registrations removed."
            );
        }
    }

    pub fn of(&self, plugin: &str) -> PluginRegistrations {
        PluginRegistrations {
            routes: self
                .routes
                .list()
                .into_iter()
                .filter(|r| r.plugin == plugin)
                .collect(),
            tools: self
                .tools
                .list()
                .into_iter()
                .filter(|t| t.plugin == plugin)
                .map(|t| t.spec.name)
                .collect(),
            agents: self
                .agents
                .list()
                .into_iter()
                .filter(|a| a.source == crate::agent::AgentSource::Plugin(plugin.to_string()))
                .map(|a| a.config.id)
                .collect(),
        }
    }
}
