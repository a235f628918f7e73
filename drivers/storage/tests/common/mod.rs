//! Test harness: temp dirs for the dir backend, and real zfs-fuse pools for the ZFS backend
//! (kiln-testkit: a daemon of each test's own, one at a time, under a deadline).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kiln_storage::{BackendKind, Storage, StorageConfig};
pub use kiln_testkit::bytes;
#[allow(unused_imports)]
pub use kiln_testkit::zfs::{TestPool, ZfsFuse};

/// A backend under test plus whatever keeps its storage alive.
pub struct Env {
    pub storage: Box<dyn Storage>,
    pub config: StorageConfig,
    pub pool: Option<TestPool>,
    pub dir: Option<tempfile::TempDir>,
}

impl Env {
    pub fn new(kind: BackendKind, tweak: impl FnOnce(&mut StorageConfig)) -> Env {
        let mut config = StorageConfig {
            backend: kind,
            ..StorageConfig::default()
        };
        let (pool, dir) = match kind {
            BackendKind::Dir => {
                let d = tempfile::tempdir().unwrap();
                config.root = d.path().to_path_buf();
                config.proc_root = d.path().to_path_buf();
                (None, Some(d))
            }
            BackendKind::Zfs => {
                let p = TestPool::new();
                config.pool = p.name.clone();
                config.proc_root = p.dir.path().to_path_buf();
                (Some(p), None)
            }
        };
        tweak(&mut config);
        let storage = kiln_storage::open(&config).unwrap();
        Env {
            storage,
            config,
            pool,
            dir,
        }
    }

    /// A scratch directory outside the storage (sources for imports).
    pub fn scratch(&self) -> PathBuf {
        let base = match (&self.pool, &self.dir) {
            (Some(p), _) => p.dir.path().join("scratch"),
            (_, Some(d)) => d.path().join("scratch"),
            _ => unreachable!(),
        };
        std::fs::create_dir_all(&base).unwrap();
        base
    }
}

pub fn write(p: &Path, data: &[u8]) {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(p, data).unwrap();
}
