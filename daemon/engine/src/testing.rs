//! Engines on fake ports for the hubs' unit tests: the recorded Latitude 5450 tree as the
//! machine, a temporary state directory, model repository and directory storage, the
//! root-only authority.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_testkit::fakes::{FakeBackend, FakeIndex, FakeLauncher};

use crate::auth::GroupAuthority;
use crate::config::{self, ConfigSources, Overrides};
use crate::engine::{Engine, LiveSettings};
use crate::state::StateDb;
use crate::wiring::Ports;

pub(crate) struct NoLive;
impl LiveSettings for NoLive {
    fn set_log_level(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// An engine, the fakes behind it and the directory it keeps its files in.
pub(crate) struct TestEngine {
    pub engine: Engine,
    pub backend: Arc<FakeBackend>,
    /// Starts jobs once [`Engine::start_jobs`] is called.
    pub launcher: Arc<FakeLauncher>,
    /// The vector index [`Engine::start_vectors`] opens.
    pub index: Arc<FakeIndex>,
    /// Model repository (`[models] repository`).
    pub repo: PathBuf,
    /// Its kiln.toml.
    pub config: PathBuf,
    /// Holds every file above; dropped last.
    pub dir: tempfile::TempDir,
}

/// The recorded machine tree the HAL reads.
pub(crate) fn tree() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/latitude-5450")
}

/// An engine on `backend` whose kiln.toml is `extra` plus the repository, the tree and
/// directory storage under a temporary directory.
pub(crate) fn engine(backend: FakeBackend, extra: &str) -> TestEngine {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let main = dir.path().join("kiln.toml");
    std::fs::write(
        &main,
        format!(
            "{extra}\n[models]\nrepository = {:?}\n\n[hal]\nroot = {:?}\n\n[storage]\nbackend = \"dir\"\nroot = {:?}\n",
            repo,
            tree(),
            dir.path().join("storage")
        ),
    )
    .unwrap();
    let overrides = Overrides {
        state_dir: Some(dir.path().join("state")),
        ..Overrides::default()
    };
    let sources = ConfigSources::new(Some(main.clone()), overrides);
    let loaded = config::load(&sources).unwrap();
    let db = StateDb::open(&dir.path().join("state")).unwrap();
    let backend = Arc::new(backend);
    let launcher = Arc::new(FakeLauncher::default());
    let index = Arc::new(FakeIndex::default());
    let engine = Engine::with_ports(
        loaded,
        sources,
        db,
        Box::new(GroupAuthority::new("root")),
        Box::new(NoLive),
        Ports {
            inference: backend.clone(),
            jobs: Some(launcher.clone()),
            vectors: index.opener(),
        },
    )
    .unwrap();
    TestEngine {
        engine,
        backend,
        launcher,
        index,
        repo,
        config: main,
        dir,
    }
}
