//! The command line: `switchyard [serve] [flags]` and `switchyard check-config [flags]`.
//!
//! Owns parsing only; values become [`Overrides`], the last layer of the settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::settings::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A supervised actor gateway for gateway and connector plugins."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of the default command (`serve`).
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve(ServeArgs),
    /// Load and check the settings, print the effective values as TOML, and exit.
    CheckConfig(ServeArgs),
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Settings file layered over the embedded defaults.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Profile: also loads `{config dir}/{profile}.toml` (or set SWITCHYARD_PROFILE).
    #[arg(long, value_name = "NAME", global = true)]
    pub profile: Option<String>,
    /// Address to listen on, e.g. 0.0.0.0:8080 (server.bind).
    #[arg(long, value_name = "ADDR", global = true)]
    pub bind: Option<String>,
    /// Plugin root directory (plugins.dir).
    #[arg(long, value_name = "DIR", global = true)]
    pub plugins_dir: Option<PathBuf>,
    /// Log format (log.format).
    #[arg(long, value_enum, global = true)]
    pub log_format: Option<LogFormatArg>,
    /// Reload script plugins when their files change (hot_reload.enabled).
    #[arg(long, global = true)]
    pub watch: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Pretty,
    Json,
}

impl ServeArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            profile: self.profile.clone(),
            bind: self.bind.clone(),
            plugins_dir: self.plugins_dir.clone(),
            log_format: self.log_format.map(|f| match f {
                LogFormatArg::Pretty => "pretty".into(),
                LogFormatArg::Json => "json".into(),
            }),
            watch: self.watch,
        }
    }
}
