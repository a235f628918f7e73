//! The dir backend: the four datasets as plain directories under `<root>/kiln/`, snapshots
//! as read-only versioned copies under `<root>/kiln/.snapshots/<dataset>/<name>/` (hardlinked
//! against the previous snapshot when unchanged, reflinked where the filesystem can), with
//! keep/hold markers in `<name>.json`. Touches only `<root>/kiln/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, CopyMode};
use crate::{BackendKind, StorageConfig};
use crate::{
    CmdStat, Dataset, DatasetStatus, EnsureReport, PropertyStatus, RollbackReport, SnapshotInfo,
    Storage, StorageStatus, unique_suffix, validate_snapshot_name,
};
use crate::{Result, StorageError};

/// Marker written into `<root>/kiln/` when kiln creates it.
const MARKER: &str = ".kiln-dir-backend";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    created: i64,
    keep: bool,
    #[serde(default)]
    holds: Vec<String>,
    /// 1 + the highest of the dataset's snapshots when this one was made.
    #[serde(default)]
    seq: u64,
}

/// Plain-directory storage.
pub struct DirBackend {
    config: StorageConfig,
    base: PathBuf,
    last: Mutex<EnsureReport>,
    lock: Mutex<()>,
}

impl DirBackend {
    pub fn new(config: StorageConfig) -> Self {
        let base = config.root.join("kiln");
        DirBackend {
            config,
            base,
            last: Mutex::new(EnsureReport::default()),
            lock: Mutex::new(()),
        }
    }

    fn snap_root(&self, ds: Dataset) -> PathBuf {
        self.base.join(".snapshots").join(ds.name())
    }

    fn snap_dir(&self, ds: Dataset, name: &str) -> PathBuf {
        self.snap_root(ds).join(name)
    }

    fn meta_path(&self, ds: Dataset, name: &str) -> PathBuf {
        self.snap_root(ds).join(format!("{name}.json"))
    }

    fn read_meta(&self, ds: Dataset, name: &str) -> Result<Option<Meta>> {
        let p = self.meta_path(ds, name);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StorageError::Parse {
                    command: p.display().to_string(),
                    detail: format!("{e}; the snapshot marker is damaged, fix or remove it"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("read", p, e)),
        }
    }

    fn write_meta(&self, ds: Dataset, name: &str, m: &Meta) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(m).unwrap_or_default();
        fsutil::write_atomic(&self.meta_path(ds, name), &bytes)
    }

    fn info(&self, ds: Dataset, name: &str) -> Result<SnapshotInfo> {
        if !self.snap_dir(ds, name).is_dir() {
            return Err(StorageError::SnapshotNotFound {
                dataset: ds.to_string(),
                name: name.to_string(),
            });
        }
        let meta = self.read_meta(ds, name)?;
        let created = match &meta {
            Some(m) => m.created,
            None => fs::metadata(self.snap_dir(ds, name))
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        };
        Ok(SnapshotInfo {
            dataset: ds,
            name: name.to_string(),
            created,
            order: meta.as_ref().map(|m| m.seq).unwrap_or(0),
            keep: meta.as_ref().is_some_and(|m| m.keep),
            held: meta.as_ref().is_some_and(|m| !m.holds.is_empty()),
            holds: meta.as_ref().map(|m| m.holds.clone()).unwrap_or_default(),
            managed: meta.is_some(),
            used_bytes: None,
        })
    }

    fn protection(s: &SnapshotInfo) -> Option<&'static str> {
        if !s.managed {
            Some("not created by kiln")
        } else if s.keep {
            Some("marked keep")
        } else if s.held {
            Some("held by a running job")
        } else {
            None
        }
    }

    /// Replace directory `live` by a fresh copy of `src` in one exchange (a crash leaves
    /// the old tree or the new one in place).
    fn replace_tree(&self, src: &Path, live: &Path) -> Result<()> {
        let staging = self.base.join(format!(".rollback-{}", unique_suffix()));
        // Snapshot copies are read-only; the restored live tree must be writable again.
        let copied = fsutil::copy_tree(src, &staging, CopyMode::Independent, &mut |_, _| {})
            .and_then(|_| fsutil::make_writable(&staging));
        if let Err(e) = copied {
            let _ = fsutil::remove_tree(&staging);
            return Err(e);
        }
        fsutil::swap_in(&staging, live).inspect_err(|_| {
            let _ = fsutil::remove_tree(&staging);
        })
    }
}

fn dir_entries(p: &Path) -> Result<Vec<String>> {
    match fs::read_dir(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StorageError::io("read directory", p, e)),
        Ok(rd) => {
            let mut v = Vec::new();
            for e in rd {
                let e = e.map_err(|e| StorageError::io("read directory", p, e))?;
                if let Some(n) = e.file_name().to_str() {
                    v.push(n.to_string());
                }
            }
            Ok(v)
        }
    }
}

impl Storage for DirBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Dir
    }

    fn config(&self) -> &StorageConfig {
        &self.config
    }

    fn ensure(&self) -> Result<EnsureReport> {
        let mut report = EnsureReport::default();
        if !self.base.exists() {
            fs::create_dir_all(&self.base)
                .map_err(|e| StorageError::io("create directory", &self.base, e))?;
            fsutil::write_atomic(&self.base.join(MARKER), b"created by kilnd\n")?;
            report.created.push(self.base.display().to_string());
        }
        for ds in Dataset::ALL {
            for p in [self.dataset_path(ds), self.snap_root(ds)] {
                if !p.is_dir() {
                    fs::create_dir_all(&p)
                        .map_err(|e| StorageError::io("create directory", &p, e))?;
                    if !p.starts_with(self.base.join(".snapshots")) {
                        report.created.push(p.display().to_string());
                    }
                }
            }
        }
        for what in fsutil::recover_swaps(&self.base)? {
            report
                .corrections
                .push(format!("{what}: a rollback was interrupted"));
        }
        for p in fsutil::remove_leftovers(&self.base, &[".rollback-"])? {
            report.corrections.push(format!(
                "removed {} left by an interrupted rollback",
                p.display()
            ));
        }
        for ds in Dataset::ALL {
            for p in fsutil::remove_leftovers(&self.snap_root(ds), &[".tmp-"])? {
                report.corrections.push(format!(
                    "removed {} left by an interrupted snapshot",
                    p.display()
                ));
            }
        }
        report.fallbacks.push(
            "dir backend: compression, recordsize, atime and quota are ZFS properties and are \
             not applied to plain directories; set [storage] backend = \"zfs\" to get them"
                .into(),
        );
        tracing::info!(root = %self.base.display(), created = report.created.len(), "dir storage ready");
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = report.clone();
        Ok(report)
    }

    fn status(&self) -> Result<StorageStatus> {
        let mut datasets = Vec::new();
        for ds in Dataset::ALL {
            let path = self.dataset_path(ds);
            let present = path.is_dir();
            let used = if present {
                fsutil::tree_size(&path)?.0
            } else {
                0
            };
            let snaps = self.list_snapshots(Some(ds))?.len();
            let prof = self.config.profiles.resolve(ds);
            let properties = [
                ("compression", prof.compression),
                ("recordsize", prof.recordsize),
                ("atime", prof.atime),
                ("quota", prof.quota),
            ]
            .into_iter()
            .map(|(k, v)| PropertyStatus {
                property: k.into(),
                requested: v,
                effective: "not applied".into(),
                reason: Some("dir backend: plain directories have no ZFS properties".into()),
            })
            .collect();
            datasets.push(DatasetStatus {
                dataset: ds,
                name: path.display().to_string(),
                mountpoint: path.clone(),
                present,
                created_by_kiln: self.base.join(MARKER).exists(),
                properties,
                used_bytes: used,
                available_bytes: fsutil::available_bytes(&self.base).unwrap_or(0),
                snapshots: snaps,
            });
        }
        Ok(StorageStatus {
            backend: BackendKind::Dir,
            description: format!(
                "dir backend: plain directories under {}; snapshots are versioned copies \
                 (hardlinked or reflinked where possible); no compression, quotas, pool health or scrubs",
                self.base.display()
            ),
            location: self.base.display().to_string(),
            datasets,
            pool: None,
            arc: None,
            features: None,
            last_ensure: self.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            scrub_interval_days: self.config.scrub.interval_days,
        })
    }

    fn dataset_path(&self, ds: Dataset) -> PathBuf {
        self.base.join(ds.name())
    }

    fn snapshot_at(
        &self,
        ds: Dataset,
        name: &str,
        keep: bool,
        created: i64,
    ) -> Result<SnapshotInfo> {
        validate_snapshot_name(name)?;
        let live = self.dataset_path(ds);
        if !live.is_dir() {
            return Err(StorageError::DatasetMissing {
                target: live.display().to_string(),
                command: "snapshot".into(),
                stderr: "directory missing; restart kilnd to recreate the layout".into(),
            });
        }
        let dst = self.snap_dir(ds, name);
        let exists = || StorageError::SnapshotExists {
            dataset: ds.to_string(),
            name: name.to_string(),
        };
        if dst.exists() || self.meta_path(ds, name).exists() {
            return Err(exists());
        }
        // Link unchanged files against the newest existing snapshot.
        let existing = self.list_snapshots(Some(ds))?;
        let seq = existing.iter().map(|s| s.order).max().unwrap_or(0) + 1;
        let prev = existing
            .iter()
            .filter(|s| s.managed)
            .max_by_key(|s| s.creation_key())
            .map(|s| self.snap_dir(ds, &s.name));
        let tmp = self.snap_root(ds).join(format!(".tmp-{}", unique_suffix()));
        let res = fsutil::copy_tree(
            &live,
            &tmp,
            CopyMode::Snapshot {
                link_dest: prev.as_deref(),
            },
            &mut |_, _| {},
        )
        .and_then(|_| fsutil::make_read_only(&tmp));
        if let Err(e) = res {
            let _ = fsutil::remove_tree(&tmp);
            return Err(e);
        }
        // The data first, then the metadata that makes it kiln's: a crash in between leaves
        // a snapshot kiln treats as foreign (kept, never destroyed), not metadata of nothing.
        if let Err(e) = fs::rename(&tmp, &dst) {
            let _ = fsutil::remove_tree(&tmp);
            return Err(if dst.exists() {
                exists()
            } else {
                StorageError::io("rename", &dst, e)
            });
        }
        fsutil::sync_dir(&self.snap_root(ds))?;
        let meta = Meta {
            created,
            keep,
            holds: Vec::new(),
            seq,
        };
        if let Err(e) = self.write_meta(ds, name, &meta) {
            let _ = fsutil::make_writable(&dst);
            let _ = fsutil::remove_tree(&dst);
            return Err(e);
        }
        tracing::info!(dataset = %ds, snapshot = name, keep, "snapshot (dir copy)");
        self.info(ds, name)
    }

    fn list_snapshots(&self, ds: Option<Dataset>) -> Result<Vec<SnapshotInfo>> {
        let mut out = Vec::new();
        for d in Dataset::ALL
            .into_iter()
            .filter(|d| ds.is_none_or(|x| x == *d))
        {
            for n in dir_entries(&self.snap_root(d))? {
                if n.starts_with('.') || !self.snap_dir(d, &n).is_dir() {
                    continue;
                }
                out.push(self.info(d, &n)?);
            }
        }
        out.sort_by(|a, b| a.creation_key().cmp(&b.creation_key()));
        Ok(out)
    }

    fn rollback(&self, ds: Dataset, name: &str, destroy_newer: bool) -> Result<RollbackReport> {
        validate_snapshot_name(name)?;
        let target = self.info(ds, name)?;
        let newer: Vec<SnapshotInfo> = self
            .list_snapshots(Some(ds))?
            .into_iter()
            .filter(|s| s.creation_key() > target.creation_key())
            .collect();
        if !newer.is_empty() {
            if !destroy_newer {
                return Err(StorageError::NewerSnapshots {
                    dataset: ds.to_string(),
                    name: name.to_string(),
                    newer: newer.iter().map(|s| s.name.clone()).collect(),
                });
            }
            if let Some(s) = newer.iter().find(|s| Self::protection(s).is_some()) {
                return Err(StorageError::SnapshotProtected {
                    dataset: ds.to_string(),
                    name: s.name.clone(),
                    reason: Self::protection(s).unwrap_or_default().into(),
                });
            }
        }
        self.replace_tree(&self.snap_dir(ds, name), &self.dataset_path(ds))?;
        let mut destroyed = Vec::new();
        for s in newer {
            self.destroy_snapshot(ds, &s.name)?;
            destroyed.push(s.name);
        }
        tracing::info!(dataset = %ds, snapshot = name, "rolled back (dir copy)");
        Ok(RollbackReport {
            dataset: ds,
            snapshot: name.to_string(),
            destroyed,
        })
    }

    fn destroy_snapshot(&self, ds: Dataset, name: &str) -> Result<()> {
        validate_snapshot_name(name)?;
        let s = self.info(ds, name)?;
        if let Some(reason) = Self::protection(&s) {
            return Err(StorageError::SnapshotProtected {
                dataset: ds.to_string(),
                name: name.to_string(),
                reason: reason.into(),
            });
        }
        fsutil::remove_tree(&self.snap_dir(ds, name))?;
        let m = self.meta_path(ds, name);
        fs::remove_file(&m).map_err(|e| StorageError::io("remove", m, e))
    }

    fn hold(&self, ds: Dataset, name: &str, tag: &str) -> Result<()> {
        validate_snapshot_name(name)?;
        validate_snapshot_name(tag)?;
        let _ = self.info(ds, name)?;
        let mut m = self
            .read_meta(ds, name)?
            .ok_or_else(|| StorageError::SnapshotProtected {
                dataset: ds.to_string(),
                name: name.to_string(),
                reason: "not created by kiln, so kiln does not manage its holds".into(),
            })?;
        if !m.holds.iter().any(|h| h == tag) {
            m.holds.push(tag.to_string());
        }
        self.write_meta(ds, name, &m)
    }

    fn release(&self, ds: Dataset, name: &str, tag: &str) -> Result<()> {
        validate_snapshot_name(name)?;
        let _ = self.info(ds, name)?;
        let not_found = || StorageError::HoldNotFound {
            dataset: ds.to_string(),
            name: name.to_string(),
            tag: tag.to_string(),
        };
        let mut m = self.read_meta(ds, name)?.ok_or_else(not_found)?;
        let before = m.holds.len();
        m.holds.retain(|h| h != tag);
        if m.holds.len() == before {
            return Err(not_found());
        }
        self.write_meta(ds, name, &m)
    }

    fn with_snapshot_view(
        &self,
        ds: Dataset,
        name: &str,
        f: &mut dyn FnMut(&Path) -> Result<()>,
    ) -> Result<()> {
        validate_snapshot_name(name)?;
        let _ = self.info(ds, name)?;
        f(&self.snap_dir(ds, name))
    }

    fn scrub(&self) -> Result<()> {
        Err(StorageError::Unsupported {
            what: "scrub",
            backend: "dir",
            fix: "scrubs need ZFS; set [storage] backend = \"zfs\"",
        })
    }

    fn command_metrics(&self) -> Vec<CmdStat> {
        Vec::new()
    }

    fn op_lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}
