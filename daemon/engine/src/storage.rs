//! The storage hub: status, snapshots, rollback, pruning and model import over the storage
//! port the wiring opened. Mutations authorise (`ManageStorage`; model import/rollback
//! `ManageModels`), act on a blocking thread, then write an audit row. Also the hourly
//! scrub timer and the Prometheus collector for `zfs`/`zpool` call statistics. Depends on
//! the core alone; touches the datasets only through the port and the storage policy.

use crate::auth::{Action, Caller};
use crate::core::Core;
use crate::error::{EngineError, ErrorKind};
use crate::metrics::{CounterOf, encode_counters};
use kiln_hal::ports::storage::{
    CmdStat, Dataset, ErrorCode, ModelImport, ModelRollback, PruneReport, RollbackReport, Storage,
    StorageError,
};
/// The storage vocabulary transports show.
pub use kiln_hal::ports::storage::{SnapshotInfo, StorageStatus};
use kiln_storage::StoragePolicy;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the scrub schedule is checked.
pub const SCRUB_CHECK_EVERY: Duration = Duration::from_secs(3600);
/// Delay of the first scrub check after start.
pub const SCRUB_FIRST_CHECK_AFTER: Duration = Duration::from_secs(60);

/// A storage error as an engine error; the message (problem and fix) passes through.
pub fn storage_error(e: StorageError) -> EngineError {
    let kind = match e.code() {
        ErrorCode::InvalidArgument => ErrorKind::InvalidArgument,
        ErrorCode::NotFound => ErrorKind::NotFound,
        ErrorCode::AlreadyExists => ErrorKind::AlreadyExists,
        ErrorCode::FailedPrecondition | ErrorCode::Unimplemented => ErrorKind::FailedPrecondition,
        ErrorCode::ResourceExhausted => ErrorKind::ResourceExhausted,
        ErrorCode::Unavailable | ErrorCode::DeadlineExceeded => ErrorKind::Unavailable,
        ErrorCode::Internal => ErrorKind::Internal,
    };
    EngineError::new(kind, e.to_string())
}

/// Parse a dataset name from the wire (`models|embeddings|checkpoints|logs`).
pub fn parse_dataset(s: &str) -> Result<Dataset, EngineError> {
    Dataset::parse(s).map_err(storage_error)
}

/// Result of `import_model`: the import, and the load outcome when a load was asked for.
#[derive(Debug, Clone, Serialize)]
pub struct ImportOutcome {
    pub import: ModelImport,
    /// Set when `load` was requested: what loaded, or why it did not (the import stays).
    pub load: Option<LoadOutcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadOutcome {
    pub ok: bool,
    pub detail: String,
}

/// The storage hub: the storage port and what the engine does with it. Depends on the core
/// alone.
pub struct StorageHub {
    core: Arc<Core>,
    /// The datasets; `Err` holds why storage is unavailable (kilnd still runs).
    port: Result<Arc<dyn Storage>, String>,
}

impl StorageHub {
    pub(crate) fn new(core: Arc<Core>, port: Result<Arc<dyn Storage>, String>) -> StorageHub {
        StorageHub { core, port }
    }

    /// The storage port, or Unavailable with the reason and the fix.
    pub fn port(&self) -> Result<Arc<dyn Storage>, EngineError> {
        self.port.clone().map_err(EngineError::unavailable)
    }
}

fn join_err(e: tokio::task::JoinError) -> EngineError {
    EngineError::internal(format!("storage task failed: {e}"))
}

/// Run a blocking storage call off the async threads.
async fn blocking<T: Send + 'static>(
    s: Arc<dyn Storage>,
    f: impl FnOnce(&dyn Storage) -> kiln_hal::ports::storage::Result<T> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(move || f(s.as_ref()))
        .await
        .map_err(join_err)?
        .map_err(storage_error)
}

/// A non-root caller may only import what they could read themselves (kilnd reads the
/// source with its own rights): every file readable, every directory readable and
/// searchable by the caller's uid or gid, checked through the whole tree.
fn check_caller_can_read(caller: &Caller, src: &Path) -> Result<(), EngineError> {
    use std::os::unix::fs::MetadataExt;
    let Some(uid) = caller.uid else { return Ok(()) };
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    let may = |md: &std::fs::Metadata, bits: u32| {
        let mode = md.mode();
        let (u, g, o) = ((bits << 6), (bits << 3), bits);
        (md.uid() == uid && mode & u == u)
            || (md.uid() != uid && caller.gid == Some(md.gid()) && mode & g == g)
            || (md.uid() != uid && caller.gid != Some(md.gid()) && mode & o == o)
    };
    let denied = |p: &Path, what: &str| {
        EngineError::denied(format!(
            "uid {uid} cannot {what} {}; kilnd imports only what the caller may read: \
             make it readable for you (chmod/chown) or import as root",
            p.display()
        ))
    };
    let top = std::fs::metadata(src).map_err(|e| {
        EngineError::invalid(format!(
            "import source {}: {e}; give an existing file or directory",
            src.display()
        ))
    })?;
    let mut stack = vec![(src.to_path_buf(), top)];
    while let Some((p, md)) = stack.pop() {
        if md.is_dir() {
            if !may(&md, 0o5) {
                return Err(denied(&p, "list"));
            }
            let entries = std::fs::read_dir(&p)
                .map_err(|e| EngineError::invalid(format!("import source {}: {e}", p.display())))?;
            for e in entries.flatten() {
                let child = e.path();
                if let Ok(cmd) = std::fs::symlink_metadata(&child)
                    && !cmd.file_type().is_symlink()
                {
                    stack.push((child, cmd));
                }
            }
        } else if !may(&md, 0o4) {
            return Err(denied(&p, "read"));
        }
    }
    Ok(())
}

/// How often import progress reaches the caller and the event bus; the last figure always
/// does. One rate for every transport.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// `progress` called at most every [`PROGRESS_EVERY`] (and at the end), each call also
/// published as `Event::ImportProgress`.
fn throttled(
    bus: crate::events::EventBus,
    model: &str,
    mut progress: impl FnMut(u64, u64) + Send + 'static,
) -> impl FnMut(u64, u64) + Send + 'static {
    let model = model.to_string();
    let mut last: Option<std::time::Instant> = None;
    move |done, total| {
        if done < total && last.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
            return;
        }
        last = Some(std::time::Instant::now());
        bus.publish(crate::events::Event::ImportProgress {
            model: model.clone(),
            done,
            total,
        });
        progress(done, total);
    }
}

impl StorageHub {
    /// Full storage status (backend, datasets with requested/effective properties and
    /// fallback reasons, pool health, scrub, ARC). Unavailable with the reason when
    /// storage did not open.
    pub async fn storage_status(&self) -> Result<StorageStatus, EngineError> {
        blocking(self.port()?, |s| s.status()).await
    }

    /// Snapshots of one dataset (`Some("models")`) or all, oldest first.
    pub async fn list_snapshots(&self, ds: Option<&str>) -> Result<Vec<SnapshotInfo>, EngineError> {
        let ds = ds.map(parse_dataset).transpose()?;
        blocking(self.port()?, move |s| s.list_snapshots(ds)).await
    }

    /// Snapshot a dataset. Needs `ManageStorage`.
    pub async fn snapshot(
        &self,
        caller: &Caller,
        ds: &str,
        name: &str,
        keep: bool,
    ) -> Result<SnapshotInfo, EngineError> {
        let args = format!("dataset={ds} name={name} keep={keep}");
        self.core
            .authorised(
                caller,
                Action::ManageStorage,
                "StorageSnapshot",
                &args,
                || async {
                    let d = parse_dataset(ds)?;
                    let n = name.to_string();
                    blocking(self.port()?, move |s| s.snapshot(d, &n, keep)).await
                },
                |_| String::new(),
            )
            .await
    }

    /// Roll a whole dataset back to a snapshot. Needs `ManageStorage`.
    pub async fn rollback(
        &self,
        caller: &Caller,
        ds: &str,
        name: &str,
        destroy_newer: bool,
    ) -> Result<RollbackReport, EngineError> {
        let args = format!("dataset={ds} name={name} destroy_newer={destroy_newer}");
        self.core
            .authorised(
                caller,
                Action::ManageStorage,
                "StorageRollback",
                &args,
                || async {
                    let d = parse_dataset(ds)?;
                    let n = name.to_string();
                    blocking(self.port()?, move |s| s.rollback(d, &n, destroy_newer)).await
                },
                |r: &RollbackReport| {
                    if r.destroyed.is_empty() {
                        String::new()
                    } else {
                        format!("destroyed={:?}", r.destroyed)
                    }
                },
            )
            .await
    }

    /// Restore `models/<name>/` as it was at version `version`. Needs `ManageModels`.
    pub async fn rollback_model(
        &self,
        caller: &Caller,
        name: &str,
        version: u32,
    ) -> Result<ModelRollback, EngineError> {
        let args = format!("model={name} version={version}");
        self.core
            .authorised(
                caller,
                Action::ManageModels,
                "RollbackModel",
                &args,
                || async {
                    let n = name.to_string();
                    blocking(self.port()?, move |s| s.rollback_model(&n, version)).await
                },
                |r: &ModelRollback| {
                    format!("versions={:?} removed={:?}", r.versions, r.removed_versions)
                },
            )
            .await
    }

    /// Apply the retention grid to one dataset or all four. Needs `ManageStorage`.
    pub async fn prune(
        &self,
        caller: &Caller,
        ds: Option<&str>,
    ) -> Result<Vec<PruneReport>, EngineError> {
        let args = format!("dataset={}", ds.unwrap_or("all"));
        self.core
            .authorised(
                caller,
                Action::ManageStorage,
                "StoragePrune",
                &args,
                || async {
                    let which = match ds {
                        Some(d) => vec![parse_dataset(d)?],
                        None => Dataset::ALL.to_vec(),
                    };
                    blocking(self.port()?, move |s| {
                        let now = kiln_hal::ports::storage::now_unix();
                        which.into_iter().map(|d| s.prune(d, now)).collect()
                    })
                    .await
                },
                |rs: &Vec<PruneReport>| {
                    rs.iter()
                        .filter(|r| !r.removed.is_empty())
                        .map(|r| {
                            let d = r.dataset.map(|d| d.name()).unwrap_or("?");
                            format!("{d}: removed {:?}", r.removed)
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            )
            .await
    }

    /// Copy `src` (absolute path of a file or directory the caller may read) into the
    /// models dataset as the next version of `name`, snapshot it, and load it when `load`.
    /// `progress(done, total)` is called from a blocking thread while copying. Needs
    /// `ManageModels`.
    pub async fn import_model(
        &self,
        caller: &Caller,
        src: &Path,
        name: &str,
        load: bool,
        progress: impl FnMut(u64, u64) + Send + 'static,
    ) -> Result<ModelImport, EngineError> {
        let args = format!("model={name} source={} load={load}", src.display());
        let import = self
            .core
            .authorised(
                caller,
                Action::ManageModels,
                "ImportModel",
                &args,
                || async {
                    if !src.is_absolute() {
                        return Err(EngineError::invalid(format!(
                            "import source {:?} is relative; give an absolute path (kilnctl does this for you)",
                            src.display().to_string()
                        )));
                    }
                    check_caller_can_read(caller, src)?;
                    let (p, n) = (PathBuf::from(src), name.to_string());
                    let mut progress = throttled(self.core.events().clone(), name, progress);
                    blocking(self.port()?, move |s| {
                        s.import_model(&p, &n, &mut progress)
                    })
                    .await
                },
                |i: &ModelImport| {
                    format!(
                        "version={} snapshot={} bytes={}",
                        i.version, i.snapshot, i.bytes
                    )
                },
            )
            .await?;
        Ok(import)
    }

    /// `zfs`/`zpool` call statistics (empty for the dir backend or without storage).
    pub fn storage_command_metrics(&self) -> Vec<CmdStat> {
        self.port().map(|s| s.command_metrics()).unwrap_or_default()
    }

    /// Export the command statistics with the engine's metrics and start the hourly
    /// scrub check (`[storage.scrub] interval_days`). Call once, inside the runtime.
    pub fn start(self: &Arc<StorageHub>) {
        self.core
            .metrics()
            .register_collector(Box::new(StorageCollector {
                hub: Arc::downgrade(self),
            }));
        let Ok(storage) = self.port() else { return };
        if let Err(e) = kiln_storage::policy::recover(&*storage) {
            tracing::warn!(error = %e, "cannot clear what an interrupted import left");
        }
        if storage.config().scrub.interval_days == 0
            || storage.kind() != kiln_hal::ports::storage::BackendKind::Zfs
        {
            return;
        }
        tokio::spawn(async move {
            // The first check waits a minute, so it never competes with start-up.
            let first = tokio::time::Instant::now() + SCRUB_FIRST_CHECK_AFTER;
            let mut tick = tokio::time::interval_at(first, SCRUB_CHECK_EVERY);
            loop {
                tick.tick().await;
                let s = storage.clone();
                let r = tokio::task::spawn_blocking(move || {
                    s.scrub_if_due(kiln_hal::ports::storage::now_unix())
                })
                .await;
                match r {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "scheduled scrub check failed"),
                    Err(e) => tracing::warn!(error = %e, "scheduled scrub task failed"),
                }
            }
        });
    }
}

/// Renders `kiln_storage_*` from the backend's command statistics at scrape time.
struct StorageCollector {
    hub: Weak<StorageHub>,
}

impl std::fmt::Debug for StorageCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageCollector")
    }
}

impl Collector for StorageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(hub) = self.hub.upgrade() else {
            return Ok(());
        };
        let stats = hub.storage_command_metrics();
        encode_command_stats(&stats, &mut encoder)
    }
}

fn encode_command_stats(
    stats: &[CmdStat],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    if stats.is_empty() {
        return Ok(());
    }
    let label = |s: &CmdStat| vec![("command".to_string(), s.command.clone())];
    let counters: [CounterOf<CmdStat, u64>; 2] = [
        (
            "kiln_storage_commands",
            "zfs/zpool invocations, by subcommand",
            |s| s.calls,
        ),
        (
            "kiln_storage_command_failures",
            "zfs/zpool invocations that failed, by subcommand",
            |s| s.failures,
        ),
    ];
    encode_counters(encoder, stats, label, &counters)?;
    let mut m = encoder.encode_descriptor(
        "kiln_storage_command_duration_seconds",
        "zfs/zpool call duration, by subcommand",
        None,
        MetricType::Histogram,
    )?;
    for s in stats {
        // CmdStat buckets are cumulative; the encoder wants per-bucket counts.
        let mut prev = 0;
        let buckets: Vec<(f64, u64)> = kiln_hal::ports::storage::BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(s.buckets.iter().copied())
            .map(|(le, cum)| {
                let n = cum.saturating_sub(prev);
                prev = cum;
                (le, n)
            })
            .collect();
        let l = label(s);
        m.encode_family(&l)?.encode_histogram::<NoLabelSet>(
            s.total_seconds,
            s.calls,
            &buckets,
            None,
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod hub_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_keep_their_class_and_message() {
        let e = storage_error(StorageError::PoolMissing {
            pool: "tank".into(),
            command: "zpool list -H tank".into(),
            stderr: "cannot open 'tank': no such pool".into(),
        });
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.message.contains("zpool import tank"), "{}", e.message);
        let e = parse_dataset("model").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("one of models"), "{}", e.message);
        let e = storage_error(StorageError::QuotaFull {
            target: "x".into(),
            detail: "y".into(),
        });
        assert_eq!(e.kind, ErrorKind::ResourceExhausted);
    }

    #[test]
    fn command_stats_render_as_counters_and_a_histogram() {
        let m = crate::metrics::Metrics::new();
        let stats = vec![CmdStat {
            command: "zfs get".into(),
            calls: 3,
            failures: 1,
            total_seconds: 0.5,
            buckets: vec![1, 2, 2, 3, 3, 3, 3, 3],
        }];
        #[derive(Debug)]
        struct Fixed(Vec<CmdStat>);
        impl Collector for Fixed {
            fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                encode_command_stats(&self.0, &mut e)
            }
        }
        m.register_collector(Box::new(Fixed(stats)));
        let text = m.render();
        assert!(
            text.contains(r#"kiln_storage_commands_total{command="zfs get"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kiln_storage_command_failures_total{command="zfs get"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kiln_storage_command_duration_seconds_bucket{le="0.01",command="zfs get"} 2"#
            ) || text.contains(
                r#"kiln_storage_command_duration_seconds_bucket{command="zfs get",le="0.01"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains("kiln_storage_command_duration_seconds_count{command=\"zfs get\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn strangers_cannot_import_what_they_cannot_read() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("m.bin");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let stranger = Caller {
            transport: crate::auth::Transport::Grpc,
            uid: Some(if me == 65534 { 65533 } else { 65534 }),
            gid: Some(65534),
            pid: Some(1),
            bus_name: None,
        };
        let e = check_caller_can_read(&stranger, &f).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        check_caller_can_read(&stranger, &f).unwrap();
        check_caller_can_read(&Caller::internal(), &f).unwrap();
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;
    use crate::events::{Event, EventBus};
    use std::sync::Mutex;

    #[tokio::test]
    async fn progress_is_throttled_once_for_every_transport_and_published() {
        let bus = EventBus::default();
        let mut sub = bus.subscribe();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut p = throttled(bus.clone(), "m", move |d, t| {
            s2.lock().unwrap().push((d, t))
        });
        for done in 0..1000 {
            p(done, 1000);
        }
        p(1000, 1000);
        // The first figure, then nothing within PROGRESS_EVERY, then always the last.
        assert_eq!(*seen.lock().unwrap(), [(0, 1000), (1000, 1000)]);
        for want in [0, 1000] {
            match sub.next().await {
                Some(Event::ImportProgress { model, done, total }) => {
                    assert_eq!((model.as_str(), done, total), ("m", want, 1000))
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
