//! Loading settings: every source layered over the embedded defaults, each value checked
//! against the schema (the embedded `config/default.toml`), and every problem collected with
//! its key path and origin.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

use super::{Settings, DEFAULT_TOML, ENV_ADMIN_TOKEN, ENV_PREFIX, ENV_PROFILE, ENV_SECRET_KEY};

/// Values given on the command line; they win over every other source.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub profile: Option<String>,
    pub bind: Option<String>,
    pub plugins_dir: Option<PathBuf>,
    pub log_format: Option<String>,
    /// `--watch`: turn hot reload on.
    pub watch: bool,
}

/// One thing wrong with the settings: which key, what is wrong, and where the value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    pub origin: Option<String>,
}

impl Problem {
    pub fn new(key: &str, message: String) -> Self {
        Problem {
            key: key.to_string(),
            message,
            origin: None,
        }
    }

    fn from(key: &str, message: String, origin: &str) -> Self {
        Problem {
            origin: Some(origin.to_string()),
            ..Problem::new(key, message)
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        Ok(())
    }
}

/// Every problem found while loading settings.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Loads settings from every source. `env` is passed in (not read here) so tests and callers
/// decide what the environment is; the process never writes its own environment.
pub fn load(
    overrides: &Overrides,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    load_checked(overrides, env, &|_| Vec::new())
}

/// [`load`], with the caller's own checks on the result (those that need a subsystem, such as
/// the ids of native plugins) reported together with the settings' own problems.
pub fn load_checked(
    overrides: &Overrides,
    env: impl IntoIterator<Item = (String, String)>,
    checks: &dyn Fn(&Settings) -> Vec<Problem>,
) -> Result<Settings, ConfigError> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut problems = Vec::new();
    let merged = merge_sources(overrides, &env, &mut problems);
    // A value rejected while merging leaves its default in place, so this still succeeds and
    // the semantic checks below can report their problems in the same pass.
    match Settings::deserialize(Value::Table(merged)) {
        Ok(settings) => {
            problems.extend(settings.validate());
            problems.extend(checks(&settings));
            if problems.is_empty() {
                return Ok(settings);
            }
        }
        Err(e) => problems.push(Problem::new("(settings)", e.to_string())),
    }
    Err(ConfigError { problems })
}

/// Layers every source over the embedded defaults, recording each rejected value.
fn merge_sources(
    overrides: &Overrides,
    env: &[(String, String)],
    problems: &mut Vec<Problem>,
) -> Table {
    let schema: Table = DEFAULT_TOML.parse().expect("embedded default.toml parses");
    let mut merged = schema.clone();

    let config_dir = match &overrides.config {
        Some(path) => {
            merge_file(&schema, &mut merged, path, problems);
            path.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        }
        None => PathBuf::from("config"),
    };
    let profile = overrides.profile.clone().or_else(|| {
        env.iter()
            .find(|(k, _)| k == ENV_PROFILE)
            .map(|(_, v)| v.clone())
    });
    if let Some(profile) = profile.filter(|p| !p.is_empty()) {
        let path = config_dir.join(format!("{profile}.toml"));
        merge_file(&schema, &mut merged, &path, problems);
    }

    for (name, raw) in env {
        if name == ENV_ADMIN_TOKEN {
            set(
                &mut merged,
                &["server", "admin_token"],
                Value::String(raw.clone()),
            );
        } else if name == ENV_SECRET_KEY {
            set(
                &mut merged,
                &["store", "secret_key"],
                Value::String(raw.clone()),
            );
        } else if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let key = path.join(".");
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            match lookup(&schema, &path) {
                None => problems.push(Problem::from(&key, "unknown setting".into(), name)),
                Some(expected) => match parse_env_value(expected, raw) {
                    Ok(value) => set(&mut merged, &path, value),
                    Err(message) => problems.push(Problem::from(&key, message, name)),
                },
            }
        }
    }

    let flags = [
        (["server", "bind"], overrides.bind.clone()),
        (
            ["plugins", "dir"],
            overrides
                .plugins_dir
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned()),
        ),
        (["log", "format"], overrides.log_format.clone()),
    ];
    if overrides.watch {
        set(
            &mut merged,
            &["hot_reload", "enabled"],
            Value::Boolean(true),
        );
    }
    for (path, value) in flags {
        if let Some(value) = value {
            set(&mut merged, &path, Value::String(value));
        }
    }
    merged
}

fn merge_file(schema: &Table, merged: &mut Table, path: &Path, problems: &mut Vec<Problem>) {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(Problem::from(
                "(file)",
                format!("cannot read: {e}"),
                &origin,
            ));
            return;
        }
    };
    match text.parse::<Table>() {
        Ok(layer) => merge_table(schema, merged, &layer, &mut Vec::new(), &origin, problems),
        Err(e) => problems.push(Problem::from(
            "(file)",
            format!("not valid TOML: {}", e.to_string().trim_end()),
            &origin,
        )),
    }
}

/// Merges `layer` into `merged`, checking each key against the schema. A schema table that is
/// empty accepts any keys (free-form sections).
fn merge_table(
    schema: &Table,
    merged: &mut Table,
    layer: &Table,
    path: &mut Vec<String>,
    origin: &str,
    problems: &mut Vec<Problem>,
) {
    for (key, value) in layer {
        path.push(key.clone());
        let dotted = path.join(".");
        match schema.get(key) {
            None => problems.push(Problem::from(&dotted, "unknown setting".into(), origin)),
            Some(Value::Table(sub_schema)) if !sub_schema.is_empty() => match value {
                Value::Table(sub_layer) => {
                    let entry = merged
                        .entry(key.clone())
                        .or_insert_with(|| Value::Table(Table::new()));
                    if let Value::Table(sub_merged) = entry {
                        merge_table(sub_schema, sub_merged, sub_layer, path, origin, problems);
                    }
                }
                other => problems.push(Problem::from(
                    &dotted,
                    format!("expected a table, found {}", other.type_str()),
                    origin,
                )),
            },
            Some(expected) => match coerce(expected, value) {
                Ok(v) => {
                    merged.insert(key.clone(), v);
                }
                Err(message) => problems.push(Problem::from(&dotted, message, origin)),
            },
        }
        path.pop();
    }
}

/// Accepts `value` where `expected` is the schema's default, converting integers to floats.
fn coerce(expected: &Value, value: &Value) -> Result<Value, String> {
    match (expected, value) {
        (Value::Float(_), Value::Integer(i)) => Ok(Value::Float(*i as f64)),
        (Value::Integer(_), Value::Integer(i)) if *i < 0 => {
            Err(format!("expected a non-negative integer, found {i}"))
        }
        (Value::Array(schema_items), Value::Array(items)) => {
            if let Some(first) = schema_items.first() {
                for (i, item) in items.iter().enumerate() {
                    coerce(first, item).map_err(|m| format!("item {i}: {m}"))?;
                }
            }
            Ok(value.clone())
        }
        (Value::Table(_), Value::Table(_)) => Ok(value.clone()),
        (e, v) if std::mem::discriminant(e) == std::mem::discriminant(v) => Ok(value.clone()),
        (e, v) => Err(format!(
            "expected {}, found {}",
            article(e.type_str()),
            article(v.type_str())
        )),
    }
}

fn article(type_str: &str) -> String {
    match type_str {
        "integer" | "array" => format!("an {type_str}"),
        other => format!("a {other}"),
    }
}

/// Environment values are text: strings are taken as they are, everything else is read as a
/// TOML value (so `SWITCHYARD__PLUGINS__NATIVE='["hello"]'` works) and checked like a file value.
fn parse_env_value(expected: &Value, raw: &str) -> Result<Value, String> {
    if let Value::String(_) = expected {
        return Ok(Value::String(raw.to_string()));
    }
    let parsed = format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .ok_or_else(|| format!("expected {}, got '{raw}'", article(expected.type_str())))?;
    coerce(expected, &parsed)
        .map_err(|_| format!("expected {}, got '{raw}'", article(expected.type_str())))
}

fn lookup<'a>(schema: &'a Table, path: &[&str]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut table = schema;
    for p in parents {
        table = table.get(*p)?.as_table()?;
    }
    table
        .get(*last)
        .filter(|v| !matches!(v, Value::Table(t) if !t.is_empty()))
}

fn set(table: &mut Table, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut table = table;
    for p in parents {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(t) => t,
            _ => return,
        };
    }
    table.insert(last.to_string(), value);
}
