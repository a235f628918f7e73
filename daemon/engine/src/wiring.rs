//! Wiring: the one place that names drivers. It builds each port's implementation from the
//! configuration and hands the engine trait objects; hubs see only the ports of
//! `kiln_hal::ports`. Tests build an engine from fakes with [`crate::Engine::with_ports`].

use std::path::PathBuf;
use std::sync::Arc;

use kiln_hal::ports::storage::Storage;
use kiln_hal::ports::{InferenceBackend, JobLauncher, OpenIndex};
use kiln_jobs::{ForkLauncher, ShimCommand, SystemdLauncher};
use kiln_openvino::{LibrarySearch, OpenVinoBackend};

use crate::Config;
use crate::jobs::Launchers;

/// The implementations behind the engine's ports.
#[derive(Clone)]
pub struct Ports {
    /// The datasets; `Err` holds why storage is unavailable (kilnd still runs).
    pub storage: Result<Arc<dyn Storage>, String>,
    pub inference: Arc<dyn InferenceBackend>,
    /// `None`: [`crate::Engine::start_jobs`] picks fork or systemd by `[jobs] launcher`
    /// (see [`job_launchers`]) once the job shim is known.
    pub jobs: Option<Arc<dyn JobLauncher>>,
    /// Opens the vector collections on the embeddings dataset.
    pub vectors: Arc<OpenIndex>,
}

impl Ports {
    /// The drivers this configuration asks for: storage is opened (its datasets made or
    /// checked), nothing else is loaded yet.
    pub fn from_config(cfg: &Config) -> Ports {
        let storage = kiln_storage::open(&cfg.storage)
            .map(Arc::from)
            .map_err(|e| {
                format!(
                    "storage ({:?} backend) unavailable: {e}",
                    cfg.storage.backend
                )
            });
        Ports {
            storage,
            inference: Arc::new(OpenVinoBackend::new(library_search(cfg))),
            jobs: None,
            vectors: Arc::new(kiln_vectors::open_index),
        }
    }
}

/// Where OpenVINO is searched for this configuration.
fn library_search(cfg: &Config) -> LibrarySearch {
    let mut prefixes = cfg.openvino.python_prefixes.clone();
    prefixes.extend(
        kiln_openvino::DEFAULT_PYTHON_PREFIXES
            .iter()
            .map(PathBuf::from),
    );
    LibrarySearch::new(cfg.openvino.library.clone(), prefixes)
}

/// `[jobs] launcher`: `fork`; `systemd` (fork, degraded, when systemd or the system bus is
/// missing); `auto` (systemd when it answers, else fork). A systemd launcher falls back to
/// fork when systemd refuses kilnd its units.
pub(crate) async fn job_launchers(want: &str, shim: ShimCommand) -> Launchers {
    let fork: Arc<dyn JobLauncher> = Arc::new(ForkLauncher::new(shim.clone()));
    let plain = |degraded| Launchers {
        active: fork.clone(),
        fallback: None,
        degraded,
    };
    if want == "fork" {
        return plain(None);
    }
    let conn = if kiln_jobs::systemd::booted() {
        zbus::Connection::system().await.ok()
    } else {
        None
    };
    match conn {
        Some(conn) => Launchers {
            active: Arc::new(SystemdLauncher::new(
                shim,
                conn,
                tokio::runtime::Handle::current(),
            )),
            fallback: Some(fork.clone()),
            degraded: None,
        },
        None if want == "systemd" => plain(Some(
            "jobs.launcher = \"systemd\" but systemd is not running or the system bus does not answer; using fork"
                .into(),
        )),
        None => plain(None),
    }
}
