//! The `switchyard` binary: parse flags, load settings, install telemetry, run; or, for
//! `plugin new`, write a new plugin and exit.
//! Exit codes: 0 clean shutdown, 1 a required actor gave up or the tree failed, 2 bad setup.

use clap::Parser;
use switchyard::cli::{Cli, Command, NewPluginArgs, PluginCommand, ServeArgs};
use switchyard::{scaffold, settings, telemetry, App, Options};

#[actix_web::main]
async fn main() {
    let cli = Cli::parse();
    let (args, check_only) = match cli.command {
        Some(Command::Serve(args)) => (args, false),
        Some(Command::CheckConfig(args)) => (args, true),
        Some(Command::Plugin(PluginCommand::New(new))) => new_plugin(&new, &cli.serve),
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
        let targets = match switchyard::app::plan::declared(&settings) {
            Ok((targets, _)) => targets,
            Err(error) => {
                eprintln!("switchyard: {error}");
                std::process::exit(error.exit_code());
            }
        };
        let shown = switchyard::app::plan::shown(&settings, &targets);
        print!("{}", toml::to_string_pretty(&shown).unwrap_or_default());
        return;
    }
    let telemetry = match telemetry::init(
        settings.log_format(),
        &settings.log.level,
        &settings.telemetry,
    ) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("switchyard: {error}");
            std::process::exit(2);
        }
    };
    let code = match App::build(settings, Options::default()).await {
        Ok(app) => app.run_until_stopped().await.code,
        Err(error) => {
            tracing::error!(%error, "Start-up failed.");
            eprintln!("switchyard: {error}");
            error.exit_code()
        }
    };
    // The last spans (the shutdown's own among them) leave before the process does.
    telemetry.shutdown();
    std::process::exit(code);
}

/// `switchyard plugin new`: writes the plugin into `--plugins-dir`, or where the settings (with
/// `--config`, `--profile` and the environment) say plugins live; prints what it wrote and
/// what to do next. Exits: 0 written, 2 refused (invalid id, existing directory, bad settings,
/// a write that failed).
fn new_plugin(new: &NewPluginArgs, global: &ServeArgs) -> ! {
    let plugins_dir = match new
        .plugins_dir
        .clone()
        .or_else(|| global.plugins_dir.clone())
    {
        Some(dir) => dir,
        None => {
            let checks = switchyard::app::plan::check_settings;
            match settings::load_checked(&global.overrides(), std::env::vars(), &checks) {
                Ok(settings) => settings.plugins.dir,
                Err(error) => {
                    eprintln!("switchyard: {error}");
                    std::process::exit(2);
                }
            }
        }
    };
    let request = scaffold::Request {
        id: new.id.clone(),
        kind: new.kind(),
        lang: new.lang(),
        plugins_dir,
    };
    match scaffold::create(&request) {
        Ok(done) => {
            let what = match (request.kind, request.lang) {
                (scaffold::Kind::Connector, scaffold::Lang::TypeScript) => {
                    "a Krawall connector plugin in TypeScript"
                }
                (scaffold::Kind::Connector, scaffold::Lang::JavaScript) => {
                    "a Krawall connector plugin in JavaScript"
                }
                (scaffold::Kind::Gateway, scaffold::Lang::TypeScript) => {
                    "an Open Astra gateway plugin in TypeScript"
                }
                (scaffold::Kind::Gateway, scaffold::Lang::JavaScript) => {
                    "an Open Astra gateway plugin in JavaScript"
                }
            };
            let mut out = format!("Wrote {} ({what}).\n", done.entry.display());
            if let Some((tsconfig, types)) = &done.tsconfig {
                out += &format!(
                    "Wrote {} (extends {}).\n",
                    tsconfig.display(),
                    types.display()
                );
            }
            out += "Next:\n";
            for step in scaffold::next_steps(&request, &done) {
                out += &format!("  - {step}\n");
            }
            // A closed stdout (`| head`) is not a failure: the plugin is written.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
            std::process::exit(0);
        }
        Err(error) => {
            eprintln!("switchyard plugin new: {error}");
            std::process::exit(2);
        }
    }
}
