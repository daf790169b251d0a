//! `switchyard plugin new`: writes a new script plugin that works as it is, from the templates
//! beside this file.
//!
//! Owns: the rules for a new plugin's id, the four templates (a Krawall connector plugin or an
//! Open Astra gateway plugin, in TypeScript or JavaScript), and the plugin's `tsconfig.json`
//! that points the TypeScript compiler at the shipped types (`types/`), found by looking up
//! from the plugins directory.
//!
//! Does not own: where the plugins directory is (the caller passes it), loading or checking
//! plugins (`script/`), and the type definitions themselves (`types/`, plain files). It
//! imports nothing from the rest of the crate, so it can sit on the lowest floor.

use std::fmt;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Which of the two plugin contracts the new plugin follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Krawall: registered with `PluginLoader.register`, run by sessions.
    Connector,
    /// Open Astra: a default export with `init(ctx)`, `start()`, `stop()`.
    Gateway,
}

/// The language of the entry file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    TypeScript,
    JavaScript,
}

/// What to write, and where.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: String,
    pub kind: Kind,
    pub lang: Lang,
    /// The plugin root (`plugins.dir`); the plugin goes to `<plugins_dir>/core/<id>/`.
    pub plugins_dir: PathBuf,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Scaffolded {
    /// `<plugins_dir>/core/<id>`.
    pub dir: PathBuf,
    /// `index.ts` or `index.js` in `dir`.
    pub entry: PathBuf,
    /// The plugin's `tsconfig.json` and the `tsconfig.plugin.json` it extends, when one was
    /// found above the plugins directory.
    pub tsconfig: Option<(PathBuf, PathBuf)>,
}

/// Why nothing was written.
#[derive(Debug)]
pub enum ScaffoldError {
    /// The id is not one the loader would accept, or not one we write.
    InvalidId { id: String, reason: String },
    /// `<plugins_dir>/core/<id>` exists already.
    Exists(PathBuf),
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl fmt::Display for ScaffoldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaffoldError::InvalidId { id, reason } => {
                write!(f, "'{id}' is not a valid plugin id: {reason}")
            }
            ScaffoldError::Exists(dir) => write!(
                f,
                "{} already exists; choose another id or remove that directory",
                dir.display()
            ),
            ScaffoldError::Io { path, error } => {
                write!(f, "cannot write {}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for ScaffoldError {}

/// The longest id we write: the names derived from it (the tool `<id>-echo`, at most 64
/// characters) stay within their limits.
pub const MAX_ID_LEN: usize = 50;

/// Checks a new plugin's id. The loader takes any directory name that is not empty, has no
/// `/` or `\` and does not start with `.`; we also keep to lowercase letters, digits, `-` and
/// `_`, starting with a letter or digit, so the id is the same in URLs, tool names and on
/// every file system.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("it is empty".into());
    }
    if id.starts_with('.') {
        return Err("it starts with '.', and the loader skips hidden directories".into());
    }
    if id.contains(['/', '\\']) {
        return Err("it contains a path separator; the id is one directory name".into());
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "'{bad}' is not allowed; use lowercase letters, digits, '-' and '_'"
        ));
    }
    if !id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err("it must start with a lowercase letter or a digit".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "it has {} characters; at most {MAX_ID_LEN}",
            id.len()
        ));
    }
    Ok(())
}

/// A display name from an id: `my-plugin_two` → `My Plugin Two`.
pub fn display_name(id: &str) -> String {
    id.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The entry file's text for a (valid) `id`.
pub fn render(kind: Kind, lang: Lang, id: &str) -> String {
    let template = match (kind, lang) {
        (Kind::Connector, Lang::TypeScript) => include_str!("connector.ts"),
        (Kind::Connector, Lang::JavaScript) => include_str!("connector.js"),
        (Kind::Gateway, Lang::TypeScript) => include_str!("gateway.ts"),
        (Kind::Gateway, Lang::JavaScript) => include_str!("gateway.js"),
    };
    template
        .replace("__PLUGIN_ID__", id)
        .replace("__PLUGIN_NAME__", &display_name(id))
}

/// The file the plugin's `tsconfig.json` extends, relative to the project root.
pub const TYPES_CONFIG: &str = "types/tsconfig.plugin.json";

/// `types/tsconfig.plugin.json` in `start` or the nearest directory above it that has one.
pub fn find_types_config(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(TYPES_CONFIG))
        .find(|candidate| candidate.is_file())
}

/// The path from directory `from` to `to` (both absolute), with `..` where needed.
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to[common..] {
        out.push(part);
    }
    out
}

/// A plugin's `tsconfig.json`, extending `extends` (a path relative to the plugin directory).
pub fn tsconfig_text(extends: &Path) -> String {
    let path: Vec<String> = extends
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let path = serde_json::to_string(&path.join("/")).unwrap_or_default();
    format!("{{\n  \"extends\": {path}\n}}\n")
}

/// Writes the plugin: its directory, the entry file, and its `tsconfig.json` when the shipped
/// types are found above the plugins directory. Refuses an invalid id or an existing
/// directory, and writes nothing then.
pub fn create(request: &Request) -> Result<Scaffolded, ScaffoldError> {
    validate_id(&request.id).map_err(|reason| ScaffoldError::InvalidId {
        id: request.id.clone(),
        reason,
    })?;
    let core = request.plugins_dir.join("core");
    let dir = core.join(&request.id);
    if dir.symlink_metadata().is_ok() {
        return Err(ScaffoldError::Exists(dir));
    }
    std::fs::create_dir_all(&core).map_err(|error| ScaffoldError::Io {
        path: core.clone(),
        error,
    })?;
    // `create_dir` (not `_all`) fails if the directory appeared meanwhile: never write into
    // someone else's plugin.
    std::fs::create_dir(&dir).map_err(|error| match error.kind() {
        std::io::ErrorKind::AlreadyExists => ScaffoldError::Exists(dir.clone()),
        _ => ScaffoldError::Io {
            path: dir.clone(),
            error,
        },
    })?;
    let written = write_files(request, &dir);
    if written.is_err() {
        // The directory is ours (just created): leave nothing half-written behind.
        let _ = std::fs::remove_dir_all(&dir);
    }
    written
}

fn write_files(request: &Request, dir: &Path) -> Result<Scaffolded, ScaffoldError> {
    let entry = dir.join(match request.lang {
        Lang::TypeScript => "index.ts",
        Lang::JavaScript => "index.js",
    });
    write_new(&entry, &render(request.kind, request.lang, &request.id))?;
    let absolute = std::path::absolute(dir).map_err(|error| ScaffoldError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    let tsconfig = match find_types_config(&absolute) {
        Some(types_config) => {
            let path = dir.join("tsconfig.json");
            write_new(
                &path,
                &tsconfig_text(&relative_path(&absolute, &types_config)),
            )?;
            Some((path, types_config))
        }
        None => None,
    };
    Ok(Scaffolded {
        dir: dir.to_path_buf(),
        entry,
        tsconfig,
    })
}

fn write_new(path: &Path, text: &str) -> Result<(), ScaffoldError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|error| ScaffoldError::Io {
            path: path.to_path_buf(),
            error,
        })
}

/// What to do next, for the command's output.
pub fn next_steps(request: &Request, done: &Scaffolded) -> Vec<String> {
    let id = &request.id;
    let mut steps = vec![match request.kind {
        Kind::Connector => format!(
            "Start switchyard (a running `switchyard --watch` loads the new directory by itself) and \
             name the plugin in a session: POST /api/sessions {{\"targetId\": \"<target>\", \"plugins\": [{{\"id\": \"{id}\"}}]}}"
        ),
        Kind::Gateway => format!(
            "Start switchyard (a running `switchyard --watch` loads the new directory by itself), \
             then: curl http://127.0.0.1:8080/plugins/{id}/hello"
        ),
    }];
    steps.push(match &done.tsconfig {
        Some((_, types_config)) => {
            let types_dir = types_config.parent().unwrap_or(Path::new("types"));
            format!(
                "Type-check it: npm ci --prefix {types} && {types}/node_modules/.bin/tsc -p {dir}",
                types = types_dir.display(),
                dir = done.dir.display()
            )
        }
        None => format!(
            "To type-check it, add {dir}/tsconfig.json with {{\"extends\": \"<switchyard checkout>/{TYPES_CONFIG}\"}} \
             (no {TYPES_CONFIG} was found above {dir})",
            dir = done.dir.display()
        ),
    });
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_loaders_rules_and_ours() {
        for good in [
            "a",
            "my-plugin",
            "my_plugin",
            "v2",
            "2fa",
            &"x".repeat(MAX_ID_LEN),
        ] {
            assert_eq!(validate_id(good), Ok(()), "{good}");
        }
        let reason = |id: &str| validate_id(id).unwrap_err();
        assert_eq!(reason(""), "it is empty");
        assert!(reason(".hidden").contains("starts with '.'"));
        assert!(reason("a/b").contains("path separator"));
        assert!(reason("a\\b").contains("path separator"));
        assert!(reason("My-Plugin").contains("'M' is not allowed"));
        assert!(reason("a b").contains("' ' is not allowed"));
        assert!(reason("café").contains("'é' is not allowed"));
        assert!(reason("-x").contains("must start with"));
        assert!(reason("_x").contains("must start with"));
        assert!(reason(&"x".repeat(MAX_ID_LEN + 1)).contains("at most"));
    }

    #[test]
    fn templates_are_filled_in_completely() {
        for kind in [Kind::Connector, Kind::Gateway] {
            for lang in [Lang::TypeScript, Lang::JavaScript] {
                let text = render(kind, lang, "my-thing");
                assert!(!text.contains("__PLUGIN"), "{kind:?} {lang:?}");
                assert!(text.contains("\"my-thing\""), "{kind:?} {lang:?}");
            }
        }
        assert!(render(Kind::Connector, Lang::TypeScript, "my-thing").contains("\"My Thing\""));
        assert_eq!(display_name("a-b_c"), "A B C");
    }

    #[test]
    fn tsconfig_extends_the_types_by_a_relative_path() {
        let rel = relative_path(
            Path::new("/repo/plugins/core/x"),
            Path::new("/repo/types/tsconfig.plugin.json"),
        );
        assert_eq!(rel, Path::new("../../../types/tsconfig.plugin.json"));
        assert_eq!(
            tsconfig_text(&rel),
            "{\n  \"extends\": \"../../../types/tsconfig.plugin.json\"\n}\n"
        );
    }

    #[test]
    fn writes_once_and_never_over_an_existing_directory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("types")).unwrap();
        std::fs::write(root.path().join(TYPES_CONFIG), "{}").unwrap();
        let request = Request {
            id: "fresh".into(),
            kind: Kind::Gateway,
            lang: Lang::JavaScript,
            plugins_dir: root.path().join("plugins"),
        };
        let done = create(&request).unwrap();
        assert_eq!(done.entry, root.path().join("plugins/core/fresh/index.js"));
        let (tsconfig, _) = done.tsconfig.clone().unwrap();
        assert_eq!(
            std::fs::read_to_string(tsconfig).unwrap(),
            "{\n  \"extends\": \"../../../types/tsconfig.plugin.json\"\n}\n"
        );
        let before = std::fs::read_to_string(&done.entry).unwrap();
        match create(&request) {
            Err(ScaffoldError::Exists(dir)) => assert_eq!(dir, done.dir),
            other => panic!("expected Exists, got {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&done.entry).unwrap(), before);
        let invalid = Request {
            id: "../escape".into(),
            ..request
        };
        assert!(matches!(
            create(&invalid),
            Err(ScaffoldError::InvalidId { .. })
        ));
        assert!(!root.path().join("plugins/escape").exists());
    }
}
