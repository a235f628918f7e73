//! Entry point: parse the command line, then run the daemon or a one-shot command.

use clap::Parser;
use kilnd::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::JobShim { ref launch }) => ExitCode::from(
            kiln_engine::jobs::run_job_shim(&launch.display().to_string()).clamp(0, 255) as u8,
        ),
        Some(Command::CheckConfig) => kilnd::daemon::check_config(&cli),
        Some(Command::Probe { ref root, json }) => kilnd::probe::run(&cli, root.as_deref(), json),
        Some(Command::Run) | None => kilnd::daemon::run(&cli),
    }
}
