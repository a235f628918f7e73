//! The transport-free heart of kilnd. The engine owns configuration, the
//! SQLite state, the audit trail, authorisation and (as capabilities land)
//! devices, budget, models, jobs and storage. gRPC and D-Bus adapters in
//! `kilnd` call these methods and hold no logic of their own. Nothing here
//! touches a socket or a bus.

pub mod auth;
pub mod budget;
pub mod config;
pub mod core;
pub mod devices;
pub mod engine;
pub mod error;
pub mod events;
mod front;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod state;
pub mod storage;
#[cfg(test)]
mod testing;
pub mod threads;
pub mod vectors;
pub mod wiring;

pub use auth::{Action, Authority, Caller, GroupAuthority};
pub use config::{Config, ConfigError, ConfigSources, LoadedConfig, Overrides};
pub use engine::{
    Component, ComponentState, DaemonState, Engine, LiveSettings, ReloadReport, StatusReport,
};
pub use error::{EngineError, ErrorKind};
/// pidfds, for transports that pin a peer process.
pub use kiln_hal::process;
pub use threads::ThreadPlacement;
pub use wiring::Ports;

/// The daemon's version, shown in status, D-Bus and ServerMetadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
