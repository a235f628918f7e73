//! kilnctl's command line. Also used to generate the man page and completions.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub const DEFAULT_SOCKET: &str = "/run/kiln/kiln.sock";

#[derive(Debug, Parser)]
#[command(name = "kilnctl", version, about = "Control and query kilnd", long_about = None)]
pub struct Cli {
    /// kilnd's gRPC socket.
    #[arg(long, global = true, env = "KILN_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the daemon's state, configuration and components.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask kilnd to re-read its configuration.
    Reload {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the machine's devices (CPU groups, NPU, iGPU, NCS2).
    Devices {
        /// Print the whole inventory as JSON (the shape of `kilnd probe --json`).
        #[arg(long)]
        json: bool,
        /// Follow device events (added, removed, changed) until interrupted.
        #[arg(long, conflicts_with = "rescan")]
        watch: bool,
        /// Ask the daemon to rescan devices now, then list them.
        #[arg(long)]
        rescan: bool,
    },
}
