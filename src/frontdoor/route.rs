//! Model routes: which upstream answers a model name, through which plugins.
//!
//! Owns a route's shape (`[[models]]` in the settings, `POST /api/models` over REST): its name,
//! aliases, whether it is the default, its upstream (a target of the catalogue, or a model
//! provider through `inference`), its plugin chain, its fallbacks and its timeout; checking
//! routes with every problem and its path; and the pure choices: which route a model name
//! resolves to, and the order routes are tried in. Does not own calling an upstream (the
//! parent module) nor targets themselves (`target`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inference::ClientConfig;
use crate::target::PluginRef;

/// One model route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelRoute {
    /// The model name clients ask for.
    pub name: String,
    /// Other names that reach this route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Answers model names no route has.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// A target of the catalogue (any connector): the last user message goes through its
    /// request template, with `${messages}` and `${model}` set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A model provider (`inference`'s client config: retries, breaker, its own fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference: Option<ClientConfig>,
    /// The plugins the conversation runs through, as a session's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginRef>,
    /// Routes tried in order when this one fails (an upstream error, a timeout, an open
    /// breaker) before any of the answer was sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    /// Time the whole answer may take (a stream: until its first chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Applies `f` to every value, at any depth, under a key that names a credential
/// (`apiKey`, `clientSecret`, … as `store::secrets` tells them).
pub fn for_each_credential(value: &mut Value, f: &mut impl FnMut(&mut Value)) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if crate::store::secrets::looks_like_credential(key) {
                    f(v);
                } else {
                    for_each_credential(v, f);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| for_each_credential(v, f)),
        _ => {}
    }
}

impl ModelRoute {
    /// The route as answers and logs show it: credentials in its plugins' configs masked.
    pub fn masked(&self) -> ModelRoute {
        let mut copy = self.clone();
        for plugin in &mut copy.plugins {
            for_each_credential(&mut plugin.config, &mut |v| {
                *v = Value::String(crate::util::MASK.into())
            });
        }
        copy
    }
}

/// Where a route came from: the settings (read-only) or the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Config,
    Api,
}

/// Why routes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("the model route is not valid ({} problems)", .0.len())]
    Invalid(Vec<String>),
    #[error("model route '{0}' does not exist")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

/// Reads one route from JSON, or says what is wrong at `at`.
fn parse(value: &Value, at: &str) -> Result<ModelRoute, String> {
    serde_json::from_value(value.clone()).map_err(|e| format!("{at}: {e}"))
}

/// Problems of one route on its own: name, exactly one upstream, a usable provider, timeout.
fn shape_problems(route: &ModelRoute, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty() && n.len() <= 128 && n.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
    };
    if !valid_name(&route.name) {
        out.push(format!(
            "{at}.name: must be 1-128 printable characters without spaces or '/'"
        ));
    }
    for (i, alias) in route.aliases.iter().enumerate() {
        if !valid_name(alias) {
            out.push(format!(
                "{at}.aliases[{i}]: must be 1-128 printable characters without spaces or '/'"
            ));
        }
    }
    match (&route.target, &route.inference) {
        (Some(_), Some(_)) | (None, None) => out.push(format!(
            "{at}: exactly one of `target` and `inference` is required"
        )),
        (Some(t), None) if t.is_empty() => out.push(format!("{at}.target: must not be empty")),
        (None, Some(c)) => {
            if let Err(m) = crate::inference::provider(&c.provider) {
                out.push(format!("{at}.inference.provider: {m}"));
            }
            if c.model_id.trim().is_empty() {
                out.push(format!("{at}.inference.modelId: must not be empty"));
            }
        }
        _ => {}
    }
    if route.timeout_ms == Some(0) {
        out.push(format!("{at}.timeoutMs: must be a positive whole number"));
    }
    if route.fallbacks.contains(&route.name) {
        out.push(format!(
            "{at}.fallbacks: a route cannot fall back to itself"
        ));
    }
    out
}

/// Checks a whole set of routes: each one's shape, names and aliases unique, fallbacks that
/// exist, one default at most, and targets `target_exists` knows. Every problem, with its
/// path.
pub fn check(routes: &[ModelRoute], target_exists: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, route) in routes.iter().enumerate() {
        let at = format!("models[{i}]");
        problems.extend(shape_problems(route, &at));
        for name in std::iter::once(&route.name).chain(&route.aliases) {
            if let Some(first) = names.insert(name, i) {
                problems.push(format!(
                    "{at}: the name '{name}' is taken already by models[{first}]"
                ));
            }
        }
        if let Some(target) = route.target.as_deref().filter(|t| !t.is_empty()) {
            if !target_exists(target) {
                problems.push(format!("{at}.target: no target has the id '{target}'"));
            }
        }
    }
    for (i, route) in routes.iter().enumerate() {
        for (j, fallback) in route.fallbacks.iter().enumerate() {
            if !routes.iter().any(|r| &r.name == fallback) {
                problems.push(format!(
                    "models[{i}].fallbacks[{j}]: no model route is named '{fallback}'"
                ));
            }
        }
    }
    let defaults = routes.iter().filter(|r| r.default).count();
    if defaults > 1 {
        problems.push(format!(
            "models: {defaults} routes say `default = true`; one at most"
        ));
    }
    problems
}

/// Reads `[[models]]` entries (as JSON), every problem with its path.
pub fn from_settings(
    values: &[Value],
    target_exists: &dyn Fn(&str) -> bool,
) -> Result<Vec<ModelRoute>, Vec<String>> {
    let mut routes = Vec::new();
    let mut problems = Vec::new();
    for (i, value) in values.iter().enumerate() {
        match parse(value, &format!("models[{i}]")) {
            Ok(route) => routes.push(route),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        problems = check(&routes, target_exists);
    }
    if problems.is_empty() {
        Ok(routes)
    } else {
        Err(problems)
    }
}

/// The route a model name reaches: by name, then by alias, then the default route.
pub fn resolve<'a>(routes: &'a [ModelRoute], model: &str) -> Option<&'a ModelRoute> {
    routes
        .iter()
        .find(|r| r.name == model)
        .or_else(|| routes.iter().find(|r| r.aliases.iter().any(|a| a == model)))
        .or_else(|| routes.iter().find(|r| r.default))
}

/// The routes to try for `first`, in order: itself, then its fallbacks (each once; a
/// fallback's own fallbacks are not followed, so the chain is what the operator wrote).
pub fn chain<'a>(routes: &'a [ModelRoute], first: &'a ModelRoute) -> Vec<&'a ModelRoute> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for name in std::iter::once(&first.name).chain(&first.fallbacks) {
        if seen.insert(name.as_str()) {
            if let Some(route) = routes.iter().find(|r| &r.name == name) {
                out.push(route);
            }
        }
    }
    out
}

/// Every route, the settings' first, with where each came from. Routes created over REST are
/// checked against all the others before they join.
#[derive(Default)]
pub struct RouteTable {
    routes: RwLock<Vec<(ModelRoute, Source)>>,
}

impl RouteTable {
    pub fn new(configured: Vec<ModelRoute>, stored: Vec<ModelRoute>) -> Self {
        let mut all: Vec<(ModelRoute, Source)> = configured
            .into_iter()
            .map(|r| (r, Source::Config))
            .collect();
        // A stored route whose name the settings now take is shadowed, not an error at boot.
        for route in stored {
            if !all.iter().any(|(r, _)| r.name == route.name) {
                all.push((route, Source::Api));
            }
        }
        RouteTable {
            routes: RwLock::new(all),
        }
    }

    /// A copy of every route, in order.
    pub fn snapshot(&self) -> Vec<ModelRoute> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }

    pub fn views(&self) -> Vec<(ModelRoute, Source)> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<(ModelRoute, Source)> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(r, _)| r.name == name)
            .cloned()
    }

    /// Adds a route made over REST once it fits with every other route.
    pub fn add(
        &self,
        body: &Value,
        target_exists: &dyn Fn(&str) -> bool,
    ) -> Result<ModelRoute, RouteError> {
        let route = parse(body, "model").map_err(|p| RouteError::Invalid(vec![p]))?;
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if routes.iter().any(|(r, _)| r.name == route.name) {
            return Err(RouteError::Conflict(format!(
                "a model route named '{}' exists already",
                route.name
            )));
        }
        let mut all: Vec<ModelRoute> = routes.iter().map(|(r, _)| r.clone()).collect();
        all.push(route.clone());
        let problems = check(&all, target_exists);
        if !problems.is_empty() {
            let at = format!("models[{}]", all.len() - 1);
            // Only this route's problems, under its own name.
            let mine: Vec<String> = problems
                .into_iter()
                .map(|p| p.replace(&at, "model"))
                .collect();
            return Err(RouteError::Invalid(mine));
        }
        routes.push((route.clone(), Source::Api));
        Ok(route)
    }

    /// Replaces the routes made over REST with `stored` (as the store holds them after other
    /// instances changed them); the settings' routes stay, and shadow a stored one of their name.
    pub fn replace_stored(&self, stored: Vec<ModelRoute>) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        routes.retain(|(_, source)| *source == Source::Config);
        for route in stored {
            if !routes.iter().any(|(r, _)| r.name == route.name) {
                routes.push((route, Source::Api));
            }
        }
    }

    /// Removes a route made over REST; settings' routes are read-only and a route others fall
    /// back to stays until they no longer do.
    pub fn remove(&self, name: &str) -> Result<(), RouteError> {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let Some(index) = routes.iter().position(|(r, _)| r.name == name) else {
            return Err(RouteError::NotFound(name.to_string()));
        };
        if routes[index].1 == Source::Config {
            return Err(RouteError::Conflict(format!(
                "model route '{name}' is declared in the settings and read-only over REST"
            )));
        }
        if let Some((user, _)) = routes
            .iter()
            .find(|(r, _)| r.fallbacks.iter().any(|f| f == name))
        {
            return Err(RouteError::Conflict(format!(
                "model route '{}' falls back to '{name}'",
                user.name
            )));
        }
        routes.remove(index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn route(name: &str) -> ModelRoute {
        serde_json::from_value(json!({ "name": name, "target": "t" })).unwrap()
    }

    #[test]
    fn names_then_aliases_then_the_default_answer_a_model_name() {
        let mut a = route("a");
        a.aliases = vec!["alpha".into()];
        let mut b = route("b");
        b.default = true;
        let routes = vec![a, b];
        assert_eq!(resolve(&routes, "a").unwrap().name, "a");
        assert_eq!(resolve(&routes, "alpha").unwrap().name, "a");
        assert_eq!(resolve(&routes, "anything").unwrap().name, "b");
        assert!(resolve(&routes[..1], "anything").is_none());
    }

    #[test]
    fn every_problem_of_the_settings_routes_is_reported_with_its_path() {
        let values = vec![
            json!({ "name": "a", "target": "t", "inference": { "provider": "openai", "modelId": "m" } }),
            json!({ "name": "b", "inference": { "provider": "bedrock", "modelId": "" }, "fallbacks": ["zz", "b"], "timeoutMs": 0 }),
            json!({ "name": "c", "aliases": ["a"], "target": "missing", "default": true }),
            json!({ "name": "d", "target": "t", "default": true }),
        ];
        let problems = from_settings(&values, &|t| t == "t").unwrap_err();
        for expected in [
            "models[0]: exactly one of `target` and `inference`",
            "models[1].inference.provider: unknown provider 'bedrock'",
            "models[1].inference.modelId: must not be empty",
            "models[1].timeoutMs",
            "models[1].fallbacks: a route cannot fall back to itself",
            "models[2]: the name 'a' is taken already by models[0]",
            "models[2].target: no target has the id 'missing'",
            "models[1].fallbacks[0]: no model route is named 'zz'",
            "models: 2 routes say `default = true`",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected} missing from {problems:#?}"
            );
        }
        let unknown = from_settings(
            &[json!({ "name": "x", "target": "t", "colour": 1 })],
            &|_| true,
        )
        .unwrap_err();
        assert!(unknown[0].contains("unknown field `colour`"), "{unknown:?}");
    }

    #[test]
    fn credentials_in_plugin_configs_are_masked_in_views() {
        let route: ModelRoute = serde_json::from_value(json!({ "name": "a", "target": "t",
            "plugins": [{ "id": "p", "config": { "model": "m", "auth": { "clientSecret": "s3", "apiKey": "k" } } }] }))
        .unwrap();
        let shown = serde_json::to_string(&route.masked()).unwrap();
        assert!(!shown.contains("s3") && !shown.contains("\"k\""), "{shown}");
        assert!(shown.contains("\"model\":\"m\""), "{shown}");
    }

    #[test]
    fn routes_over_rest_fit_the_others_and_settings_routes_stay() {
        let table = RouteTable::new(vec![route("cfg")], vec![]);
        let yes = |_: &str| true;
        table
            .add(
                &json!({ "name": "api", "target": "t", "fallbacks": ["cfg"] }),
                &yes,
            )
            .unwrap();
        assert!(matches!(
            table.add(&json!({ "name": "api", "target": "t" }), &yes),
            Err(RouteError::Conflict(_))
        ));
        let Err(RouteError::Invalid(p)) = table.add(
            &json!({ "name": "x", "aliases": ["cfg"], "target": "t" }),
            &yes,
        ) else {
            panic!()
        };
        assert!(p[0].starts_with("model: the name 'cfg'"), "{p:?}");
        assert!(matches!(table.remove("cfg"), Err(RouteError::Conflict(_))));
        assert!(matches!(table.remove("nope"), Err(RouteError::NotFound(_))));
        table.remove("api").unwrap();
        assert_eq!(table.snapshot().len(), 1);
    }

    proptest! {
        /// The chain starts with the route asked for, names each route once, and holds only
        /// the route and its own fallbacks, in the order written.
        #[test]
        fn a_chain_is_the_route_then_its_fallbacks_each_once(
            fallbacks in proptest::collection::vec(0usize..6, 0..8)
        ) {
            let routes: Vec<ModelRoute> = (0..6).map(|i| route(&format!("r{i}"))).collect();
            let mut first = routes[0].clone();
            first.fallbacks = fallbacks.iter().map(|i| format!("r{i}")).collect();
            let mut all = routes.clone();
            all[0] = first.clone();
            let chain = chain(&all, &all[0]);
            prop_assert_eq!(&chain[0].name, "r0");
            let names: Vec<&str> = chain.iter().map(|r| r.name.as_str()).collect();
            let unique: BTreeSet<&str> = names.iter().copied().collect();
            prop_assert_eq!(unique.len(), names.len());
            let mut expected = vec!["r0".to_string()];
            for f in &first.fallbacks {
                if !expected.contains(f) {
                    expected.push(f.clone());
                }
            }
            prop_assert_eq!(names, expected.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
