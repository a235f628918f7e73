//! The storage port: the datasets kiln keeps its data on (`models`, `embeddings`,
//! `checkpoints`, `logs`), their snapshots, holds and rollbacks, behind [`Storage`], with
//! the vocabulary both backends (ZFS, plain directories) and the engine share: datasets,
//! snapshot and status records, the storage configuration and typed errors. Pure traits
//! and data; touches nothing.

mod config;
mod error;

pub use config::*;
pub use error::{ErrorCode, Result, StorageError};

use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

use serde::Serialize;

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

/// Pool health and capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolHealth {
    pub name: String,
    /// ONLINE, DEGRADED, FAULTED, …
    pub health: String,
    pub size_bytes: u64,
    pub allocated_bytes: u64,
    pub free_bytes: u64,
    pub capacity_percent: u32,
    pub scrub: ScrubStatus,
}

/// State of the last or current scrub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScrubStatus {
    /// `none`, `in_progress`, `finished`, `canceled`, `resilver` or `unknown`.
    pub state: String,
    /// Errors found by the last finished scrub.
    pub errors: Option<u64>,
    /// When the last scrub finished or was canceled (unix seconds, local time zone).
    pub finished_at: Option<i64>,
    /// The line as `zpool status` printed it.
    pub line: String,
}

/// ARC figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArcStats {
    pub source: PathBuf,
    pub size_bytes: u64,
    pub target_bytes: u64,
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    /// hits / (hits + misses), 0 when there was no access yet.
    pub hit_ratio: f64,
}

/// What the installed ZFS supports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Features {
    /// Compression values as the usage text lists them (`gzip-[1-9]` style ranges kept).
    pub compression: Vec<String>,
    /// Largest recordsize in bytes.
    pub max_recordsize: u64,
    /// `zfs list -j` JSON output (OpenZFS 2.3+).
    pub json: bool,
    /// `zfs hold/release` user holds.
    pub holds: bool,
    /// `zfs list -p` (zfs-fuse lacks it; we use `zfs get -H -p` regardless).
    pub zfs_list_parsable: bool,
    /// `zpool list -p`.
    pub zpool_list_parsable: bool,
}

impl Features {
    /// Build from `zfs get` usage (property table), `zfs` usage and `zpool` usage text.
    pub fn from_usage(
        zfs_get_usage: &str,
        zfs_usage: &str,
        zpool_usage: &str,
    ) -> std::result::Result<Self, String> {
        let values_of = |prop: &str| -> Option<String> {
            zfs_get_usage.lines().find_map(|l| {
                let mut it = l.split_whitespace();
                if it.next() != Some(prop) {
                    return None;
                }
                // PROPERTY EDIT INHERIT VALUES...
                let _edit = it.next()?;
                let _inherit = it.next()?;
                Some(it.collect::<Vec<_>>().join(" "))
            })
        };
        let comp = values_of("compression")
            .ok_or("the `zfs get` property table has no compression row")?;
        let compression: Vec<String> = comp
            .split('|')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let max_recordsize = values_of("recordsize")
            .and_then(|v| {
                // "512 to 128k, power of 2"
                let upper = v
                    .split(" to ")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .trim()
                    .to_string();
                parse_size(&upper).ok()
            })
            .unwrap_or(128 << 10);
        let line_of = |text: &str, cmd: &str| -> String {
            text.lines()
                .map(str::trim)
                .find(|l| l.starts_with(&format!("{cmd} ")) || *l == cmd)
                .unwrap_or("")
                .to_string()
        };
        let flags_have = |line: &str, flag: char| {
            line.split_whitespace()
                .filter(|w| w.starts_with("[-") && !w.starts_with("[--"))
                .any(|w| w.trim_start_matches("[-").contains(flag))
        };
        let zfs_list = line_of(zfs_usage, "list");
        let zpool_list = line_of(zpool_usage, "list");
        Ok(Features {
            compression,
            max_recordsize,
            json: zfs_usage.contains("[-j"),
            holds: zfs_usage
                .lines()
                .any(|l| l.trim_start().starts_with("hold ")),
            zfs_list_parsable: flags_have(&zfs_list, 'p'),
            zpool_list_parsable: flags_have(&zpool_list, 'p'),
        })
    }

    /// Does this ZFS accept `compression=<c>`?
    pub fn supports_compression(&self, c: &str) -> bool {
        self.compression.iter().any(|tok| token_matches(tok, c))
    }
}

/// `gzip-[1-9]` / `zstd-fast-[1-10,20,100]` style tokens.
fn token_matches(token: &str, value: &str) -> bool {
    let Some((prefix, rest)) = token.split_once('[') else {
        return token == value;
    };
    let Some(inner) = rest.strip_suffix(']') else {
        return false;
    };
    let Some(num) = value
        .strip_prefix(prefix)
        .and_then(|n| n.parse::<u32>().ok())
    else {
        return false;
    };
    inner.split(',').any(|part| match part.split_once('-') {
        Some((a, b)) => match (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
            (Ok(a), Ok(b)) => (a..=b).contains(&num),
            _ => false,
        },
        None => part.trim().parse::<u32>() == Ok(num),
    })
}

/// Per-subcommand call statistics (e.g. key `zfs get`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CmdStat {
    pub command: String,
    pub calls: u64,
    pub failures: u64,
    pub total_seconds: f64,
    /// Cumulative counts per bucket of [`BUCKETS`], then the +Inf bucket (= calls).
    pub buckets: Vec<u64>,
}

/// Upper bounds (seconds) of the duration histogram buckets; the last bucket is +Inf.
pub const BUCKETS: [f64; 7] = [0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// The storage port both backends implement with the same behaviour. Calls block.
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
}
