//! Entry point: parse, run one subcommand, print, exit with its code.

use clap::Parser;
use kilnctl::cli::{Cli, Command};
use kilnctl::{commands, devices, models, storage};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kilnctl: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match &cli.command {
            Command::Status { json } => commands::status(&cli.socket, *json).await,
            Command::Reload { json } => commands::reload(&cli.socket, *json).await,
            Command::Devices {
                json,
                watch,
                rescan,
            } => devices::run(&cli.socket, *json, *watch, *rescan).await,
            Command::Storage { command } => storage::run(&cli.socket, command).await,
            Command::Models { command } => storage::run_models(&cli.socket, command).await,
            Command::Infer {
                model,
                inputs,
                shapes,
                version,
                json,
            } => {
                models::infer(
                    &cli.socket,
                    model,
                    version.as_deref(),
                    inputs,
                    shapes,
                    *json,
                )
                .await
            }
            Command::Embed { texts, model, json } => {
                models::embed(&cli.socket, texts, model, *json).await
            }
            Command::Jobs { command } => kilnctl::jobs::run(&cli.socket, command).await,
            Command::Vectors { command } => kilnctl::vectors::run(&cli.socket, command).await,
        }
    });
    match result {
        Ok(out) => {
            print!("{out}");
            if !out.is_empty() && !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("kilnctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
