//! kilnd's command line. Also used to generate the man page and completions.

use clap::{Parser, Subcommand};
use kiln_engine::{ConfigSources, Overrides};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "kilnd", version, about = "Kiln edge AI appliance daemon", long_about = None)]
pub struct Cli {
    /// Main configuration file; drop-ins are read from `<FILE>.d/*.toml`.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// gRPC Unix socket (overrides daemon.socket).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// State directory (overrides daemon.state_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// D-Bus: system, session, none, or a bus address (overrides dbus.bus).
    #[arg(long, global = true, value_name = "BUS")]
    pub bus: Option<String>,
    /// Log filter such as `info` or `info,kilnd=debug` (overrides daemon.log_level).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Read the machine from this root instead of / (a recorded machine tree).
    #[arg(long, global = true, value_name = "DIR")]
    pub hal_root: Option<PathBuf>,
    /// Serve the models of this repository (`<DIR>/<name>/<version>/`; overrides models.repository).
    #[arg(long, global = true, value_name = "DIR")]
    pub model_repository: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (the default).
    Run,
    /// Validate the configuration files and exit 0 (valid) or 1 (invalid).
    CheckConfig,
    /// Print the hardware inventory and exit; no daemon needed.
    Probe {
        /// Machine root to read (default: [hal] root, normally /).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Internal: supervise one job (started by kilnd itself; see docs/jobs.md).
    #[command(hide = true)]
    JobShim {
        /// The job's launch.json.
        launch: PathBuf,
    },
}

impl Cli {
    pub fn sources(&self) -> ConfigSources {
        ConfigSources::new(
            self.config.clone(),
            Overrides {
                socket: self.socket.clone(),
                state_dir: self.state_dir.clone(),
                bus: self.bus.clone(),
                log_level: self.log_level.clone(),
                hal_root: self.hal_root.clone(),
                model_repository: self.model_repository.clone(),
            },
        )
    }
}
