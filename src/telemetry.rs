//! Telemetry: builds the tracing subscriber (pretty for humans, JSON for machines).
//!
//! Owns where log lines go (stdout), whether they are coloured (only on a terminal, and never
//! with `NO_COLOR` set: escape codes in a file or a pipe are noise), and which span fields a
//! JSON line carries: every span it was logged in (`spans`: the request with its
//! `request_id`, the session with `session.id`, the hook call with `plugin` and `hook`), so
//! each line says where it came from without every event repeating it. Does not own the
//! spans themselves (`api`, `session`, `plugin::call`). Only `main` installs it; the library
//! never does, so tests and embedders choose their own.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

/// Whether log lines get colour: only when stdout is a terminal and `NO_COLOR` is unset or
/// empty (no-color.org).
pub fn colour(stdout_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. `RUST_LOG` wins over `level` when set.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        LogFormat::Pretty => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(false, None));
        assert!(!colour(true, Some(OsStr::new("1"))));
    }
}
