//! kiln-bench: measurements that back kiln's speed and memory goals. Each
//! subcommand prints a human table or `--json`, and the ratio to its goal or
//! reference measured in the same run. Build in release:
//! `cargo build --release -p kilnd -p kilnctl -p kiln-bench`.

mod fuzz;
mod infer;
mod jobs;
mod startup;
mod vectors;

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
    /// MiniLM in-process vs served (goal ratio >= 0.95); a tiny model under concurrent
    /// clients (goals >= 15k/s, p99 < 1 ms).
    Infer {
        #[arg(long)]
        json: bool,
        /// MiniLM inferences per side.
        #[arg(long, default_value_t = 30)]
        iters: usize,
        /// Concurrent clients for the tiny model.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Seconds of tiny-model load.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Submit → job process running over gRPC (goal p50/p99 ≤ 50 ms).
    Jobs {
        #[arg(long)]
        json: bool,
        /// How many jobs to submit.
        #[arg(long, default_value_t = 100)]
        runs: usize,
    },
    /// Start→READY time and idle RSS of kilnd (goals: ≤ 500 ms, ≤ 40 MB).
    Startup {
        #[arg(long)]
        json: bool,
        /// How many starts to measure.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Vector search: exact batch 1 / batch 16, int8 + rerank with recall@10, and the
    /// share of this machine's single-thread read bandwidth a batch-1 scan reaches.
    Vectors(vectors::VectorsArgs),
    /// Malformed and edge-case requests to every unary method over the real socket, mixed
    /// with valid calls; fails if kilnd goes away or refuses a valid call.
    Fuzz {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 1_000_000)]
        requests: u64,
        #[arg(long, default_value_t = 4)]
        clients: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = match cli.command {
        Cmd::Infer {
            json,
            iters,
            clients,
            seconds,
        } => infer::run(iters.max(1), clients.max(1), seconds.max(1))
            .map(|r| if json { r.json() } else { r.table() }),
        Cmd::Jobs { json, runs } => {
            jobs::run(runs.max(1)).map(|r| if json { r.json() } else { r.table() })
        }
        Cmd::Startup { json, runs } => {
            startup::run(runs).map(|r| if json { r.json() } else { r.table() })
        }
        Cmd::Vectors(args) => vectors::run(&args),
        Cmd::Fuzz {
            json,
            requests,
            clients,
        } => fuzz::run(requests.max(1), clients).and_then(|r| {
            let out = if json { r.json() } else { r.table() };
            r.verdict().map_err(|e| format!("{e}\n{out}")).map(|_| out)
        }),
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
