//! kiln-bench: measurements that back kiln's speed and memory goals. Each
//! subcommand prints a human table or `--json`, and the ratio to its goal or
//! reference measured in the same run. Build in release:
//! `cargo build --release -p kilnd -p kilnctl -p kiln-bench`.

mod startup;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kiln-bench", version, about = "kiln benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start→READY time and idle RSS of kilnd (goals: ≤ 500 ms, ≤ 40 MB).
    Startup {
        #[arg(long)]
        json: bool,
        /// How many starts to measure.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = match cli.command {
        Cmd::Startup { json, runs } => {
            startup::run(runs).map(|r| if json { r.json() } else { r.table() })
        }
    };
    match out {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiln-bench: {e}");
            ExitCode::from(1)
        }
    }
}
