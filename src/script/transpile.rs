//! TypeScript → JavaScript, in-process, with oxc (no Node.js at run time).
//!
//! Owns type stripping and lowering of the TypeScript-only constructs (enums, parameter
//! properties, `import type`, `as`, `satisfies`, generics), turning oxc diagnostics into
//! `file:line:col` messages, and the source map of each stripped file: the output is
//! re-printed, so stack lines of runtime errors are mapped back to the `.ts` source
//! ([`remap_stack`]).

use std::path::Path;

use std::collections::HashMap;

use oxc::allocator::Allocator;
use oxc::codegen::{Codegen, CodegenOptions};
use oxc::diagnostics::OxcDiagnostic;
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::SourceType;
use oxc::transformer::{TransformOptions, Transformer};

/// A stripped file: JavaScript, and where each of its positions came from.
#[derive(Debug)]
pub struct Stripped {
    pub code: String,
    pub map: Option<oxc_sourcemap::SourceMap<'static>>,
}

/// Strips types from `source` (the file at `path`). Errors name the file, line and column.
pub fn strip_types(path: &Path, source: &str) -> Result<Stripped, String> {
    let allocator = Allocator::default();
    let source_type = SourceType::from_path(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .with_module(true);
    let parsed = Parser::new(&allocator, source, source_type).parse();
    if let Some(error) = parsed.diagnostics.errors().next() {
        return Err(describe(path, source, error));
    }
    let mut program = parsed.program;
    // Enum lowering needs the evaluated member values (oxc#21667).
    let scoping = SemanticBuilder::new()
        .with_enum_eval(true)
        .build(&program)
        .semantic
        .into_scoping();
    let transformed = Transformer::new(&allocator, path, &TransformOptions::default())
        .build_with_scoping(scoping, &mut program);
    if let Some(error) = transformed.diagnostics.errors().next() {
        return Err(describe(path, source, error));
    }
    let printed = Codegen::new()
        .with_options(CodegenOptions {
            source_map_path: Some(path.to_path_buf()),
            ..CodegenOptions::default()
        })
        .build(&program);
    Ok(Stripped {
        code: printed.code,
        map: printed.map.map(|m| m.into_owned()),
    })
}

/// Rewrites the `file:line:col` of each stack frame whose file has a source map (1-based, as
/// QuickJS prints them) to the position in the original source.
pub fn remap_stack(
    stack: &str,
    maps: &HashMap<String, oxc_sourcemap::SourceMap<'static>>,
) -> String {
    if maps.is_empty() {
        return stack.to_string();
    }
    stack
        .lines()
        .map(|line| remap_frame(line, maps).unwrap_or_else(|| line.to_string()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn remap_frame(
    line: &str,
    maps: &HashMap<String, oxc_sourcemap::SourceMap<'static>>,
) -> Option<String> {
    // `    at fn (file:line:col)` or `    at file:line:col`.
    let end = if line.ends_with(')') {
        line.len() - 1
    } else {
        line.len()
    };
    let start = line[..end]
        .rfind('(')
        .map(|i| i + 1)
        .or_else(|| line.find("at ").map(|i| i + 3))?;
    let location = &line[start..end];
    let (rest, col) = location.rsplit_once(':')?;
    let (file, row) = rest.rsplit_once(':')?;
    let (row, col): (u32, u32) = (row.parse().ok()?, col.parse().ok()?);
    let map = maps.get(file)?;
    let table = map.generate_lookup_table();
    let token = map.lookup_token(&table, row.checked_sub(1)?, col.saturating_sub(1))?;
    Some(format!(
        "{}{file}:{}:{}{}",
        &line[..start],
        token.get_src_line() + 1,
        token.get_src_col() + 1,
        &line[end..]
    ))
}

/// `message at file:line:col`, using the diagnostic's first label.
fn describe(path: &Path, source: &str, error: &OxcDiagnostic) -> String {
    let offset = error
        .labels
        .first()
        .map(|l| l.offset() as usize)
        .unwrap_or(0);
    let (line, col) = line_col(source, offset);
    format!(
        "SyntaxError: {} at {}:{line}:{col}",
        error.message,
        path.display()
    )
}

/// 1-based line and column of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_interfaces_generics_casts_type_imports_and_lowers_enums() {
        let ts = r#"
import type { Foo } from "./types";
interface Shape { size: number }
type Id = string;
enum Level { Low = 1, High }
enum Mode { Strict = "strict", Lenient = "lenient" }
class Store<V> { constructor(private items: V[] = []) {} add(v: V): number { return this.items.push(v); } }
function first<T extends string>(xs: T[]): T | undefined { return xs[0]; }
const s = { size: 3 } as Shape satisfies Shape;
export default { mode: Mode.Lenient, level: Level.High, n: new Store<number>().add(<number>1), f: first(["a"]), size: s.size! };
"#;
        let js = strip_types(Path::new("x.ts"), ts).unwrap().code;
        assert!(!js.contains("interface"), "{js}");
        assert!(!js.contains("import"), "{js}");
        assert!(js.contains("Level"), "{js}");
        assert!(!js.contains(": number"), "{js}");
        // String members are lowered without a reverse mapping (oxc needs enum evaluation).
        assert!(js.contains("\"lenient\""), "{js}");
        assert!(!js.contains("Mode[\"lenient\"]"), "{js}");
    }

    #[test]
    fn runtime_stack_lines_map_back_to_the_typescript_source() {
        // Types and blank lines vanish from the output, so line 7 of the source is line 2 of it.
        let ts = "interface A {\n  a: number;\n}\ntype B = string;\n\n\nexport function boom(x: A): B {\n  throw new Error('x' + x.a);\n}\n";
        let stripped = strip_types(Path::new("/p/x/index.ts"), ts).unwrap();
        let js_line = stripped
            .code
            .lines()
            .position(|l| l.contains("throw"))
            .unwrap()
            + 1;
        assert!(js_line < 8, "{}", stripped.code);
        let maps = HashMap::from([("/p/x/index.ts".to_string(), stripped.map.unwrap())]);
        let stack =
            format!("    at boom (/p/x/index.ts:{js_line}:3)\n    at <anonymous> (/p/y.js:1:1)");
        let remapped = remap_stack(&stack, &maps);
        assert!(
            remapped.starts_with("    at boom (/p/x/index.ts:8:3)"),
            "{remapped}"
        );
        assert!(remapped.ends_with("(/p/y.js:1:1)"), "{remapped}");
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        let err = strip_types(
            Path::new("plugins/core/bad/index.ts"),
            "const a = 1;\nconst b = {;\n",
        )
        .unwrap_err();
        assert!(err.contains("plugins/core/bad/index.ts:2:"), "{err}");
        assert!(err.starts_with("SyntaxError:"), "{err}");
    }
}
