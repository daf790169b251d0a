//! Agents: Open Astra agent configurations and their registry.
//!
//! Owns the agent config shape (`id` kebab-case, `displayName`, `model {provider, modelId,
//! endpoint?, temperature 0–2, maxOutputTokens, fallback?}`, `systemPromptTemplate`,
//! `tools {allow, deny}`), its validation (every problem listed with its field), and the
//! registry of agents declared in `[[agents]]` or registered by plugins with
//! `ctx.registerAgentConfig`. Does not own playing a turn (`turn`), model calls (`inference`)
//! nor tools (`tool`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::inference::ClientConfig;

/// One problem with an agent config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Which tools an agent may call. No `allow` list means every registered tool; `deny` wins.
/// An entry ending in `*` matches a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ToolPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
}

impl ToolPolicy {
    pub fn permits(&self, tool: &str) -> bool {
        let hit = |pattern: &String| match pattern.strip_suffix('*') {
            Some(prefix) => tool.starts_with(prefix),
            None => pattern == tool,
        };
        self.allow
            .as_ref()
            .is_none_or(|allow| allow.iter().any(hit))
            && !self.deny.iter().any(hit)
    }
}

/// A validated agent configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    pub id: String,
    pub display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    pub model: ClientConfig,
    pub system_prompt_template: String,
    pub tools: ToolPolicy,
    pub skills: Vec<String>,
    /// Open Astra keys we keep but do not act on (`spawn`, `fileAccess`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Defaults of Open Astra's global `settings`.
pub const DEFAULT_TEMPERATURE: f64 = 0.7;
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 4096;

const KNOWN_KEYS: &[&str] = &[
    "id",
    "displayName",
    "tier",
    "model",
    "systemPromptTemplate",
    "tools",
    "skills",
    "spawn",
    "fileAccess",
];
const MODEL_KEYS: &[&str] = &[
    "provider",
    "modelId",
    "endpoint",
    "temperature",
    "maxOutputTokens",
    "maxContextTokens",
    "fallback",
];

fn is_kebab(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }
}

/// Validates `value` as an agent config. `id` (when given) is the id it is registered under
/// and must match the config's own `id` if that is present.
pub fn parse(id: Option<&str>, value: &Value) -> Result<AgentConfig, Vec<FieldError>> {
    let mut errors = Errors(Vec::new());
    let Some(object) = value.as_object() else {
        return Err(vec![FieldError {
            field: "config".into(),
            message: "must be an object".into(),
        }]);
    };
    for key in object.keys() {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            errors.add(
                key,
                format!("unknown field; known: {}", KNOWN_KEYS.join(", ")),
            );
        }
    }
    let own_id = match object.get("id") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.add("id", "must be a string");
            None
        }
    };
    let agent_id = match (id, own_id.as_deref()) {
        (Some(given), Some(own)) if given != own => {
            errors.add(
                "id",
                format!("'{own}' differs from the id it is registered under ('{given}')"),
            );
            given.to_string()
        }
        (Some(given), _) => given.to_string(),
        (None, Some(own)) => own.to_string(),
        (None, None) => {
            errors.add("id", "is required");
            String::new()
        }
    };
    if !agent_id.is_empty() && !is_kebab(&agent_id) {
        errors.add(
            "id",
            format!("'{agent_id}' must be kebab-case (lowercase letters and digits joined by '-')"),
        );
    }
    let string = |errors: &mut Errors, key: &str| match object.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.add(key, "must be a string");
            None
        }
    };
    let display_name = string(&mut errors, "displayName").unwrap_or_else(|| agent_id.clone());
    let tier = string(&mut errors, "tier");
    if let Some(t) = &tier {
        if !["free", "standard", "premium"].contains(&t.as_str()) {
            errors.add(
                "tier",
                format!("'{t}' is not one of: free, standard, premium"),
            );
        }
    }
    let system_prompt_template = string(&mut errors, "systemPromptTemplate").unwrap_or_default();
    let model = match object.get("model") {
        Some(m) => parse_model(&mut errors, "model", m, true),
        None => {
            errors.add("model", "is required (an object with provider and modelId)");
            None
        }
    };
    let list = |errors: &mut Errors, field: &str, v: Option<&Value>| -> Option<Vec<String>> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            Some(_) => {
                errors.add(field, "must be an array of strings");
                None
            }
        }
    };
    let tools = match object.get("tools") {
        None | Some(Value::Null) => ToolPolicy::default(),
        Some(Value::Object(t)) => {
            for key in t.keys().filter(|k| *k != "allow" && *k != "deny") {
                errors.add(&format!("tools.{key}"), "unknown field; known: allow, deny");
            }
            ToolPolicy {
                allow: list(&mut errors, "tools.allow", t.get("allow")),
                deny: list(&mut errors, "tools.deny", t.get("deny")).unwrap_or_default(),
            }
        }
        Some(_) => {
            errors.add("tools", "must be an object {allow?, deny?}");
            ToolPolicy::default()
        }
    };
    let skills = list(&mut errors, "skills", object.get("skills")).unwrap_or_default();
    let extra: Map<String, Value> = ["spawn", "fileAccess"]
        .iter()
        .filter_map(|k| object.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    match (errors.0.is_empty(), model) {
        (true, Some(model)) => Ok(AgentConfig {
            id: agent_id,
            display_name,
            tier,
            model,
            system_prompt_template,
            tools,
            skills,
            extra,
        }),
        _ => Err(errors.0),
    }
}

fn parse_model(errors: &mut Errors, at: &str, value: &Value, top: bool) -> Option<ClientConfig> {
    let Some(m) = value.as_object() else {
        errors.add(at, "must be an object with provider and modelId");
        return None;
    };
    let field = |k: &str| format!("{at}.{k}");
    for key in m.keys() {
        if !MODEL_KEYS.contains(&key.as_str()) || (!top && key == "fallback") {
            errors.add(
                &field(key),
                format!("unknown field; known: {}", MODEL_KEYS.join(", ")),
            );
        }
    }
    let before = errors.0.len();
    let text = |errors: &mut Errors, k: &str, required: bool| match m.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        None | Some(Value::Null) if !required => None,
        _ => {
            errors.add(&field(k), "is required (a non-empty string)");
            None
        }
    };
    let provider = text(errors, "provider", true);
    if let Some(p) = &provider {
        if let Err(message) = crate::inference::provider(p) {
            errors.add(&field("provider"), message);
        }
    }
    let model_id = text(errors, "modelId", true);
    let endpoint = text(errors, "endpoint", false);
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            errors.add(
                &field("endpoint"),
                format!("'{e}' must be an http:// or https:// URL"),
            );
        }
    }
    let temperature = match m.get("temperature") {
        None | Some(Value::Null) => DEFAULT_TEMPERATURE,
        Some(v) => match v.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => t,
            _ => {
                errors.add(
                    &field("temperature"),
                    format!("{v} must be a number from 0 to 2"),
                );
                DEFAULT_TEMPERATURE
            }
        },
    };
    let mut count = |k: &str| match m.get(k) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= u32::MAX as u64 => Some(n as u32),
            _ => {
                errors.add(&field(k), format!("{v} must be a positive integer"));
                None
            }
        },
    };
    let max_output_tokens = count("maxOutputTokens").unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
    let max_context_tokens = count("maxContextTokens");
    let fallback = match m.get("fallback") {
        Some(f) if top && !f.is_null() => {
            parse_model(errors, &field("fallback"), f, false).map(Box::new)
        }
        _ => None,
    };
    (errors.0.len() == before).then(|| ClientConfig {
        provider: provider.unwrap_or_default(),
        model_id: model_id.unwrap_or_default(),
        endpoint,
        temperature: Some(temperature),
        max_output_tokens: Some(max_output_tokens),
        max_context_tokens,
        fallback,
    })
}

/// Who declared an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "id")]
pub enum AgentSource {
    /// `[[agents]]` in the settings.
    Config,
    /// `ctx.registerAgentConfig` of this plugin.
    Plugin(String),
}

/// A registered agent.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    #[serde(flatten)]
    pub config: AgentConfig,
    pub source: AgentSource,
    #[serde(skip)]
    pub instance: u64,
}

/// Errors of registering agents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentConfigError {
    #[error("agent '{id}' is invalid: {}", .errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid { id: String, errors: Vec<FieldError> },
    #[error("agent '{id}' is already declared by {owner}")]
    Clash { id: String, owner: String },
}

fn owner_text(source: &AgentSource) -> String {
    match source {
        AgentSource::Config => "the settings ([[agents]])".into(),
        AgentSource::Plugin(p) => format!("plugin '{p}'"),
    }
}

/// Every agent, by id.
#[derive(Debug, Default)]
pub struct AgentRegistry {
    agents: RwLock<Arc<BTreeMap<String, Agent>>>,
}

impl AgentRegistry {
    /// A registry seeded with the settings' `[[agents]]`; every problem is returned with its
    /// path (`agents[1].model.temperature`).
    pub fn from_settings(declared: &[Value]) -> Result<AgentRegistry, Vec<(String, String)>> {
        let mut agents = BTreeMap::new();
        let mut problems = Vec::new();
        for (i, value) in declared.iter().enumerate() {
            match parse(None, value) {
                Ok(config) => {
                    if agents.contains_key(&config.id) {
                        problems.push((
                            format!("agents[{i}].id"),
                            format!("'{}' is declared twice", config.id),
                        ));
                        continue;
                    }
                    agents.insert(
                        config.id.clone(),
                        Agent {
                            config,
                            source: AgentSource::Config,
                            instance: 0,
                        },
                    );
                }
                Err(errors) => problems.extend(
                    errors
                        .into_iter()
                        .map(|e| (format!("agents[{i}].{}", e.field), e.message)),
                ),
            }
        }
        if problems.is_empty() {
            Ok(AgentRegistry {
                agents: RwLock::new(Arc::new(agents)),
            })
        } else {
            Err(problems)
        }
    }

    fn snapshot(&self) -> Arc<BTreeMap<String, Agent>> {
        self.agents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn list(&self) -> Vec<Agent> {
        self.snapshot().values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Agent> {
        self.snapshot().get(id).cloned()
    }

    /// Refuses `agent` if another owner (or an earlier registration in `pending`) has its id.
    pub fn check(&self, agent: &Agent, pending: &[Agent]) -> Result<(), AgentConfigError> {
        let existing = self.snapshot();
        let taken = existing
            .get(&agent.config.id)
            .filter(|a| a.source != agent.source)
            .or_else(|| pending.iter().find(|a| a.config.id == agent.config.id));
        match taken {
            Some(a) => Err(AgentConfigError::Clash {
                id: agent.config.id.clone(),
                owner: owner_text(&a.source),
            }),
            None => Ok(()),
        }
    }

    /// Replaces every agent of plugin `plugin` with `agents`, at once.
    pub fn replace(&self, plugin: &str, agents: Vec<Agent>) -> Result<(), AgentConfigError> {
        let source = AgentSource::Plugin(plugin.to_string());
        let mut table = self.agents.write().unwrap_or_else(|e| e.into_inner());
        for agent in &agents {
            if let Some(existing) = table.get(&agent.config.id).filter(|a| a.source != source) {
                return Err(AgentConfigError::Clash {
                    id: agent.config.id.clone(),
                    owner: owner_text(&existing.source),
                });
            }
        }
        let mut next: BTreeMap<String, Agent> = table
            .iter()
            .filter(|(_, a)| a.source != source)
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect();
        for agent in agents {
            next.insert(agent.config.id.clone(), agent);
        }
        *table = Arc::new(next);
        Ok(())
    }

    /// Removes the agents of `plugin` (only those of `instance`, when given).
    pub fn remove(&self, plugin: &str, instance: Option<u64>) -> usize {
        let source = AgentSource::Plugin(plugin.to_string());
        let mut table = self.agents.write().unwrap_or_else(|e| e.into_inner());
        let gone = |a: &Agent| a.source == source && instance.is_none_or(|i| a.instance == i);
        let count = table.values().filter(|a| gone(a)).count();
        if count > 0 {
            *table = Arc::new(
                table
                    .iter()
                    .filter(|(_, a)| !gone(a))
                    .map(|(k, a)| (k.clone(), a.clone()))
                    .collect(),
            );
        }
        count
    }
}

/// A minimal valid config, for tests and docs.
pub fn example(id: &str, endpoint: &str) -> Value {
    json!({ "id": id, "displayName": "Example", "model": { "provider": "openai", "modelId": "gpt-4o", "endpoint": endpoint } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_parses_with_defaults_filled_in() {
        let c = parse(Some("helper"), &json!({ "displayName": "Helper", "model": { "provider": "anthropic", "modelId": "claude-x" },
            "systemPromptTemplate": "Today is {{date}}", "tools": { "allow": ["weather*"], "deny": ["weather_admin"] },
            "spawn": { "enabled": false } })).unwrap();
        assert_eq!(c.id, "helper");
        assert_eq!(c.model.temperature, Some(0.7));
        assert_eq!(c.model.max_output_tokens, Some(4096));
        assert!(
            c.tools.permits("weather_now")
                && !c.tools.permits("weather_admin")
                && !c.tools.permits("search")
        );
        assert_eq!(c.extra["spawn"], json!({ "enabled": false }));
        assert!(ToolPolicy::default().permits("anything"));
    }

    #[test]
    fn every_problem_is_listed_with_its_field() {
        let errors = parse(None, &json!({ "id": "Not_Kebab", "displayName": 3, "colour": "red",
            "model": { "provider": "bedrock", "temperature": 2.5, "maxOutputTokens": 0, "fallback": { "provider": "openai" } },
            "tools": { "allow": "x" } })).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "id",
            "displayName",
            "colour",
            "model.provider",
            "model.modelId",
            "model.temperature",
            "model.maxOutputTokens",
            "model.fallback.modelId",
            "tools.allow",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert!(errors.iter().any(|e| e.message.contains("from 0 to 2")));
        assert_eq!(
            parse(None, &json!([])).unwrap_err()[0].message,
            "must be an object"
        );
        assert!(parse(
            Some("a"),
            &json!({ "id": "b", "model": { "provider": "openai", "modelId": "m" } })
        )
        .unwrap_err()[0]
            .message
            .contains("differs"));
    }

    #[test]
    fn settings_agents_report_paths_and_plugins_cannot_take_their_ids() {
        let problems = AgentRegistry::from_settings(&[json!({ "id": "a", "model": { "provider": "openai", "modelId": "m" } }),
            json!({ "id": "a", "model": { "provider": "openai", "modelId": "m" } }),
            json!({ "id": "b", "model": { "provider": "openai", "modelId": "m", "temperature": -1 } })]).unwrap_err();
        assert_eq!(problems[0].0, "agents[1].id");
        assert_eq!(problems[1].0, "agents[2].model.temperature");
        let registry = AgentRegistry::from_settings(&[example("a", "http://x")]).unwrap();
        let mine = Agent {
            config: parse(None, &example("a", "http://x")).unwrap(),
            source: AgentSource::Plugin("p".into()),
            instance: 1,
        };
        assert_eq!(
            registry.check(&mine, &[]).unwrap_err().to_string(),
            "agent 'a' is already declared by the settings ([[agents]])"
        );
        assert!(registry.replace("p", vec![mine]).is_err());
        assert_eq!(registry.list().len(), 1);
    }
}
