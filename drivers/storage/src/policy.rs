//! Storage policy over any [`Storage`]: model versions as keep-marked snapshots (import,
//! rollback), the retention grid (prune), job checkpoints and the scrub schedule. The
//! backends provide only the mechanism (datasets, snapshots, holds, views). Touches the
//! datasets only through the port, and model files through [`fsutil`].

use std::fs;
use std::path::Path;

use crate::{
    BackendKind, Dataset, KeptSnapshot, ModelImport, ModelRollback, PruneReport, Result,
    SkippedSnapshot, SnapshotInfo, Storage, StorageError, fsutil, model_snapshot_name,
    parse_model_snapshot, retention, unique_suffix, validate_model_name, validate_snapshot_name,
    version_dirs,
};

/// Apply the retention grid to `ds` at time `now`; keep-marked, held and foreign
/// snapshots are never removed.
pub fn prune(s: &dyn Storage, ds: Dataset, now: i64) -> Result<PruneReport> {
    let _g = s.op_lock();
    let snaps = s.list_snapshots(Some(ds))?;
    let mut report = PruneReport {
        dataset: Some(ds),
        ..PruneReport::default()
    };
    let mut rotation = Vec::new();
    for snap in &snaps {
        let why = if !snap.managed {
            Some("not created by kiln")
        } else if snap.keep {
            Some("marked keep")
        } else if snap.held {
            Some("held by a running job")
        } else {
            None
        };
        match why {
            Some(w) => report.protected.push(SkippedSnapshot {
                name: snap.name.clone(),
                reason: w.to_string(),
            }),
            None => rotation.push((snap.name.clone(), snap.created)),
        }
    }
    for d in retention::plan(&rotation, &s.config().retention, now) {
        if !d.reasons.is_empty() {
            report.kept.push(KeptSnapshot {
                name: d.name,
                reasons: d.reasons,
            });
            continue;
        }
        match s.destroy_snapshot(ds, &d.name) {
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

/// Refuses a tree holding a symlink that leads out of it (absolute, or climbing above
/// `root` with `..`): a link inside an import would otherwise hand later readers whatever
/// it points at. Links that stay inside are kept.
pub fn check_links_stay_inside(root: &Path) -> Result<()> {
    fn walk(root: &Path, dir: &Path) -> Result<()> {
        let md = fs::symlink_metadata(dir).map_err(|e| StorageError::io("stat", dir, e))?;
        if !md.is_dir() {
            return Ok(());
        }
        let entries = fs::read_dir(dir).map_err(|e| StorageError::io("read directory", dir, e))?;
        for e in entries {
            let p = e
                .map_err(|e| StorageError::io("read directory", dir, e))?
                .path();
            let md = fs::symlink_metadata(&p).map_err(|e| StorageError::io("stat", &p, e))?;
            if md.file_type().is_symlink() {
                let target = fs::read_link(&p).map_err(|e| StorageError::io("read link", &p, e))?;
                let inside = lexically_inside(root, p.parent().unwrap_or(root), &target);
                if !inside {
                    return Err(StorageError::LinkOutside { path: p, target });
                }
            } else if md.is_dir() {
                walk(root, &p)?;
            }
        }
        Ok(())
    }
    walk(root, root)
}

/// Whether `target`, relative to `from` (a directory at or below `root`), names a path at or
/// below `root` without leaving it on the way.
fn lexically_inside(root: &Path, from: &Path, target: &Path) -> bool {
    use std::path::Component;
    if target.is_absolute() {
        return false;
    }
    let Ok(rel) = from.strip_prefix(root) else {
        return false;
    };
    let mut depth: Vec<std::ffi::OsString> = rel
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    for c in target.components() {
        match c {
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::Normal(n) => depth.push(n.to_os_string()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Clear what an interrupted import or model rollback left in the models dataset (staging
/// trees nobody uses; the live trees are whole, see [`fsutil::swap_in`]). Returns what was
/// removed. Call at start.
pub fn recover(s: &dyn Storage) -> Result<Vec<std::path::PathBuf>> {
    let models = s.dataset_path(Dataset::Models);
    for what in fsutil::recover_swaps(&models)? {
        tracing::warn!("{what}: a model rollback was interrupted");
    }
    let mut removed = fsutil::remove_leftovers(&models, &[".kiln-restore-"])?;
    for e in fs::read_dir(&models).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            removed.extend(fsutil::remove_leftovers(&e.path(), &[".importing-"])?);
        }
    }
    for p in &removed {
        tracing::warn!(path = %p.display(), "removed what an interrupted import or rollback left");
    }
    Ok(removed)
}

/// Versions of model `name` in the live tree.
pub fn model_versions(s: &dyn Storage, name: &str) -> Result<Vec<u32>> {
    validate_model_name(name)?;
    version_dirs(&s.dataset_path(Dataset::Models).join(name))
}

/// Copy `src` (file or directory) into `models/<name>/<next version>/`, then snapshot
/// the models dataset as `@<name>-v<version>` (marked keep). On failure nothing is left
/// behind and existing versions are untouched.
pub fn import_model(
    s: &dyn Storage,
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
    let src =
        &fs::canonicalize(src).map_err(|e| StorageError::io("resolve import source", src, e))?;
    check_links_stay_inside(src)?;
    let _g = s.op_lock();
    let model_dir = s.dataset_path(Dataset::Models).join(name);
    // Copying a tree into itself never ends.
    let canon = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if md.is_dir() && canon(&s.dataset_path(Dataset::Models)).starts_with(canon(src)) {
        return Err(StorageError::InvalidName {
            what: "import source",
            value: src.display().to_string(),
            expected: "a file or directory outside the models dataset",
        });
    }
    let from_snaps = s
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
        fs::rename(&staging, &final_dir).map_err(|e| StorageError::io("rename", &final_dir, e))?;
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
    if let Err(e) = s.snapshot(Dataset::Models, &snap, true) {
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
pub fn rollback_model(s: &dyn Storage, name: &str, version: u32) -> Result<ModelRollback> {
    validate_model_name(name)?;
    let _g = s.op_lock();
    let snap = model_snapshot_name(name, version);
    let snaps = s.list_snapshots(Some(Dataset::Models))?;
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
    let models = s.dataset_path(Dataset::Models);
    let live = models.join(name);
    let before = version_dirs(&live)?;
    let staging = models.join(format!(".kiln-restore-{}", unique_suffix()));
    let mut bytes = 0;
    s.with_snapshot_view(Dataset::Models, &snap, &mut |view| {
        let src = view.join(name);
        bytes = fsutil::copy_tree(
            &src,
            &staging,
            fsutil::CopyMode::Independent,
            &mut |_, _| {},
        )?
        .bytes;
        // Dir-backend snapshots are stored read-only; the live tree must be writable.
        if s.kind() == BackendKind::Dir {
            fsutil::make_writable(&staging)?;
        }
        Ok(())
    })
    .inspect_err(|_| {
        let _ = fsutil::remove_tree(&staging);
    })?;
    fsutil::swap_in(&staging, &live).inspect_err(|_| {
        let _ = fsutil::remove_tree(&staging);
    })?;
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
pub fn checkpoint(s: &dyn Storage, job: &str, label: &str) -> Result<SnapshotInfo> {
    validate_model_name(job)?;
    let name = format!("{job}-{label}");
    validate_snapshot_name(&name)?;
    s.snapshot(Dataset::Checkpoints, &name, false)
}

/// Start a scrub when the schedule says one is due; returns whether it started.
pub fn scrub_if_due(s: &dyn Storage, now: i64) -> Result<bool> {
    let days = s.config().scrub.interval_days;
    if days == 0 || s.kind() != BackendKind::Zfs {
        return Ok(false);
    }
    let st = s.status()?;
    let Some(pool) = st.pool else {
        return Ok(false);
    };
    let due = match (pool.scrub.state.as_str(), pool.scrub.finished_at) {
        ("in_progress", _) | ("resilver", _) => false,
        (_, Some(t)) => now - t >= i64::from(days) * 86_400,
        (_, None) => true,
    };
    if due {
        s.scrub()?;
        tracing::info!(pool = %pool.name, "started scheduled scrub");
    }
    Ok(due)
}

/// The policy as methods of any storage port object (`use kiln_storage::StoragePolicy`).
pub trait StoragePolicy {
    /// [`prune`]
    fn prune(&self, ds: Dataset, now: i64) -> Result<PruneReport>;
    /// [`model_versions`]
    fn model_versions(&self, name: &str) -> Result<Vec<u32>>;
    /// [`import_model`]
    fn import_model(
        &self,
        src: &Path,
        name: &str,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ModelImport>;
    /// [`rollback_model`]
    fn rollback_model(&self, name: &str, version: u32) -> Result<ModelRollback>;
    /// [`checkpoint`]
    fn checkpoint(&self, job: &str, label: &str) -> Result<SnapshotInfo>;
    /// [`scrub_if_due`]
    fn scrub_if_due(&self, now: i64) -> Result<bool>;
}

impl StoragePolicy for dyn Storage + '_ {
    fn prune(&self, ds: Dataset, now: i64) -> Result<PruneReport> {
        prune(self, ds, now)
    }

    fn model_versions(&self, name: &str) -> Result<Vec<u32>> {
        model_versions(self, name)
    }

    fn import_model(
        &self,
        src: &Path,
        name: &str,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ModelImport> {
        import_model(self, src, name, progress)
    }

    fn rollback_model(&self, name: &str, version: u32) -> Result<ModelRollback> {
        rollback_model(self, name, version)
    }

    fn checkpoint(&self, job: &str, label: &str) -> Result<SnapshotInfo> {
        checkpoint(self, job, label)
    }

    fn scrub_if_due(&self, now: i64) -> Result<bool> {
        scrub_if_due(self, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_that_leave_the_tree_are_refused_and_inner_ones_kept() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("m");
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        fs::write(root.join("a.bin"), b"a").unwrap();
        symlink("../a.bin", root.join("sub/to-a")).unwrap();
        symlink("../../sub", root.join("sub/deeper/up")).unwrap();
        check_links_stay_inside(&root).unwrap();

        for (name, target) in [
            ("shadow", "/etc/shadow"),
            ("climb", "../../outside"),
            ("sneaky", "deeper/../../../outside"),
        ] {
            let link = root.join("sub").join(name);
            symlink(target, &link).unwrap();
            match check_links_stay_inside(&root).unwrap_err() {
                StorageError::LinkOutside { path, target: t } => {
                    assert_eq!(
                        (path, t.to_string_lossy().into_owned()),
                        (link.clone(), target.to_string())
                    );
                }
                e => panic!("{e}"),
            }
            fs::remove_file(&link).unwrap();
        }
        let msg = StorageError::LinkOutside {
            path: "/x/l".into(),
            target: "/etc/shadow".into(),
        }
        .to_string();
        assert!(
            msg.contains("/etc/shadow") && msg.contains("replace it"),
            "{msg}"
        );
    }
}
