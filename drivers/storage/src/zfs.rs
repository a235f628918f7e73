//! The ZFS backend: datasets `<pool>/kiln/{models,embeddings,checkpoints,logs}` with
//! probed, fallen-back profile properties; snapshots, holds, rollback, pool health and
//! scrubs. Every `zfs`/`zpool` call goes through [`ZfsCmd`]. Kiln marks what it creates
//! with the user property `org.kiln:managed` (datasets) and `org.kiln:created` (snapshots)
//! and never destroys anything without those marks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::health::{self, PoolHealth};
use crate::probe::{self, Features, PropPlan, fmt_size};
use crate::zfscmd::{PropRow, Tool, ZfsCmd, parse_tab};
use crate::{BackendKind, StorageConfig, parse_size};
use crate::{
    CmdStat, Dataset, DatasetStatus, EnsureReport, PropertyStatus, RollbackReport, SnapshotInfo,
    Storage, StorageStatus, unique_suffix, validate_snapshot_name,
};
use crate::{Result, StorageError};

const MANAGED: &str = "org.kiln:managed";
const CREATED: &str = "org.kiln:created";
const KEEP: &str = "org.kiln:keep";
const PROFILE_PROPS: [&str; 4] = ["compression", "recordsize", "atime", "quota"];

#[derive(Default)]
struct State {
    features: Option<Features>,
    plans: BTreeMap<Dataset, Vec<PropPlan>>,
    mountpoints: BTreeMap<Dataset, PathBuf>,
    report: EnsureReport,
}

/// ZFS-backed storage.
pub struct ZfsBackend {
    config: StorageConfig,
    cmd: ZfsCmd,
    state: Mutex<State>,
    lock: Mutex<()>,
}

/// Compare a property value read with `-p` against the planned value.
fn same_value(prop: &str, actual: &str, planned: &str) -> bool {
    match prop {
        "recordsize" => parse_size(actual).ok() == parse_size(planned).ok(),
        "quota" => {
            let a = if actual == "none" {
                Ok(0)
            } else {
                parse_size(actual)
            };
            let p = if planned == "none" {
                Ok(0)
            } else {
                parse_size(planned)
            };
            a.is_ok() && a == p
        }
        _ => actual == planned,
    }
}

/// Show a `-p` value the way a person would write it.
fn display_value(prop: &str, raw: &str) -> String {
    match (prop, raw.parse::<u64>()) {
        ("quota", Ok(0)) => "none".into(),
        ("recordsize" | "quota", Ok(n)) => fmt_size(n),
        _ => raw.to_string(),
    }
}

impl ZfsBackend {
    pub fn new(config: StorageConfig) -> Self {
        let cmd = ZfsCmd::new(config.zfs_command.clone(), config.zpool_command.clone())
            .with_timeout(Duration::from_secs(config.command_timeout_secs));
        ZfsBackend {
            config,
            cmd,
            state: Mutex::new(State::default()),
            lock: Mutex::new(()),
        }
    }

    /// The command runner (shared metrics).
    pub fn cmd(&self) -> &ZfsCmd {
        &self.cmd
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn base(&self) -> String {
        format!("{}/kiln", self.config.pool)
    }

    /// Full ZFS name of a dataset.
    pub fn zfs_name(&self, ds: Dataset) -> String {
        format!("{}/{}", self.base(), ds.name())
    }

    fn props_of(&self, target: &str, props: &[&str]) -> Result<BTreeMap<String, PropRow>> {
        Ok(self
            .cmd
            .get(props, &[target], false)?
            .into_iter()
            .map(|r| (r.property.clone(), r))
            .collect())
    }

    fn exists(&self, target: &str) -> Result<bool> {
        match self.cmd.get(&["type"], &[target], false) {
            Ok(_) => Ok(true),
            Err(StorageError::DatasetMissing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn features(&self) -> Result<Features> {
        if let Some(f) = self.st().features.clone() {
            return Ok(f);
        }
        let f = probe::probe(&self.cmd)?;
        self.st().features = Some(f.clone());
        Ok(f)
    }

    fn snapshot_rows(&self, ds: Dataset) -> Result<Vec<SnapshotInfo>> {
        let name = self.zfs_name(ds);
        let rows = self.cmd.get(
            &["creation", "createtxg", "userrefs", "used", CREATED, KEEP],
            &[&name],
            true,
        )?;
        let prefix = format!("{name}@");
        let mut by: BTreeMap<String, BTreeMap<String, PropRow>> = BTreeMap::new();
        for r in rows.into_iter().filter(|r| r.name.starts_with(&prefix)) {
            by.entry(r.name.clone())
                .or_default()
                .insert(r.property.clone(), r);
        }
        let mut out = Vec::new();
        for (full, p) in by {
            let get = |k: &str| p.get(k).map(|r| (r.value.as_str(), r.source.as_str()));
            let kiln_created = get(CREATED)
                .filter(|(_, src)| *src == "local")
                .and_then(|(v, _)| v.parse::<i64>().ok());
            let creation = get("creation")
                .and_then(|(v, _)| v.parse().ok())
                .unwrap_or(0);
            out.push(SnapshotInfo {
                dataset: ds,
                name: full[prefix.len()..].to_string(),
                created: kiln_created.unwrap_or(creation),
                order: get("createtxg")
                    .and_then(|(v, _)| v.parse().ok())
                    .unwrap_or(0),
                keep: get(KEEP).is_some_and(|(v, src)| src == "local" && v == "yes"),
                held: get("userrefs")
                    .and_then(|(v, _)| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    > 0,
                holds: Vec::new(),
                managed: kiln_created.is_some(),
                used_bytes: get("used").and_then(|(v, _)| v.parse().ok()),
            });
        }
        out.sort_by(|a, b| a.creation_key().cmp(&b.creation_key()));
        Ok(out)
    }

    fn find_snapshot(&self, ds: Dataset, name: &str) -> Result<SnapshotInfo> {
        validate_snapshot_name(name)?;
        self.snapshot_rows(ds)?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| StorageError::SnapshotNotFound {
                dataset: self.zfs_name(ds),
                name: name.to_string(),
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

    fn pool_health(&self) -> Result<PoolHealth> {
        let features = self.features()?;
        let pool = self.config.pool.as_str();
        let cols = "name,size,allocated,free,capacity,health";
        let args: Vec<&str> = if features.zpool_list_parsable {
            vec!["list", "-H", "-p", "-o", cols, pool]
        } else {
            vec!["list", "-H", "-o", cols, pool]
        };
        let out = self.cmd.run(Tool::Zpool, &args)?;
        let status = self.cmd.run(Tool::Zpool, &["status", pool])?;
        let line = crate::zfscmd::command_line(&self.config.zpool_command, &args);
        let rows = parse_tab(&out, 6, &line)?;
        let row = rows.first().ok_or_else(|| StorageError::Parse {
            command: line.clone(),
            detail: "no pool row".into(),
        })?;
        health::parse_pool_row(row, health::parse_scrub(&status)).map_err(|detail| {
            StorageError::Parse {
                command: line,
                detail,
            }
        })
    }

    /// zfs-fuse deadlocks when a dataset mounts inside another zfs-fuse mount; refuse to
    /// create one where that would happen (mounts read from `<proc_root>/proc/mounts`).
    fn refuse_nested_fuse_mount(&self, base: &str, ds: Dataset) -> Result<()> {
        let parent = self.props_of(base, &["mountpoint"])?;
        let Some(mp) = parent.get("mountpoint").map(|r| r.value.clone()) else {
            return Ok(());
        };
        if !mp.starts_with('/') {
            return Ok(()); // none or legacy: the child will not mount
        }
        self.check_not_nested(&self.zfs_name(ds), &Path::new(&mp).join(ds.name()))
    }

    fn check_not_nested(&self, dataset: &str, target: &Path) -> Result<()> {
        let mounts = fuse_zfs_mounts(&self.config.proc_root);
        match mounts
            .iter()
            .find(|m| target.starts_with(m) && target != *m)
        {
            Some(m) => Err(StorageError::NestedFuseMount {
                dataset: dataset.to_string(),
                mountpoint: target.to_path_buf(),
                parent_mount: m.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Make sure `name` is mounted at an absolute path (writes must land in the dataset,
    /// never in the directory underneath); mount it if needed. Returns the mountpoint.
    fn ensure_mounted(&self, name: &str) -> Result<PathBuf> {
        let props = self.props_of(name, &["mountpoint", "mounted"])?;
        let value = |k: &str| props.get(k).map(|r| r.value.clone()).unwrap_or_default();
        let mp = value("mountpoint");
        if !mp.starts_with('/') {
            return Err(StorageError::NotMounted {
                dataset: name.to_string(),
                detail: format!("its mountpoint is `{mp}`"),
            });
        }
        if value("mounted") != "yes" {
            self.check_not_nested(name, Path::new(&mp))?;
            self.cmd.run(Tool::Zfs, &["mount", name])?;
            tracing::info!(dataset = name, mountpoint = %mp, "mounted dataset");
            let again = self.props_of(name, &["mounted"])?;
            if again.get("mounted").is_none_or(|r| r.value != "yes") {
                return Err(StorageError::NotMounted {
                    dataset: name.to_string(),
                    detail: "`zfs mount` succeeded but it is still not mounted".into(),
                });
            }
        }
        Ok(PathBuf::from(mp))
    }

    fn destroy_with_retry(&self, target: &str) -> Result<()> {
        let mut last = None;
        for _ in 0..20 {
            match self.cmd.run(Tool::Zfs, &["destroy", target]) {
                Ok(_) => return Ok(()),
                Err(e @ StorageError::Busy { .. }) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(150));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(StorageError::Busy {
            target: target.into(),
            command: "zfs destroy".into(),
            stderr: String::new(),
        }))
    }
}

impl Storage for ZfsBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Zfs
    }

    fn config(&self) -> &StorageConfig {
        &self.config
    }

    fn ensure(&self) -> Result<EnsureReport> {
        let features = probe::probe(&self.cmd)?;
        self.st().features = Some(features.clone());
        let pool = self.config.pool.clone();
        // Pool must exist; a missing dataset named like the pool means a missing pool.
        self.cmd
            .get(&["type"], &[&pool], false)
            .map_err(|e| match e {
                StorageError::DatasetMissing {
                    command, stderr, ..
                } => StorageError::PoolMissing {
                    pool: pool.clone(),
                    command,
                    stderr,
                },
                e => e,
            })?;
        let mut report = EnsureReport::default();
        let base = self.base();
        if !self.exists(&base)? {
            // A container only: its children mount on their own, never nested inside a
            // mounted parent (zfs-fuse deadlocks on nested mounts).
            self.cmd.run(
                Tool::Zfs,
                &[
                    "create",
                    "-o",
                    "canmount=off",
                    "-o",
                    &format!("{MANAGED}=yes"),
                    &base,
                ],
            )?;
            report.created.push(base.clone());
        }
        let mut plans = BTreeMap::new();
        let mut mounts = BTreeMap::new();
        for ds in Dataset::ALL {
            let name = self.zfs_name(ds);
            let plan = probe::plan_profile(&self.config.profiles.resolve(ds), &features);
            for p in &plan {
                if let Some(r) = &p.reason {
                    tracing::warn!(dataset = %name, reason = %r, "profile fallback");
                    report.fallbacks.push(format!("{name}: {r}"));
                }
            }
            if !self.exists(&name)? {
                self.refuse_nested_fuse_mount(&base, ds)?;
                let mut args: Vec<String> = vec!["create".into()];
                for p in &plan {
                    if p.property == "quota" && p.effective == "none" {
                        continue;
                    }
                    args.push("-o".into());
                    args.push(format!("{}={}", p.property, p.effective));
                }
                args.push("-o".into());
                args.push(format!("{MANAGED}=yes"));
                args.push(name.clone());
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                self.cmd.run(Tool::Zfs, &a)?;
                tracing::info!(dataset = %name, "created dataset");
                report.created.push(name.clone());
            } else {
                let actual = self.props_of(&name, &PROFILE_PROPS)?;
                for p in &plan {
                    let cur = actual.get(&p.property);
                    let ok = cur.is_some_and(|r| same_value(&p.property, &r.value, &p.effective));
                    if ok {
                        continue;
                    }
                    let was = cur
                        .map(|r| display_value(&p.property, &r.value))
                        .unwrap_or_else(|| "unset".into());
                    self.cmd.run(
                        Tool::Zfs,
                        &["set", &format!("{}={}", p.property, p.effective), &name],
                    )?;
                    let msg = format!("{name}: {} was {was}, set to {}", p.property, p.effective);
                    tracing::warn!(correction = %msg, "corrected drifted property");
                    report.corrections.push(msg);
                }
            }
            mounts.insert(ds, self.ensure_mounted(&name)?);
            plans.insert(ds, plan);
        }
        let mut st = self.st();
        st.plans = plans;
        st.mountpoints = mounts;
        st.report = report.clone();
        Ok(report)
    }

    fn status(&self) -> Result<StorageStatus> {
        let features = self.features()?;
        let pool = self.pool_health()?;
        let (plans, report) = {
            let st = self.st();
            (st.plans.clone(), st.report.clone())
        };
        let mut datasets = Vec::new();
        for ds in Dataset::ALL {
            let name = self.zfs_name(ds);
            let plan = plans.get(&ds).cloned().unwrap_or_else(|| {
                probe::plan_profile(&self.config.profiles.resolve(ds), &features)
            });
            let mut props: Vec<&str> = PROFILE_PROPS.to_vec();
            props.extend(["used", "available", "mountpoint", MANAGED]);
            let actual = match self.props_of(&name, &props) {
                Ok(a) => Some(a),
                Err(StorageError::DatasetMissing { .. }) => None,
                Err(e) => return Err(e),
            };
            let val = |k: &str| {
                actual
                    .as_ref()
                    .and_then(|a| a.get(k))
                    .map(|r| r.value.clone())
            };
            let properties = plan
                .iter()
                .map(|p| {
                    let eff = val(&p.property);
                    let reason = match &eff {
                        None => Some("dataset missing; restart kilnd to recreate it".into()),
                        Some(v) if !same_value(&p.property, v, &p.effective) => Some(format!(
                            "drifted to {} since start; kilnd corrects it on the next reload",
                            display_value(&p.property, v)
                        )),
                        _ => p.reason.clone(),
                    };
                    PropertyStatus {
                        property: p.property.clone(),
                        requested: p.requested.clone(),
                        effective: eff
                            .map(|v| display_value(&p.property, &v))
                            .unwrap_or_else(|| "-".into()),
                        reason,
                    }
                })
                .collect();
            let snaps = if actual.is_some() {
                self.snapshot_rows(ds)?.len()
            } else {
                0
            };
            datasets.push(DatasetStatus {
                dataset: ds,
                mountpoint: val("mountpoint").map(PathBuf::from).unwrap_or_default(),
                present: actual.is_some(),
                created_by_kiln: actual
                    .as_ref()
                    .and_then(|a| a.get(MANAGED))
                    .is_some_and(|r| r.value == "yes" && r.source == "local"),
                properties,
                used_bytes: val("used").and_then(|v| v.parse().ok()).unwrap_or(0),
                available_bytes: val("available").and_then(|v| v.parse().ok()).unwrap_or(0),
                snapshots: snaps,
                name,
            });
        }
        Ok(StorageStatus {
            backend: BackendKind::Zfs,
            description: format!(
                "zfs backend: datasets under {}/kiln on pool {} (health {})",
                self.config.pool, pool.name, pool.health
            ),
            location: self.config.pool.clone(),
            datasets,
            pool: Some(pool),
            arc: health::read_arcstats(&self.config.proc_root),
            features: Some(features),
            last_ensure: report,
            scrub_interval_days: self.config.scrub.interval_days,
        })
    }

    fn dataset_path(&self, ds: Dataset) -> PathBuf {
        self.st()
            .mountpoints
            .get(&ds)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(format!("/{}", self.zfs_name(ds))))
    }

    fn snapshot_at(
        &self,
        ds: Dataset,
        name: &str,
        keep: bool,
        created: i64,
    ) -> Result<SnapshotInfo> {
        validate_snapshot_name(name)?;
        let full = format!("{}@{name}", self.zfs_name(ds));
        let res = self.cmd.run(
            Tool::Zfs,
            &[
                "snapshot",
                "-o",
                &format!("{CREATED}={created}"),
                "-o",
                &format!("{KEEP}={}", if keep { "yes" } else { "no" }),
                &full,
            ],
        );
        match res {
            Ok(_) => {}
            Err(StorageError::CommandFailed { stderr, .. }) if stderr.contains("exists") => {
                return Err(StorageError::SnapshotExists {
                    dataset: self.zfs_name(ds),
                    name: name.into(),
                });
            }
            Err(e) => return Err(e),
        }
        tracing::info!(snapshot = %full, keep, "snapshot");
        self.find_snapshot(ds, name)
    }

    fn list_snapshots(&self, ds: Option<Dataset>) -> Result<Vec<SnapshotInfo>> {
        let mut out = Vec::new();
        for d in Dataset::ALL
            .into_iter()
            .filter(|d| ds.is_none_or(|x| x == *d))
        {
            out.extend(self.snapshot_rows(d)?);
        }
        out.sort_by(|a, b| a.creation_key().cmp(&b.creation_key()));
        Ok(out)
    }

    fn rollback(&self, ds: Dataset, name: &str, destroy_newer: bool) -> Result<RollbackReport> {
        let target = self.find_snapshot(ds, name)?;
        let full = format!("{}@{}", self.zfs_name(ds), target.name);
        let first = self.cmd.run(Tool::Zfs, &["rollback", &full]);
        let destroyed = match first {
            Ok(_) => Vec::new(),
            Err(StorageError::CommandFailed { stderr, .. })
                if stderr.contains("more recent snapshots") =>
            {
                // zfs lists the snapshots `-r` would destroy, one per line, in no set order.
                let prefix = format!("{}@", self.zfs_name(ds));
                let listed: Vec<&str> = stderr
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix(&prefix))
                    .collect();
                let all = self.snapshot_rows(ds)?;
                let newer: Vec<String> = all
                    .iter()
                    .filter(|s| listed.contains(&s.name.as_str()))
                    .map(|s| s.name.clone())
                    .collect();
                if !destroy_newer {
                    return Err(StorageError::NewerSnapshots {
                        dataset: self.zfs_name(ds),
                        name: name.into(),
                        newer,
                    });
                }
                for n in &newer {
                    if let Some(s) = all.iter().find(|s| &s.name == n)
                        && let Some(why) = Self::protection(s)
                    {
                        return Err(StorageError::SnapshotProtected {
                            dataset: self.zfs_name(ds),
                            name: n.clone(),
                            reason: why.into(),
                        });
                    }
                }
                self.cmd.run(Tool::Zfs, &["rollback", "-r", &full])?;
                newer
            }
            Err(e) => return Err(e),
        };
        tracing::info!(snapshot = %full, destroyed = destroyed.len(), "rolled back");
        Ok(RollbackReport {
            dataset: ds,
            snapshot: name.into(),
            destroyed,
        })
    }

    fn destroy_snapshot(&self, ds: Dataset, name: &str) -> Result<()> {
        let s = self.find_snapshot(ds, name)?;
        if let Some(reason) = Self::protection(&s) {
            return Err(StorageError::SnapshotProtected {
                dataset: self.zfs_name(ds),
                name: name.into(),
                reason: reason.into(),
            });
        }
        self.cmd.run(
            Tool::Zfs,
            &["destroy", &format!("{}@{name}", self.zfs_name(ds))],
        )?;
        Ok(())
    }

    fn hold(&self, ds: Dataset, name: &str, tag: &str) -> Result<()> {
        validate_snapshot_name(tag)?;
        let _ = self.find_snapshot(ds, name)?;
        if !self.features()?.holds {
            return Err(StorageError::Unsupported {
                what: "snapshot holds",
                backend: "zfs (this ZFS has no `zfs hold`)",
                fix: "upgrade ZFS, or mark the snapshot keep",
            });
        }
        let full = format!("{}@{name}", self.zfs_name(ds));
        match self.cmd.run(Tool::Zfs, &["hold", tag, &full]) {
            Err(StorageError::CommandFailed { stderr, .. }) if stderr.contains("exists") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    fn release(&self, ds: Dataset, name: &str, tag: &str) -> Result<()> {
        let _ = self.find_snapshot(ds, name)?;
        let full = format!("{}@{name}", self.zfs_name(ds));
        match self.cmd.run(Tool::Zfs, &["release", tag, &full]) {
            Err(StorageError::CommandFailed { stderr, .. }) if stderr.contains("no such tag") => {
                Err(StorageError::HoldNotFound {
                    dataset: self.zfs_name(ds),
                    name: name.into(),
                    tag: tag.into(),
                })
            }
            r => r.map(|_| ()),
        }
    }

    fn with_snapshot_view(
        &self,
        ds: Dataset,
        name: &str,
        f: &mut dyn FnMut(&Path) -> Result<()>,
    ) -> Result<()> {
        let _ = self.find_snapshot(ds, name)?;
        // OpenZFS exposes snapshots under .zfs; zfs-fuse does not, so clone instead.
        let dotzfs = self.dataset_path(ds).join(".zfs/snapshot").join(name);
        if dotzfs.is_dir() {
            return f(&dotzfs);
        }
        let id = unique_suffix();
        let clone = format!("{}/restore-{id}", self.base());
        let mnt = std::env::temp_dir().join(format!("kiln-restore-{id}"));
        let full = format!("{}@{name}", self.zfs_name(ds));
        self.cmd.run(
            Tool::Zfs,
            &[
                "clone",
                "-o",
                &format!("mountpoint={}", mnt.display()),
                "-o",
                "readonly=on",
                "-o",
                &format!("{MANAGED}=yes"),
                &full,
                &clone,
            ],
        )?;
        let res = f(&mnt);
        let cleanup = self.destroy_with_retry(&clone);
        let _ = std::fs::remove_dir(&mnt);
        res?;
        cleanup
    }

    fn scrub(&self) -> Result<()> {
        self.cmd.run(Tool::Zpool, &["scrub", &self.config.pool])?;
        Ok(())
    }

    fn command_metrics(&self) -> Vec<CmdStat> {
        self.cmd.metrics().snapshot()
    }

    fn op_lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Mount points of type `fuse.zfs` in `<proc_root>/proc/mounts` (octal escapes decoded).
fn fuse_zfs_mounts(proc_root: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(proc_root.join("proc/mounts")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[2] == "fuse.zfs").then(|| PathBuf::from(unescape_mount(f[1])))
        })
        .collect()
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fuse_zfs_mounts() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proc")).unwrap();
        std::fs::write(
            t.path().join("proc/mounts"),
            "tank /tank fuse.zfs rw 0 0\nkstat /zfs-kstat fuse rw 0 0\nt2 /my\\040pool fuse.zfs rw 0 0\n/dev/vda / ext4 rw 0 0\n",
        )
        .unwrap();
        assert_eq!(
            fuse_zfs_mounts(t.path()),
            [PathBuf::from("/tank"), PathBuf::from("/my pool")]
        );
        assert!(fuse_zfs_mounts(&t.path().join("none")).is_empty());
    }

    #[test]
    fn value_comparison_uses_bytes() {
        assert!(same_value("recordsize", "131072", "128K"));
        assert!(!same_value("recordsize", "4096", "128K"));
        assert!(same_value("quota", "0", "none"));
        assert!(same_value("quota", "536870912000", "500G"));
        assert!(!same_value("quota", "0", "500G"));
        assert!(same_value("compression", "gzip-3", "gzip-3"));
        assert_eq!(display_value("quota", "0"), "none");
        assert_eq!(display_value("recordsize", "131072"), "128K");
        assert_eq!(display_value("compression", "lzjb"), "lzjb");
    }
}
