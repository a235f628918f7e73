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

/// What [`engine_with`] writes into kiln.toml besides the caller's text.
pub(crate) struct Layout {
    /// `[models] repository` is a directory of its own (else the storage models dataset).
    pub repository: bool,
    /// `[storage]` is directory storage under the temporary directory (else the caller's).
    pub dir_storage: bool,
}

/// An engine on `backend` whose kiln.toml is `extra` plus the repository, the tree and
/// directory storage under a temporary directory.
pub(crate) fn engine(backend: FakeBackend, extra: &str) -> TestEngine {
    engine_with(
        backend,
        extra,
        Layout {
            repository: true,
            dir_storage: true,
        },
    )
}

/// [`engine`] with a choice of repository and storage.
pub(crate) fn engine_with(backend: FakeBackend, extra: &str, layout: Layout) -> TestEngine {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let main = dir.path().join("kiln.toml");
    let mut text = format!("{extra}\n[hal]\nroot = {:?}\n", tree());
    if layout.repository {
        text.push_str(&format!("\n[models]\nrepository = {repo:?}\n"));
    }
    if layout.dir_storage {
        text.push_str(&format!(
            "\n[storage]\nbackend = \"dir\"\nroot = {:?}\n",
            dir.path().join("storage")
        ));
    }
    std::fs::write(&main, text).unwrap();
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
        loaded.clone(),
        sources,
        db,
        Box::new(GroupAuthority::new("root")),
        Box::new(NoLive),
        Ports {
            // Directory storage under the temporary directory: the real driver, no ZFS.
            storage: Ports::from_config(&loaded.config).storage,
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
