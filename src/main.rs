//! The `switchyard` binary: parse flags, load settings, install telemetry, run.
//! Exit codes: 0 clean shutdown, 1 a required actor gave up or the tree failed, 2 bad setup.

use clap::Parser;
use switchyard::cli::{Cli, Command};
use switchyard::{settings, telemetry, App, Options};

#[actix_web::main]
async fn main() {
    let cli = Cli::parse();
    let (args, check_only) = match cli.command {
        Some(Command::Serve(args)) => (args, false),
        Some(Command::CheckConfig(args)) => (args, true),
        None => (cli.serve, false),
    };
    let checks = switchyard::app::plan::check_settings;
    let settings = match settings::load_checked(&args.overrides(), std::env::vars(), &checks) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("switchyard: {error}");
            std::process::exit(2);
        }
    };
    if check_only {
        // The same checks `serve` runs before anything starts: targets and agents too.
        if let Err(error) = switchyard::app::plan::declared(&settings) {
            eprintln!("switchyard: {error}");
            std::process::exit(error.exit_code());
        }
        let mut shown = settings.clone();
        for secret in [&mut shown.server.admin_token, &mut shown.store.secret_key] {
            if !secret.is_empty() {
                *secret = "********".into();
            }
        }
        print!("{}", toml::to_string_pretty(&shown).unwrap_or_default());
        return;
    }
    telemetry::init(settings.log_format(), &settings.log.level);
    match App::build(settings, Options::default()).await {
        Ok(app) => {
            let report = app.run_until_stopped().await;
            std::process::exit(report.code);
        }
        Err(error) => {
            tracing::error!(%error, "Start-up failed.");
            eprintln!("switchyard: {error}");
            std::process::exit(error.exit_code());
        }
    }
}
