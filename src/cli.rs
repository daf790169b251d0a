//! The command line: `switchyard [serve] [flags]`, `switchyard check-config [flags]` and
//! `switchyard plugin new <id> [--connector|--gateway] [--ts|--js] [--plugins-dir DIR]`.
//!
//! Owns parsing only; values become [`Overrides`], the last layer of the settings, or a
//! [`scaffold::Request`](crate::scaffold::Request).

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::scaffold::{Kind, Lang};
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
    /// Tools for writing script plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Write a new script plugin that works as it is: <plugins dir>/core/<ID>/index.ts (or
    /// index.js), with a tsconfig.json for the shipped types when they are found.
    New(NewPluginArgs),
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("kind").args(["connector", "gateway"])))]
#[command(group(ArgGroup::new("lang").args(["ts", "js"])))]
pub struct NewPluginArgs {
    /// The plugin's id and directory name: lowercase letters, digits, '-' and '_'.
    pub id: String,
    /// A Krawall connector plugin, run by the sessions that name it (the default).
    #[arg(long, display_order = 1)]
    pub connector: bool,
    /// An Open Astra gateway plugin: init(ctx) with a route and a tool, start() and stop().
    #[arg(long, display_order = 2)]
    pub gateway: bool,
    /// TypeScript: index.ts (the default).
    #[arg(long, display_order = 3)]
    pub ts: bool,
    /// JavaScript: index.js, checked by `// @ts-check`.
    #[arg(long, display_order = 4)]
    pub js: bool,
    /// Plugin root directory; the plugin goes to DIR/core/<ID> (default: plugins.dir from the
    /// settings).
    #[arg(long, value_name = "DIR", display_order = 5)]
    pub plugins_dir: Option<PathBuf>,
}

impl NewPluginArgs {
    pub fn kind(&self) -> Kind {
        if self.gateway {
            Kind::Gateway
        } else {
            Kind::Connector
        }
    }

    pub fn lang(&self) -> Lang {
        if self.js {
            Lang::JavaScript
        } else {
            Lang::TypeScript
        }
    }
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
