//! Plugin routes: the dynamic router behind Open Astra's `ctx.app`.
//!
//! actix-web's routing is fixed once the server is built, so plugin routes live in a table the
//! gateway owns and the HTTP layer consults for any path no core route matched. Owns path
//! validation (`/items/:id`, a trailing `*rest`), where a route is mounted (under
//! `/plugins/<plugin>/…`, or at an absolute path the plugin declares), collision rules
//! (core paths and other plugins' routes are refused), whether a route is `public` (answered
//! without the admin token; protected by default), matching (most specific route wins),
//! and replacing one plugin's routes at once. The table is copy-on-write: a lookup clones an
//! `Arc` and never waits for a writer. Does not own running handlers (the plugin's actor does)
//! nor the HTTP request and response (`api::plugin_routes`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Relative routes are mounted under `/plugins/<plugin id>`.
pub const PLUGIN_PREFIX: &str = "/plugins";

/// First path segments the gateway keeps for itself: an absolute plugin route may not start
/// with one of them.
const RESERVED: &[&str] = &["api", "health", "livez", "readyz", "plugins", "ui"];

const MAX_PATH_LEN: usize = 512;

/// HTTP methods a plugin can mount (Express's `app.get/post/put/patch/delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn parse(text: &str) -> Option<Method> {
        Some(match text.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a route cannot be mounted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("route path '{path}' is invalid: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("route path '{path}' collides with the gateway's own routes (/api, /health, /livez, /readyz, /plugins)")]
    Reserved { path: String },
    #[error("{method} {path} is already mounted by plugin '{owner}'")]
    Collision {
        method: Method,
        path: String,
        owner: String,
    },
}

/// How a plugin mounts a route (the third argument of `ctx.app.get(path, handler, options)`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteOptions {
    /// Mount at the declared path itself instead of under `/plugins/<id>`.
    pub absolute: bool,
    /// Answer without the admin token (`server.admin_token`) when one is set: for webhooks
    /// and other callers that cannot send it. Protected by default.
    pub public: bool,
}

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `:name`
    Param(String),
    /// `*name` (or `*`, named `0`): the rest of the path; only last.
    Rest(String),
}

/// A mounted route.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub plugin: String,
    pub method: Method,
    /// The full pattern served, e.g. `/plugins/demo/items/:id`.
    pub path: String,
    /// The path as the plugin declared it.
    pub declared: String,
    pub absolute: bool,
    /// Answered without the admin token even when one is set (webhooks). Routes are
    /// protected unless the plugin marks them public.
    pub public: bool,
    /// Which of the plugin's handlers answers (its registration order).
    pub handler: u32,
    /// The plugin instance that mounted it; a late stop of an older instance leaves a newer
    /// instance's routes alone.
    #[serde(skip)]
    pub instance: u64,
    #[serde(skip)]
    segments: Vec<Segment>,
}

impl Route {
    /// Validates `declared` and mounts it for `plugin`: under `/plugins/<plugin>` unless
    /// `absolute`.
    pub fn new(
        plugin: &str,
        method: Method,
        declared: &str,
        absolute: bool,
        handler: u32,
        instance: u64,
    ) -> Result<Route, RouteError> {
        let mut segments = parse(declared)?;
        if absolute {
            match segments.first() {
                Some(Segment::Literal(first)) if !RESERVED.contains(&first.as_str()) => {}
                // `/`, `/:x` or `/*` would shadow core paths.
                _ => {
                    return Err(RouteError::Reserved {
                        path: declared.to_string(),
                    })
                }
            }
        } else {
            let mut full = vec![
                Segment::Literal(PLUGIN_PREFIX[1..].to_string()),
                Segment::Literal(plugin.to_string()),
            ];
            full.append(&mut segments);
            segments = full;
        }
        Ok(Route {
            plugin: plugin.to_string(),
            method,
            path: render(&segments),
            declared: declared.to_string(),
            absolute,
            public: false,
            handler,
            instance,
            segments,
        })
    }

    /// Validates and mounts `declared` for `plugin` as `options` say.
    pub fn with_options(
        plugin: &str,
        method: Method,
        declared: &str,
        options: RouteOptions,
        handler: u32,
        instance: u64,
    ) -> Result<Route, RouteError> {
        let mut route = Route::new(
            plugin,
            method,
            declared,
            options.absolute,
            handler,
            instance,
        )?;
        route.public = options.public;
        Ok(route)
    }

    /// The pattern with parameter names erased: two routes with the same shape and method
    /// would answer the same requests.
    fn shape(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.as_str(),
                Segment::Param(_) => ":",
                Segment::Rest(_) => "*",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Whether some request path would match both routes (same method or not). Another
    /// plugin's route may not overlap; inside one plugin the most specific route wins.
    fn overlaps(&self, other: &Route) -> bool {
        let (a, b) = (&self.segments, &other.segments);
        for i in 0..a.len().max(b.len()) {
            match (a.get(i), b.get(i)) {
                (Some(Segment::Rest(_)), _) | (_, Some(Segment::Rest(_))) => return true,
                (Some(Segment::Literal(x)), Some(Segment::Literal(y))) if x != y => return false,
                (Some(_), Some(_)) => {}
                // Different lengths without a wildcard never match the same path.
                _ => return false,
            }
        }
        true
    }

    /// Path parameters when `path` matches this route.
    fn matches(&self, path: &[&str]) -> Option<BTreeMap<String, String>> {
        let mut params = BTreeMap::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Rest(name) => {
                    params.insert(name.clone(), path.get(i..).unwrap_or(&[]).join("/"));
                    return Some(params);
                }
                Segment::Literal(l) => {
                    if path.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = path.get(i)?;
                    params.insert(name.clone(), percent_decode(value));
                }
            }
        }
        (path.len() == self.segments.len()).then_some(params)
    }

    /// Literal beats parameter beats rest, segment by segment.
    fn specificity(&self) -> Vec<u8> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 2,
                Segment::Param(_) => 1,
                Segment::Rest(_) => 0,
            })
            .collect()
    }
}

fn parse(path: &str) -> Result<Vec<Segment>, RouteError> {
    let bad = |reason: &str| RouteError::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if !path.starts_with('/') {
        return Err(bad("it must start with '/'"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(bad(&format!("it is longer than {MAX_PATH_LEN} characters")));
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = trimmed[1..].split('/').collect();
    let mut segments = Vec::with_capacity(parts.len());
    let mut names = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let segment = if let Some(name) = part.strip_prefix(':') {
            if !is_identifier(name) {
                return Err(bad(&format!(
                    "parameter ':{name}' needs a name of letters, digits and '_'"
                )));
            }
            Segment::Param(name.to_string())
        } else if let Some(name) = part.strip_prefix('*') {
            if i != parts.len() - 1 {
                return Err(bad("a '*' wildcard may only be the last segment"));
            }
            if !name.is_empty() && !is_identifier(name) {
                return Err(bad(&format!(
                    "wildcard '*{name}' needs a name of letters, digits and '_'"
                )));
            }
            Segment::Rest(if name.is_empty() {
                "0".into()
            } else {
                name.to_string()
            })
        } else {
            if part.is_empty() {
                return Err(bad("it has an empty segment ('//')"));
            }
            if *part == "." || *part == ".." {
                return Err(bad("'.' and '..' segments are not allowed"));
            }
            if !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~@".contains(&b))
            {
                return Err(bad(&format!(
                    "segment '{part}' may only contain letters, digits and - . _ ~ @"
                )));
            }
            Segment::Literal(part.to_string())
        };
        if let Segment::Param(name) | Segment::Rest(name) = &segment {
            if names.contains(name) {
                return Err(bad(&format!("parameter '{name}' appears twice")));
            }
            names.push(name.clone());
        }
        segments.push(segment);
    }
    Ok(segments)
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn render(segments: &[Segment]) -> String {
    if segments.is_empty() {
        return "/".into();
    }
    segments
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => format!("/{l}"),
            Segment::Param(p) => format!("/:{p}"),
            Segment::Rest(r) if r == "0" => "/*".to_string(),
            Segment::Rest(r) => format!("/*{r}"),
        })
        .collect()
}

/// Decodes `%XX` escapes of a path segment (invalid escapes are kept as they are).
fn percent_decode(text: &str) -> String {
    if !text.contains('%') {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Found {
        route: Route,
        params: BTreeMap<String, String>,
    },
    /// The path is mounted, but not for this method: the methods it is mounted for, and
    /// whether one of those routes is public.
    MethodNotAllowed {
        allowed: Vec<Method>,
        public: bool,
    },
    NotFound,
}

/// Every mounted plugin route.
#[derive(Default)]
pub struct RouteTable {
    routes: RwLock<Arc<Vec<Route>>>,
}

impl RouteTable {
    fn snapshot(&self) -> Arc<Vec<Route>> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every route, ordered by path then method.
    pub fn list(&self) -> Vec<Route> {
        let mut routes = self.snapshot().as_ref().clone();
        routes.sort_by(|a, b| (&a.path, a.method).cmp(&(&b.path, b.method)));
        routes
    }

    /// Refuses `route` if a route of another plugin, or an earlier one in `pending` (the same
    /// plugin's registrations so far), answers the same requests.
    pub fn check(&self, route: &Route, pending: &[Route]) -> Result<(), RouteError> {
        let shape = route.shape();
        let table = self.snapshot();
        let theirs = table
            .iter()
            .filter(|r| r.plugin != route.plugin)
            .find(|r| r.method == route.method && r.overlaps(route));
        let mine = pending
            .iter()
            .find(|r| r.method == route.method && r.shape() == shape);
        let taken = theirs.or(mine).map(|r| r.plugin.clone());
        match taken {
            Some(owner) => Err(RouteError::Collision {
                method: route.method,
                path: route.path.clone(),
                owner,
            }),
            None => Ok(()),
        }
    }

    /// Replaces every route of `plugin` with `routes`, at once. Refused (and nothing changes)
    /// when one collides with another plugin's route.
    pub fn replace(&self, plugin: &str, routes: Vec<Route>) -> Result<(), RouteError> {
        let mut table = self.routes.write().unwrap_or_else(|e| e.into_inner());
        for (i, route) in routes.iter().enumerate() {
            let shape = route.shape();
            let clash = table
                .iter()
                .filter(|r| r.plugin != plugin)
                .find(|r| r.method == route.method && r.overlaps(route))
                .or_else(|| {
                    routes[..i]
                        .iter()
                        .find(|r| r.method == route.method && r.shape() == shape)
                });
            if let Some(r) = clash {
                return Err(RouteError::Collision {
                    method: route.method,
                    path: route.path.clone(),
                    owner: r.plugin.clone(),
                });
            }
        }
        let mut next: Vec<Route> = table
            .iter()
            .filter(|r| r.plugin != plugin)
            .cloned()
            .collect();
        next.extend(routes);
        *table = Arc::new(next);
        Ok(())
    }

    /// Removes the routes of `plugin` (only those of `instance`, when given). Returns how many.
    pub fn remove(&self, plugin: &str, instance: Option<u64>) -> usize {
        let mut table = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let gone = |r: &Route| r.plugin == plugin && instance.is_none_or(|i| r.instance == i);
        let count = table.iter().filter(|r| gone(r)).count();
        if count > 0 {
            *table = Arc::new(table.iter().filter(|r| !gone(r)).cloned().collect());
        }
        count
    }

    /// The route answering `method path`, with its path parameters.
    pub fn lookup(&self, method: &str, path: &str) -> Lookup {
        let table = self.snapshot();
        if table.is_empty() {
            return Lookup::NotFound;
        }
        let trimmed = path.trim_end_matches('/');
        let parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed[1..].split('/').collect()
        };
        let method = Method::parse(method);
        let mut best: Option<(Vec<u8>, &Route, BTreeMap<String, String>)> = None;
        let mut allowed = Vec::new();
        let mut public = false;
        for route in table.iter() {
            let Some(params) = route.matches(&parts) else {
                continue;
            };
            if Some(route.method) != method {
                allowed.push(route.method);
                public |= route.public;
                continue;
            }
            let score = route.specificity();
            if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                best = Some((score, route, params));
            }
        }
        match best {
            Some((_, route, params)) => Lookup::Found {
                route: route.clone(),
                params,
            },
            None if !allowed.is_empty() => {
                allowed.sort();
                allowed.dedup();
                Lookup::MethodNotAllowed { allowed, public }
            }
            None => Lookup::NotFound,
        }
    }
}

/// A request as a plugin route handler sees it (Express's `req`, in JSON).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRequest {
    pub method: String,
    pub path: String,
    /// The path below the plugin's mount point (`/plugins/<id>`); the whole path for
    /// absolute routes.
    pub mount_path: String,
    /// The route's pattern as the plugin declared it.
    pub route_path: String,
    pub params: BTreeMap<String, String>,
    pub query: BTreeMap<String, String>,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// JSON when the request said `application/json`, otherwise the text (null when empty).
    pub body: Value,
    pub request_id: String,
}

/// What a handler answered (Express's `res`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct RouteResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: RouteBody,
}

/// A response body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum RouteBody {
    #[default]
    Empty,
    Json(Value),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(plugin: &str, method: Method, path: &str, absolute: bool) -> Route {
        Route::new(plugin, method, path, absolute, 0, 1).unwrap()
    }

    #[test]
    fn relative_routes_mount_under_the_plugin_and_absolute_ones_where_declared() {
        assert_eq!(
            route("demo", Method::Get, "/items/:id", false).path,
            "/plugins/demo/items/:id"
        );
        assert_eq!(route("demo", Method::Get, "/", false).path, "/plugins/demo");
        assert_eq!(
            route("demo", Method::Post, "/webhooks/stripe/", true).path,
            "/webhooks/stripe"
        );
    }

    #[test]
    fn bad_paths_and_core_paths_are_refused_with_the_reason() {
        for (path, absolute, needle) in [
            ("items", false, "start with '/'"),
            ("/a//b", false, "empty segment"),
            ("/a/../b", false, "'..'"),
            ("/a/:", false, "needs a name"),
            ("/*rest/x", false, "last segment"),
            ("/a/:id/:id", false, "appears twice"),
            ("/a b", false, "may only contain"),
        ] {
            let e = Route::new("p", Method::Get, path, absolute, 0, 1).unwrap_err();
            assert!(e.to_string().contains(needle), "{path}: {e}");
        }
        for path in ["/api/x", "/health", "/plugins/other/x", "/", "/:any", "/*"] {
            assert!(
                matches!(
                    Route::new("p", Method::Get, path, true, 0, 1),
                    Err(RouteError::Reserved { .. })
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn lookup_extracts_params_prefers_literals_and_reports_other_methods() {
        let table = RouteTable::default();
        table
            .replace(
                "demo",
                vec![
                    route("demo", Method::Get, "/items/:id", false),
                    route("demo", Method::Get, "/items/new", false),
                    route("demo", Method::Get, "/files/*path", false),
                ],
            )
            .unwrap();
        let Lookup::Found { route: r, params } = table.lookup("GET", "/plugins/demo/items/a%20b")
        else {
            panic!()
        };
        assert_eq!(
            (r.declared.as_str(), params["id"].as_str()),
            ("/items/:id", "a b")
        );
        let Lookup::Found { route: r, .. } = table.lookup("GET", "/plugins/demo/items/new") else {
            panic!()
        };
        assert_eq!(r.declared, "/items/new");
        let Lookup::Found { params, .. } = table.lookup("GET", "/plugins/demo/files/a/b.txt")
        else {
            panic!()
        };
        assert_eq!(params["path"], "a/b.txt");
        assert!(
            matches!(table.lookup("DELETE", "/plugins/demo/items/1"), Lookup::MethodNotAllowed { allowed, public: false } if allowed == [Method::Get])
        );
        // An unknown method finds nothing to call, only what is allowed.
        assert!(matches!(
            table.lookup("CONNECT", "/plugins/demo/items/1"),
            Lookup::MethodNotAllowed { .. }
        ));
        assert!(matches!(
            table.lookup("GET", "/plugins/demo/items/1/x"),
            Lookup::NotFound
        ));
        assert!(matches!(
            table.lookup("GET", "/plugins/other/items/1"),
            Lookup::NotFound
        ));
    }

    #[test]
    fn collisions_with_other_plugins_are_refused_and_nothing_changes() {
        let table = RouteTable::default();
        table
            .replace("a", vec![route("a", Method::Post, "/hooks/:id", true)])
            .unwrap();
        let clash = route("b", Method::Post, "/hooks/:name", true);
        assert_eq!(
            table.check(&clash, &[]).unwrap_err().to_string(),
            "POST /hooks/:name is already mounted by plugin 'a'"
        );
        assert!(table
            .replace("b", vec![route("b", Method::Get, "/x", true), clash])
            .is_err());
        assert_eq!(table.list().len(), 1, "a refused replace changes nothing");
        // Another method on the same path is fine; so is the same plugin replacing its own.
        table
            .replace("b", vec![route("b", Method::Get, "/hooks/:id", true)])
            .unwrap();
        table
            .replace("a", vec![route("a", Method::Post, "/hooks/:id", true)])
            .unwrap();
        // Overlapping patterns of different plugins are refused; inside one plugin they are
        // fine (the most specific wins).
        let overlap = route("b", Method::Post, "/hooks/stripe", true);
        assert!(table.check(&overlap, &[]).is_err());
        let wildcard = route("b", Method::Post, "/hooks/*rest", true);
        assert!(
            table.check(&wildcard, &[]).is_err(),
            "a wildcard overlaps everything below it"
        );
        assert!(table
            .check(&route("b", Method::Post, "/hooks/a/b", true), &[])
            .is_ok());
        let own = route("a", Method::Post, "/hooks/new", true);
        assert!(table
            .check(&own, &[route("a", Method::Post, "/hooks/:id", true)])
            .is_ok());
        // Duplicates inside one plugin are refused too.
        let dup = route("c", Method::Get, "/x", false);
        assert!(table.check(&dup, std::slice::from_ref(&dup)).is_err());
    }

    #[test]
    fn routes_are_protected_unless_marked_public() {
        let hook = RouteOptions {
            absolute: true,
            public: true,
        };
        let open = Route::with_options("a", Method::Post, "/hooks/in", hook, 0, 1).unwrap();
        let closed = route("a", Method::Get, "/admin", false);
        assert!(open.public && open.absolute && !closed.public);
        assert_eq!(
            serde_json::to_value(&open).unwrap()["public"],
            serde_json::json!(true)
        );
        let table = RouteTable::default();
        table.replace("a", vec![open, closed]).unwrap();
        let Lookup::Found { route: r, .. } = table.lookup("POST", "/hooks/in") else {
            panic!()
        };
        assert!(r.public);
        assert!(matches!(
            table.lookup("GET", "/hooks/in"),
            Lookup::MethodNotAllowed { public: true, .. }
        ));
    }

    #[test]
    fn removal_can_be_limited_to_one_instance() {
        let table = RouteTable::default();
        let newer = Route::new("a", Method::Get, "/x", false, 0, 2).unwrap();
        table.replace("a", vec![newer]).unwrap();
        assert_eq!(
            table.remove("a", Some(1)),
            0,
            "an older instance's stop leaves the newer routes"
        );
        assert_eq!(table.remove("a", Some(2)), 1);
        assert!(table.list().is_empty());
    }
}
