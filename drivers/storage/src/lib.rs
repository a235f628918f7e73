//! kiln-storage: the datasets kiln keeps its data on (`models`, `embeddings`,
//! `checkpoints`, `logs`) behind one synchronous [`Storage`] trait with two backends:
//! [`ZfsBackend`] (datasets under `<pool>/kiln/`, driven through the `zfs`/`zpool`
//! commands by [`zfscmd`]) and [`DirBackend`] (plain directories under `<root>/kiln/`,
//! snapshots as versioned copies). The trait and its vocabulary are the storage port in
//! `kiln_hal::ports::storage`; [`policy`] (model import and rollback, pruning, checkpoints,
//! the scrub schedule) works over any implementation. Transport-free; no async.

pub mod dir;
pub mod fsutil;
pub mod health;
pub mod policy;
pub mod probe;
pub mod retention;
pub mod zfs;
pub mod zfscmd;

use std::fs;
use std::path::Path;

pub use dir::DirBackend;
pub use kiln_hal::ports::storage::*;
pub use policy::StoragePolicy;
pub use probe::PropPlan;
pub use zfs::ZfsBackend;
pub use zfscmd::{CmdMetrics, CmdStat, ZfsCmd};

pub(crate) fn parse_model_snapshot(snap: &str) -> Option<(&str, u32)> {
    let (n, v) = snap.rsplit_once("-v")?;
    Some((n, v.parse().ok()?))
}

/// Numeric version directories under `dir` (dot entries and others ignored).
pub(crate) fn version_dirs(dir: &Path) -> Result<Vec<u32>> {
    let mut v = Vec::new();
    match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(StorageError::io("read directory", dir, e)),
        Ok(rd) => {
            for e in rd {
                let e = e.map_err(|e| StorageError::io("read directory", dir, e))?;
                if let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                    && e.path().is_dir()
                {
                    v.push(n);
                }
            }
        }
    }
    v.sort_unstable();
    Ok(v)
}

pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Open the configured backend and bring its datasets into shape.
pub fn open(config: &StorageConfig) -> Result<Box<dyn Storage>> {
    config.validate()?;
    let s: Box<dyn Storage> = match config.backend {
        BackendKind::Dir => Box::new(DirBackend::new(config.clone())),
        BackendKind::Zfs => Box::new(ZfsBackend::new(config.clone())),
    };
    s.ensure()?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Dataset::parse("logs").unwrap(), Dataset::Logs);
        assert!(
            Dataset::parse("log")
                .unwrap_err()
                .to_string()
                .contains("one of models")
        );
        validate_snapshot_name("ckpt-2026.11:01").unwrap();
        for bad in ["", "-x", ".x", "a b", "a@b", "a/b"] {
            assert!(validate_snapshot_name(bad).is_err(), "{bad}");
        }
        validate_model_name("resnet-50_v1.2").unwrap();
        for bad in ["", "_x", "a/b", "a b", "../x"] {
            assert!(validate_model_name(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_model_snapshot("foo-v2-v13"), Some(("foo-v2", 13)));
        assert_eq!(parse_model_snapshot("ckpt-1"), None);
    }
}
