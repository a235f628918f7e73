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
    /// Datasets, snapshots, rollback and retention.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// Models in the repository.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Run one inference: `kilnctl infer add_sub --input INPUT0='[[1,2]]' --input INPUT1='[[3,4]]'`.
    Infer {
        /// Model name.
        model: String,
        /// NAME=<json array>; the nesting gives the shape unless --shape says otherwise.
        #[arg(long = "input", value_name = "NAME=JSON")]
        inputs: Vec<String>,
        /// NAME=d1,d2,... to reshape a flat --input.
        #[arg(long = "shape", value_name = "NAME=DIMS")]
        shapes: Vec<String>,
        /// Model version (default: the highest ready one).
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Embed texts with an embedding model (tokenised here with its tokenizer.json).
    Embed {
        /// Texts to embed.
        #[arg(required = true)]
        texts: Vec<String>,
        #[arg(long, default_value = "minilm")]
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// Training and batch jobs: submit, list, show, logs, cancel, checkpoint.
    Jobs {
        #[command(subcommand)]
        command: crate::jobs::JobsCommand,
    },
    /// Vector collections: create, add, search, stats, list, delete, drop.
    Vectors {
        #[command(subcommand)]
        command: crate::vectors::VectorsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Backend, datasets (requested and effective properties, fallback reasons), pool health.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List snapshots, oldest first.
    Snapshots {
        /// models, embeddings, checkpoints or logs (default: all).
        dataset: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Snapshot a dataset.
    Snapshot {
        /// models, embeddings, checkpoints or logs.
        dataset: String,
        /// Snapshot name (letters, digits, `_ - . :`).
        name: String,
        /// Never prune this snapshot.
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        json: bool,
    },
    /// Roll a whole dataset back to a snapshot.
    Rollback {
        dataset: String,
        snapshot: String,
        /// Destroy kiln-made snapshots newer than SNAPSHOT (never keep/held/foreign ones).
        #[arg(long)]
        destroy_newer: bool,
        #[arg(long)]
        json: bool,
    },
    /// Apply the retention grid (keep_last, hourly, daily, weekly).
    Prune {
        /// One dataset (default: all).
        dataset: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every model version: state, device, fallback reason, reservation, measured speed.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Load a model (the versions its version policy selects).
    Load {
        name: String,
        /// Place on this device (CPU, GPU, NPU, AUTO); falls back to CPU with a reason.
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Unload every version of a model and free its memory reservation.
    Unload {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Request counts, failures and latency percentiles of loaded models.
    Stats {
        /// One model (default: all loaded).
        name: Option<String>,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Copy a model file or directory into the models dataset as the next version and
    /// snapshot it.
    Import {
        path: PathBuf,
        /// Model name (letters, digits, `_ - .`).
        #[arg(long)]
        name: String,
        /// Load the model once imported.
        #[arg(long)]
        load: bool,
        #[arg(long)]
        json: bool,
    },
    /// Restore a model's directory as it was when VERSION was imported.
    Rollback {
        name: String,
        version: u32,
        #[arg(long)]
        json: bool,
    },
}
