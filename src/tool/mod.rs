//! Tools: what plugins register with `ctx.registerTool` and agents (or REST callers) invoke.
//!
//! Owns the registry (names unique across plugins), the JSON Schema of each tool's parameters
//! (compiled once with `jsonschema`, checked before every call), and what a call is asked with
//! and answers. Does not own calling the plugin (`plugin::call`, which also publishes
//! `tool.executed`), the plugin's code, nor which tools an agent may use (`agent`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::{json, Value};

/// What a plugin declares for a tool (Open Astra's tool record, minus `execute`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the parameters object.
    pub parameters: Value,
}

/// A registered tool.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool {
    #[serde(flatten)]
    pub spec: ToolSpec,
    pub plugin: String,
    #[serde(skip)]
    pub instance: u64,
    #[serde(skip)]
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.spec.name)
            .field("plugin", &self.plugin)
            .finish()
    }
}

/// One reason the parameters do not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamError {
    /// JSON Pointer into the parameters (`""` is the whole object).
    pub path: String,
    pub message: String,
}

/// Errors of registering and invoking tools.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("tool '{0}' is not registered")]
    NotFound(String),
    #[error("tool name '{0}' is invalid: use 1 to 64 letters, digits, '_' or '-'")]
    InvalidName(String),
    #[error("tool '{tool}': `parameters` is not a valid JSON Schema: {message}")]
    InvalidSchema { tool: String, message: String },
    #[error("tool '{tool}' is already registered by plugin '{owner}'")]
    Clash { tool: String, owner: String },
    #[error("the parameters of tool '{tool}' do not match its schema: {}", .errors.iter().map(|e| format!("{} {}", if e.path.is_empty() { "(root)" } else { &e.path }, e.message)).collect::<Vec<_>>().join("; "))]
    InvalidParams {
        tool: String,
        errors: Vec<ParamError>,
    },
    #[error("tool '{tool}' of plugin '{plugin}' failed: {message}")]
    Failed {
        tool: String,
        plugin: String,
        message: String,
    },
    #[error("tool '{tool}' is unavailable: its plugin '{plugin}' is not running")]
    Unavailable { tool: String, plugin: String },
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Tool {
    /// Checks the name and compiles the schema (`{}` or null means "an object").
    pub fn new(spec: ToolSpec, plugin: &str, instance: u64) -> Result<Tool, ToolError> {
        if !valid_name(&spec.name) {
            return Err(ToolError::InvalidName(spec.name));
        }
        let mut spec = spec;
        if spec.parameters.is_null() || spec.parameters == json!({}) {
            spec.parameters = json!({ "type": "object" });
        }
        let validator =
            jsonschema::validator_for(&spec.parameters).map_err(|e| ToolError::InvalidSchema {
                tool: spec.name.clone(),
                message: e.to_string(),
            })?;
        Ok(Tool {
            spec,
            plugin: plugin.to_string(),
            instance,
            validator: Arc::new(validator),
        })
    }

    /// Every way `params` breaks the schema.
    pub fn validate(&self, params: &Value) -> Result<(), ToolError> {
        let errors: Vec<ParamError> = self
            .validator
            .iter_errors(params)
            .map(|e| ParamError {
                path: e.instance_path().to_string(),
                message: e.to_string(),
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ToolError::InvalidParams {
                tool: self.spec.name.clone(),
                errors,
            })
        }
    }
}

/// Who asked for a tool call (carried into `tool.executed`).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub agent_id: Option<String>,
    pub session_id: Option<String>,
}

/// A finished tool call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invocation {
    pub tool: String,
    pub plugin: String,
    pub result: Value,
    pub duration_ms: f64,
}

/// Every registered tool, by name. Copy-on-write like the route table.
#[derive(Default)]
pub struct ToolRegistry {
    tools: RwLock<Arc<BTreeMap<String, Tool>>>,
}

impl ToolRegistry {
    fn snapshot(&self) -> Arc<BTreeMap<String, Tool>> {
        self.tools.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn list(&self) -> Vec<Tool> {
        self.snapshot().values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<Tool> {
        self.snapshot().get(name).cloned()
    }

    /// Refuses `tool` when another plugin (or an earlier registration in `pending`) has the name.
    pub fn check(&self, tool: &Tool, pending: &[Tool]) -> Result<(), ToolError> {
        let clash = |owner: &str| ToolError::Clash {
            tool: tool.spec.name.clone(),
            owner: owner.to_string(),
        };
        if let Some(existing) = self.snapshot().get(&tool.spec.name) {
            if existing.plugin != tool.plugin {
                return Err(clash(&existing.plugin));
            }
        }
        match pending.iter().find(|t| t.spec.name == tool.spec.name) {
            Some(t) => Err(clash(&t.plugin)),
            None => Ok(()),
        }
    }

    /// Replaces every tool of `plugin` with `tools`, at once; refused on a clash.
    pub fn replace(&self, plugin: &str, tools: Vec<Tool>) -> Result<(), ToolError> {
        let mut table = self.tools.write().unwrap_or_else(|e| e.into_inner());
        for tool in &tools {
            if let Some(existing) = table.get(&tool.spec.name) {
                if existing.plugin != plugin {
                    return Err(ToolError::Clash {
                        tool: tool.spec.name.clone(),
                        owner: existing.plugin.clone(),
                    });
                }
            }
        }
        let mut next: BTreeMap<String, Tool> = table
            .iter()
            .filter(|(_, t)| t.plugin != plugin)
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        for tool in tools {
            next.insert(tool.spec.name.clone(), tool);
        }
        *table = Arc::new(next);
        Ok(())
    }

    /// Removes the tools of `plugin` (only those of `instance`, when given).
    pub fn remove(&self, plugin: &str, instance: Option<u64>) -> usize {
        let mut table = self.tools.write().unwrap_or_else(|e| e.into_inner());
        let gone = |t: &Tool| t.plugin == plugin && instance.is_none_or(|i| t.instance == i);
        let count = table.values().filter(|t| gone(t)).count();
        if count > 0 {
            *table = Arc::new(
                table
                    .iter()
                    .filter(|(_, t)| !gone(t))
                    .map(|(k, t)| (k.clone(), t.clone()))
                    .collect(),
            );
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(plugin: &str, name: &str, parameters: Value) -> Result<Tool, ToolError> {
        Tool::new(
            ToolSpec {
                name: name.into(),
                description: String::new(),
                parameters,
            },
            plugin,
            1,
        )
    }

    #[test]
    fn names_and_schemas_are_checked_at_registration() {
        assert!(matches!(
            tool("p", "bad name", Value::Null),
            Err(ToolError::InvalidName(_))
        ));
        assert!(matches!(
            tool("p", "", Value::Null),
            Err(ToolError::InvalidName(_))
        ));
        let e = tool("p", "t", json!({ "type": "no-such-type" })).unwrap_err();
        assert!(matches!(e, ToolError::InvalidSchema { .. }), "{e}");
        assert!(tool("p", "get_weather-2", Value::Null).is_ok());
    }

    #[test]
    fn every_schema_violation_is_reported_with_its_path() {
        let t = tool(
            "p",
            "weather",
            json!({ "type": "object", "required": ["city"], "additionalProperties": false,
                    "properties": { "city": { "type": "string" }, "days": { "type": "integer", "minimum": 1 } } }),
        )
        .unwrap();
        t.validate(&json!({ "city": "Oslo", "days": 2 })).unwrap();
        let ToolError::InvalidParams { errors, .. } =
            t.validate(&json!({ "days": 0, "x": 1 })).unwrap_err()
        else {
            panic!()
        };
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(paths.contains(&"/days") && paths.contains(&""), "{paths:?}");
        assert!(
            errors.iter().any(|e| e.message.contains("city")),
            "{errors:?}"
        );
        // Empty schema means "any object".
        let any = tool("p", "any", json!({})).unwrap();
        assert!(any.validate(&json!({ "a": 1 })).is_ok());
        assert!(any.validate(&json!(3)).is_err());
    }

    #[test]
    fn names_are_unique_across_plugins_but_a_plugin_may_replace_its_own() {
        let registry = ToolRegistry::default();
        registry
            .replace("a", vec![tool("a", "t", Value::Null).unwrap()])
            .unwrap();
        let theirs = tool("b", "t", Value::Null).unwrap();
        assert_eq!(
            registry.check(&theirs, &[]).unwrap_err().to_string(),
            "tool 't' is already registered by plugin 'a'"
        );
        assert!(registry.replace("b", vec![theirs]).is_err());
        let again = tool("a", "t", Value::Null).unwrap();
        registry.check(&again, &[]).unwrap();
        assert!(
            registry
                .check(&again, std::slice::from_ref(&again))
                .is_err(),
            "twice in one init"
        );
        registry.replace("a", vec![again]).unwrap();
        assert_eq!(registry.remove("a", Some(99)), 0);
        assert_eq!(registry.remove("a", None), 1);
        assert!(registry.list().is_empty());
    }
}
