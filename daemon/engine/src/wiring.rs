//! Wiring: the one place that names drivers. It builds each port's implementation from the
//! configuration and hands the engine trait objects; hubs see only the ports of
//! `kiln_hal::ports`. Tests build an engine from fakes with [`crate::Engine::with_ports`].

use std::path::PathBuf;
use std::sync::Arc;

use kiln_hal::ports::InferenceBackend;
use kiln_openvino::{LibrarySearch, OpenVinoBackend};

use crate::Config;

/// The implementations behind the engine's ports.
#[derive(Clone)]
pub struct Ports {
    pub inference: Arc<dyn InferenceBackend>,
}

impl Ports {
    /// The drivers this configuration asks for (nothing is loaded yet).
    pub fn from_config(cfg: &Config) -> Ports {
        Ports {
            inference: Arc::new(OpenVinoBackend::new(library_search(cfg))),
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
