//! kiln-storage: the datasets kiln keeps its data on (`models`, `embeddings`,
//! `checkpoints`, `logs`) behind one synchronous [`Storage`] trait with two backends:
//! [`ZfsBackend`] (datasets under `<pool>/kiln/`, driven through the `zfs`/`zpool`
//! commands by [`zfscmd`]) and [`DirBackend`] (plain directories under `<root>/kiln/`,
//! snapshots as versioned copies). Shared logic (model import and rollback, pruning, the
//! scrub schedule) lives here as provided trait methods. Transport-free; no async.

pub mod config;
pub mod dir;
pub mod error;
pub mod fsutil;
pub mod health;
pub mod probe;
pub mod retention;
pub mod zfs;
pub mod zfscmd;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

use serde::Serialize;

pub use config::{BackendKind, Profile, Profiles, RetentionConfig, ScrubConfig, StorageConfig};
pub use dir::DirBackend;
pub use error::{ErrorCode, Result, StorageError};
pub use health::{ArcStats, PoolHealth, ScrubStatus};
pub use probe::{Features, PropPlan};
pub use zfs::ZfsBackend;
pub use zfscmd::{CmdMetrics, CmdStat, ZfsCmd};

/// The four datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    Models,
    Embeddings,
    Checkpoints,
    Logs,
}

impl Dataset {
    pub const ALL: [Dataset; 4] = [
        Dataset::Models,
        Dataset::Embeddings,
        Dataset::Checkpoints,
        Dataset::Logs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Models => "models",
            Dataset::Embeddings => "embeddings",
            Dataset::Checkpoints => "checkpoints",
            Dataset::Logs => "logs",
        }
    }

    /// Parse `models|embeddings|checkpoints|logs`.
    pub fn parse(s: &str) -> Result<Dataset> {
        Dataset::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or(StorageError::InvalidName {
                what: "dataset",
                value: s.to_string(),
                expected: "one of models, embeddings, checkpoints, logs",
            })
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A snapshot of one dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    pub dataset: Dataset,
    /// The part after `@`.
    pub name: String,
    /// Unix seconds (kiln's own timestamp when kiln made it, else the ZFS creation time).
    pub created: i64,
    /// Creation order within the dataset, for snapshots of the same second: ZFS
    /// `createtxg`; the dir backend's counter (0 for snapshots it did not make).
    pub order: u64,
    /// Marked keep: never pruned.
    pub keep: bool,
    /// Held (ZFS user hold or dir-backend hold marker): never pruned or destroyed.
    pub held: bool,
    /// Hold tags where the backend can list them.
    pub holds: Vec<String>,
    /// Created by kiln; anything else is never destroyed.
    pub managed: bool,
    /// Space only this snapshot holds (ZFS `used`); None for the dir backend.
    pub used_bytes: Option<u64>,
}

impl SnapshotInfo {
    /// Sorts snapshots oldest first: dataset, second, creation order, name.
    pub fn creation_key(&self) -> (Dataset, i64, u64, &str) {
        (self.dataset, self.created, self.order, &self.name)
    }
}

/// One property of one dataset: requested by the profile, in effect now, and why they differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PropertyStatus {
    pub property: String,
    pub requested: String,
    pub effective: String,
    pub reason: Option<String>,
}

/// One dataset in `status()`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetStatus {
    pub dataset: Dataset,
    /// ZFS dataset name, or the directory for the dir backend.
    pub name: String,
    pub mountpoint: PathBuf,
    pub present: bool,
    pub created_by_kiln: bool,
    pub properties: Vec<PropertyStatus>,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub snapshots: usize,
}

/// What `ensure()` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnsureReport {
    /// Datasets or directories created.
    pub created: Vec<String>,
    /// Drifted properties corrected, e.g. `tank/kiln/logs: compression was off, set to gzip-9`.
    pub corrections: Vec<String>,
    /// Profile values this ZFS lacks and what was used instead, with the reason.
    pub fallbacks: Vec<String>,
}

/// Full storage status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageStatus {
    pub backend: BackendKind,
    /// One line saying which backend this is and what it can and cannot do.
    pub description: String,
    /// Pool name (zfs) or base directory (dir).
    pub location: String,
    pub datasets: Vec<DatasetStatus>,
    pub pool: Option<PoolHealth>,
    pub arc: Option<ArcStats>,
    pub features: Option<Features>,
    pub last_ensure: EnsureReport,
    pub scrub_interval_days: u32,
}

/// Result of `prune()`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub dataset: Option<Dataset>,
    /// Kept by the grid, with the rules that keep each.
    pub kept: Vec<KeptSnapshot>,
    /// Outside the rotation: keep-marked, held, or not created by kiln.
    pub protected: Vec<SkippedSnapshot>,
    pub removed: Vec<String>,
    /// Could not be removed (e.g. became busy); left in place.
    pub failed: Vec<SkippedSnapshot>,
}

/// A snapshot the retention grid keeps, with the rules that keep it (`last 3`, `daily 1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptSnapshot {
    pub name: String,
    pub reasons: Vec<String>,
}

/// A snapshot prune left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedSnapshot {
    pub name: String,
    pub reason: String,
}

/// Result of `rollback()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackReport {
    pub dataset: Dataset,
    pub snapshot: String,
    /// Newer snapshots destroyed (only with `destroy_newer`).
    pub destroyed: Vec<String>,
}

/// Result of `import_model()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelImport {
    pub name: String,
    pub version: u32,
    pub snapshot: String,
    pub path: PathBuf,
    pub files: u64,
    pub bytes: u64,
}

/// Result of `rollback_model()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelRollback {
    pub name: String,
    pub version: u32,
    pub snapshot: String,
    /// Versions present after the rollback (those that existed at that snapshot).
    pub versions: Vec<u32>,
    /// Later versions removed from the live tree (still in their own snapshots).
    pub removed_versions: Vec<u32>,
    pub bytes: u64,
}

/// Current time in unix seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Snapshot names: letters, digits, `_ - . :`, 1..=200 chars, not starting with `.`/`-`.
pub fn validate_snapshot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidName {
            what: "snapshot name",
            value: name.to_string(),
            expected: "1-200 of letters, digits, `_ - . :`, not starting with `.` or `-`",
        })
    }
}

/// Model names: letters, digits, `_ - .`, 1..=100 chars, starting with a letter or digit.
pub fn validate_model_name(name: &str) -> Result<()> {
    let ok = name.len() <= 100
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidName {
            what: "model name",
            value: name.to_string(),
            expected: "1-100 of letters, digits, `_ - .`, starting with a letter or digit",
        })
    }
}

/// The snapshot that records version `version` of model `name`.
pub fn model_snapshot_name(name: &str, version: u32) -> String {
    format!("{name}-v{version}")
}

fn parse_model_snapshot(snap: &str) -> Option<(&str, u32)> {
    let (n, v) = snap.rsplit_once("-v")?;
    Some((n, v.parse().ok()?))
}

/// Numeric version directories under `dir` (dot entries and others ignored).
fn version_dirs(dir: &Path) -> Result<Vec<u32>> {
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

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The storage API both backends implement with the same behaviour.
pub trait Storage: Send + Sync {
    fn kind(&self) -> BackendKind;
    fn config(&self) -> &StorageConfig;
    /// Create missing datasets, correct drifted properties; never destroys anything.
    fn ensure(&self) -> Result<EnsureReport>;
    fn status(&self) -> Result<StorageStatus>;
    /// Where a dataset's files live.
    fn dataset_path(&self, ds: Dataset) -> PathBuf;
    /// Snapshot `ds` as `name`, stamped `created` (unix seconds).
    fn snapshot_at(
        &self,
        ds: Dataset,
        name: &str,
        keep: bool,
        created: i64,
    ) -> Result<SnapshotInfo>;
    /// Snapshots of one dataset or all, oldest first.
    fn list_snapshots(&self, ds: Option<Dataset>) -> Result<Vec<SnapshotInfo>>;
    /// Return `ds` to `name`. Newer snapshots block this unless `destroy_newer` (and then
    /// none of them may be keep-marked, held or foreign).
    fn rollback(&self, ds: Dataset, name: &str, destroy_newer: bool) -> Result<RollbackReport>;
    /// Destroy one kiln-made snapshot that is neither keep-marked nor held.
    fn destroy_snapshot(&self, ds: Dataset, name: &str) -> Result<()>;
    /// Hold a snapshot for a running job (`tag` names the job).
    fn hold(&self, ds: Dataset, name: &str, tag: &str) -> Result<()>;
    fn release(&self, ds: Dataset, name: &str, tag: &str) -> Result<()>;
    /// Call `f` with a read-only directory holding the snapshot's files.
    fn with_snapshot_view(
        &self,
        ds: Dataset,
        name: &str,
        f: &mut dyn FnMut(&Path) -> Result<()>,
    ) -> Result<()>;
    /// Start a pool scrub.
    fn scrub(&self) -> Result<()>;
    /// Statistics of `zfs`/`zpool` calls (empty for the dir backend).
    fn command_metrics(&self) -> Vec<CmdStat>;
    /// Serialises model imports/rollbacks and pruning.
    fn op_lock(&self) -> MutexGuard<'_, ()>;

    /// Snapshot stamped with the current time.
    fn snapshot(&self, ds: Dataset, name: &str, keep: bool) -> Result<SnapshotInfo> {
        self.snapshot_at(ds, name, keep, now_unix())
    }

    /// Apply the retention grid to `ds` at time `now`; keep-marked, held and foreign
    /// snapshots are never removed.
    fn prune(&self, ds: Dataset, now: i64) -> Result<PruneReport> {
        let _g = self.op_lock();
        let snaps = self.list_snapshots(Some(ds))?;
        let mut report = PruneReport {
            dataset: Some(ds),
            ..PruneReport::default()
        };
        let mut rotation = Vec::new();
        for s in &snaps {
            let why = if !s.managed {
                Some("not created by kiln")
            } else if s.keep {
                Some("marked keep")
            } else if s.held {
                Some("held by a running job")
            } else {
                None
            };
            match why {
                Some(w) => report.protected.push(SkippedSnapshot {
                    name: s.name.clone(),
                    reason: w.to_string(),
                }),
                None => rotation.push((s.name.clone(), s.created)),
            }
        }
        for d in retention::plan(&rotation, &self.config().retention, now) {
            if !d.reasons.is_empty() {
                report.kept.push(KeptSnapshot {
                    name: d.name,
                    reasons: d.reasons,
                });
                continue;
            }
            match self.destroy_snapshot(ds, &d.name) {
                Ok(()) => report.removed.push(d.name),
                Err(e) => report.failed.push(SkippedSnapshot {
                    name: d.name,
                    reason: e.to_string(),
                }),
            }
        }
        tracing::info!(dataset = %ds, removed = report.removed.len(), kept = report.kept.len(),
            protected = report.protected.len(), "pruned snapshots");
        Ok(report)
    }

    /// Versions of model `name` in the live tree.
    fn model_versions(&self, name: &str) -> Result<Vec<u32>> {
        validate_model_name(name)?;
        version_dirs(&self.dataset_path(Dataset::Models).join(name))
    }

    /// Copy `src` (file or directory) into `models/<name>/<next version>/`, then snapshot
    /// the models dataset as `@<name>-v<version>` (marked keep). On failure nothing is left
    /// behind and existing versions are untouched.
    fn import_model(
        &self,
        src: &Path,
        name: &str,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ModelImport> {
        validate_model_name(name)?;
        let md = fs::metadata(src).map_err(|e| StorageError::io("read import source", src, e))?;
        // A symlinked source imports what it points to, under the link's own name.
        let file_name = src
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "model".into());
        let src = &fs::canonicalize(src)
            .map_err(|e| StorageError::io("resolve import source", src, e))?;
        let _g = self.op_lock();
        let model_dir = self.dataset_path(Dataset::Models).join(name);
        // Copying a tree into itself never ends.
        let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if md.is_dir() && canon(&self.dataset_path(Dataset::Models)).starts_with(canon(src)) {
            return Err(StorageError::InvalidName {
                what: "import source",
                value: src.display().to_string(),
                expected: "a file or directory outside the models dataset",
            });
        }
        let from_snaps = self
            .list_snapshots(Some(Dataset::Models))?
            .into_iter()
            .filter_map(|s| {
                parse_model_snapshot(&s.name)
                    .filter(|(n, _)| *n == name)
                    .map(|(_, v)| v)
            })
            .max()
            .unwrap_or(0);
        let from_dirs = version_dirs(&model_dir)?.into_iter().max().unwrap_or(0);
        let version = from_snaps.max(from_dirs) + 1;
        let created_model_dir = !model_dir.exists();
        if created_model_dir {
            fs::create_dir_all(&model_dir)
                .map_err(|e| StorageError::io("create directory", &model_dir, e))?;
        }
        let staging = model_dir.join(format!(".importing-{}", unique_suffix()));
        let copied = if md.is_dir() {
            fsutil::copy_tree(src, &staging, fsutil::CopyMode::Independent, progress)
        } else {
            fs::create_dir(&staging)
                .map_err(|e| StorageError::io("create directory", &staging, e))
                .and_then(|_| {
                    fsutil::copy_tree(
                        src,
                        &staging.join(&file_name),
                        fsutil::CopyMode::Independent,
                        progress,
                    )
                })
        };
        let final_dir = model_dir.join(version.to_string());
        let result = copied.and_then(|stats| {
            fs::rename(&staging, &final_dir)
                .map_err(|e| StorageError::io("rename", &final_dir, e))?;
            Ok(stats)
        });
        let stats = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = fsutil::remove_tree(&staging);
                if created_model_dir {
                    let _ = fs::remove_dir(&model_dir);
                }
                tracing::warn!(model = name, error = %e, "model import failed; nothing kept");
                return Err(e);
            }
        };
        let snap = model_snapshot_name(name, version);
        if let Err(e) = self.snapshot(Dataset::Models, &snap, true) {
            let _ = fsutil::remove_tree(&final_dir);
            if created_model_dir {
                let _ = fs::remove_dir(&model_dir);
            }
            return Err(e);
        }
        tracing::info!(model = name, version, bytes = stats.bytes, snapshot = %snap, "imported model");
        Ok(ModelImport {
            name: name.to_string(),
            version,
            snapshot: snap,
            path: final_dir,
            files: stats.files,
            bytes: stats.bytes,
        })
    }

    /// Restore `models/<name>/` exactly as it was when version `version` was imported:
    /// its bytes come back from snapshot `@<name>-v<version>`, later versions leave the
    /// live tree (their snapshots remain, so rolling forward works the same way). Other
    /// models are not touched.
    fn rollback_model(&self, name: &str, version: u32) -> Result<ModelRollback> {
        validate_model_name(name)?;
        let _g = self.op_lock();
        let snap = model_snapshot_name(name, version);
        let snaps = self.list_snapshots(Some(Dataset::Models))?;
        if !snaps.iter().any(|s| s.name == snap) {
            let mut known: Vec<u32> = snaps
                .iter()
                .filter_map(|s| {
                    parse_model_snapshot(&s.name)
                        .filter(|(n, _)| *n == name)
                        .map(|(_, v)| v)
                })
                .collect();
            known.sort_unstable();
            return Err(StorageError::ModelVersionNotFound {
                name: name.to_string(),
                version,
                known,
            });
        }
        let models = self.dataset_path(Dataset::Models);
        let live = models.join(name);
        let before = version_dirs(&live)?;
        let staging = models.join(format!(".kiln-restore-{}", unique_suffix()));
        let mut bytes = 0;
        self.with_snapshot_view(Dataset::Models, &snap, &mut |view| {
            let src = view.join(name);
            bytes = fsutil::copy_tree(
                &src,
                &staging,
                fsutil::CopyMode::Independent,
                &mut |_, _| {},
            )?
            .bytes;
            // Dir-backend snapshots are stored read-only; the live tree must be writable.
            if self.kind() == BackendKind::Dir {
                fsutil::make_writable(&staging)?;
            }
            Ok(())
        })
        .inspect_err(|_| {
            let _ = fsutil::remove_tree(&staging);
        })?;
        let old = models.join(format!(".kiln-old-{}", unique_suffix()));
        if live.exists() {
            fs::rename(&live, &old).map_err(|e| {
                let _ = fsutil::remove_tree(&staging);
                StorageError::io("rename", &live, e)
            })?;
        }
        if let Err(e) = fs::rename(&staging, &live) {
            // Put the previous tree back; nothing is lost.
            let _ = fs::rename(&old, &live);
            let _ = fsutil::remove_tree(&staging);
            return Err(StorageError::io("rename", &live, e));
        }
        fsutil::remove_tree(&old)?;
        let versions = version_dirs(&live)?;
        let removed_versions = before
            .into_iter()
            .filter(|v| !versions.contains(v))
            .collect();
        tracing::info!(model = name, version, snapshot = %snap, "rolled model back");
        Ok(ModelRollback {
            name: name.to_string(),
            version,
            snapshot: snap,
            versions,
            removed_versions,
            bytes,
        })
    }

    /// Record a job checkpoint: snapshot the checkpoints dataset as `<job>-<label>`.
    /// The job writes into `dataset_path(Checkpoints)/<job>/` first.
    fn checkpoint(&self, job: &str, label: &str) -> Result<SnapshotInfo> {
        validate_model_name(job)?;
        let name = format!("{job}-{label}");
        validate_snapshot_name(&name)?;
        self.snapshot(Dataset::Checkpoints, &name, false)
    }

    /// Start a scrub when the schedule says one is due; returns whether it started.
    fn scrub_if_due(&self, now: i64) -> Result<bool> {
        let days = self.config().scrub.interval_days;
        if days == 0 || self.kind() != BackendKind::Zfs {
            return Ok(false);
        }
        let st = self.status()?;
        let Some(pool) = st.pool else {
            return Ok(false);
        };
        let due = match (pool.scrub.state.as_str(), pool.scrub.finished_at) {
            ("in_progress", _) | ("resilver", _) => false,
            (_, Some(t)) => now - t >= i64::from(days) * 86_400,
            (_, None) => true,
        };
        if due {
            self.scrub()?;
            tracing::info!(pool = %pool.name, "started scheduled scrub");
        }
        Ok(due)
    }
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
