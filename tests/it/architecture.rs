//! The layering of `src/` (docs/ARCHITECTURE.md, "The house"), held as data and checked on
//! every run: each module sits on a floor and imports only modules on its own floor or below,
//! the modules form no circle, and the named rules below hold. A failure names the file and
//! line of the offending import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module of the crate and its floor. A module imports only modules on its
/// own floor or lower ones (and no circle may form among those on one floor).
const FLOORS: &[(&str, u8)] = &[
    ("util", 0),
    ("health", 0),
    // `switchyard plugin new`: templates and files only, nothing of the crate.
    ("scaffold", 0),
    // W3C trace context on the wire: read by `api`, written by `connector`.
    ("trace_context", 0),
    ("settings", 1),
    ("supervisor", 1),
    ("broker", 1),
    // Recorded into by plugin, session and the reload path; reads only `health` itself.
    ("metrics", 1),
    ("store", 2),
    ("connector", 2),
    ("route", 2),
    ("tool", 2),
    ("agent", 2),
    ("inference", 2),
    ("target", 3),
    ("plugin", 3),
    ("webhook", 3),
    ("script", 4),
    ("bundled", 4),
    ("turn", 4),
    ("session", 5),
    // The front doors run their traffic through sessions; sessions never name them.
    ("frontdoor", 5),
    ("api", 6),
    ("app", 7),
    ("cli", 7),
    ("telemetry", 7),
    ("test_util", 7),
    ("main", 8),
];

/// Rules the floors alone do not say: `module` must not import any of these.
const NEVER: &[(&str, &[&str])] = &[
    // Settings are data at the bottom: subsystems read their own config, made by the app.
    (
        "settings",
        &[
            "supervisor",
            "broker",
            "store",
            "connector",
            "inference",
            "agent",
            "plugin",
            "script",
            "bundled",
        ],
    ),
    // Metrics are counted into from above and read out at scrape time: they name nothing but
    // the health table, so every subsystem may record into them.
    ("metrics", &["settings", "supervisor", "broker"]),
    // The supervisor knows no kind of child.
    (
        "supervisor",
        &["broker", "store", "plugin", "session", "script"],
    ),
    // Protocols only.
    ("connector", &["store", "target", "plugin", "session"]),
    // Rows only: the store knows no plugin.
    (
        "store",
        &["connector", "target", "plugin", "bundled", "session"],
    ),
    // The runtime never names an engine, a shipped plugin, or a caller.
    (
        "plugin",
        &["target", "script", "bundled", "turn", "session", "api"],
    ),
    ("script", &["bundled", "turn", "session", "api"]),
    ("bundled", &["script", "turn", "session", "api"]),
    // Sessions serve the front doors without knowing them.
    ("session", &["frontdoor"]),
];

/// One `crate::<module>` reference in a file.
#[derive(Debug)]
struct Import {
    file: PathBuf,
    line: usize,
    from: String,
    to: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/x.rs` and `src/x/…` are `x`.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(src_dir()).expect("a file under src");
    let first = relative.components().next().expect("a path component");
    let name = first.as_os_str().to_string_lossy();
    name.strip_suffix(".rs").unwrap_or(&name).to_string()
}

/// What `lib.rs` re-exports at the crate root, and the module each comes from.
const RE_EXPORTS: &[(&str, &str)] = &[
    ("App", "app"),
    ("ExitReport", "app"),
    ("Options", "app"),
    ("ShutdownHandle", "app"),
    ("StartupError", "app"),
    ("Settings", "settings"),
];

fn word(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The modules a piece of code names, with their byte offsets: `crate::a::…` and each
/// top-level item of `crate::{a, b::{c, d}}` (groups may span lines).
fn named_modules(code: &str) -> Vec<(usize, String)> {
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        from = at + "crate::".len();
        // A preceding identifier character means another path (`my_crate::`).
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // The top-level items of a (possibly nested) group.
            let (mut depth, mut item_start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.push((at, word(group[item_start..i].trim())));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push((at, word(group[item_start..i].trim())));
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.push((at, word(rest)));
        }
    }
    names.retain(|(_, n)| !n.is_empty() && n != "self");
    names
}

fn imports() -> Vec<Import> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let from = module_of(&file);
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        // Comment lines are blanked, not removed, so byte offsets still give line numbers.
        let code: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("//") {
                    ""
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        for (at, name) in named_modules(&code) {
            let to = RE_EXPORTS
                .iter()
                .find(|(item, _)| *item == name)
                .map(|(_, module)| module.to_string())
                .unwrap_or(name);
            if to != from {
                found.push(Import {
                    file: file.clone(),
                    line: code[..at].matches('\n').count() + 1,
                    from: from.clone(),
                    to,
                });
            }
        }
    }
    found
}

fn floor(module: &str) -> Option<u8> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
}

fn at(import: &Import) -> String {
    let file = import
        .file
        .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
        .unwrap_or(&import.file);
    format!("{}:{}", file.display(), import.line)
}

#[test]
fn every_module_has_a_floor() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let missing: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(f))
        .filter(|m| m != "lib" && floor(m).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a floor in tests/it/architecture.rs (add them to FLOORS and to the map in docs/ARCHITECTURE.md): {missing:?}"
    );
}

#[test]
fn dependencies_point_down() {
    let mut wrong = Vec::new();
    for import in imports() {
        let (Some(from), Some(to)) = (floor(&import.from), floor(&import.to)) else {
            wrong.push(format!(
                "{}: {} imports crate::{}, which has no floor (a new module, or a re-export missing from RE_EXPORTS)",
                at(&import),
                import.from,
                import.to
            ));
            continue;
        };
        if to > from {
            wrong.push(format!(
                "{}: {} (floor {from}) imports {} (floor {to})",
                at(&import),
                import.from,
                import.to
            ));
        }
        let never = NEVER
            .iter()
            .find(|(m, _)| *m == import.from)
            .map(|(_, n)| *n)
            .unwrap_or(&[]);
        if never.contains(&import.to.as_str()) {
            wrong.push(format!(
                "{}: {} must never import {}",
                at(&import),
                import.from,
                import.to
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_modules_form_no_circle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut example: BTreeMap<(String, String), String> = BTreeMap::new();
    for import in imports() {
        if floor(&import.to).is_none() {
            continue;
        }
        example
            .entry((import.from.clone(), import.to.clone()))
            .or_insert_with(|| at(&import));
        edges.entry(import.from).or_default().insert(import.to);
    }
    // Depth-first search; a grey node reached again closes a circle.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(1) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut circle = path[start..].to_vec();
                circle.push(node.to_string());
                return Some(circle);
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, state, path) {
                return Some(circle);
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if let Some(circle) = visit(node, &edges, &mut state, &mut Vec::new()) {
            let steps: Vec<String> = circle
                .windows(2)
                .map(|w| {
                    let key = (w[0].clone(), w[1].clone());
                    format!("{} -> {} ({})", w[0], w[1], example[&key])
                })
                .collect();
            panic!("the modules form a circle:\n{}", steps.join("\n"));
        }
    }
}

#[test]
fn the_checker_sees_what_it_must() {
    let names =
        |code: &str| -> Vec<String> { named_modules(code).into_iter().map(|(_, n)| n).collect() };
    // Plain paths, groups over several lines, nested groups, and names that only look alike.
    assert_eq!(names("use crate::plugin::host::PluginHost;"), ["plugin"]);
    assert_eq!(
        names("use crate::{\n    broker,\n    store::{writer::Write, Store},\n    util,\n};"),
        ["broker", "store", "util"]
    );
    assert_eq!(
        names("let x = crate::util::rfc3339(crate::util::now());"),
        ["util", "util"]
    );
    assert!(names("use my_crate::plugin;").is_empty());
    assert_eq!(names("use crate::App;"), ["App"]);
}
