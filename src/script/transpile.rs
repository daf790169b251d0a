//! TypeScript → JavaScript, in-process, with oxc (no Node.js at run time).
//!
//! Owns type stripping and lowering of the TypeScript-only constructs (enums, parameter
//! properties, `import type`, `as`, `satisfies`, generics) and turning oxc diagnostics into
//! `file:line:col` messages. Note: the output is re-printed, so line numbers of *runtime* errors
//! in `.ts` files refer to the generated JavaScript; syntax errors point at the `.ts` source.

use std::path::Path;

use oxc::allocator::Allocator;
use oxc::codegen::Codegen;
use oxc::diagnostics::OxcDiagnostic;
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::SourceType;
use oxc::transformer::{TransformOptions, Transformer};

/// Strips types from `source` (the file at `path`). Errors name the file, line and column.
pub fn strip_types(path: &Path, source: &str) -> Result<String, String> {
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
    Ok(Codegen::new().build(&program).code)
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
        let js = strip_types(Path::new("x.ts"), ts).unwrap();
        assert!(!js.contains("interface"), "{js}");
        assert!(!js.contains("import"), "{js}");
        assert!(js.contains("Level"), "{js}");
        assert!(!js.contains(": number"), "{js}");
        // String members are lowered without a reverse mapping (oxc needs enum evaluation).
        assert!(js.contains("\"lenient\""), "{js}");
        assert!(!js.contains("Mode[\"lenient\"]"), "{js}");
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
