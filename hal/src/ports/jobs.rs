//! The job launcher port: what the engine needs of something that runs jobs (supervised
//! child processes and systemd transient units today, a Ray cluster over the VPN next). A
//! launcher starts a job from a [`LaunchPlan`], finds it again after a daemon restart from
//! the [`JobRecord`] the engine persisted, and reports its status through [`RunningJob`].
//! Queueing, budgets, CPU choice, checkpoints as snapshots and the choice of launcher are
//! the engine's. Pure traits and data; touches nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::PortError;

/// Everything the shim needs to run one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchPlan {
    pub job_id: u64,
    pub name: String,
    pub argv: Vec<String>,
    pub workdir: PathBuf,
    /// Full environment of the job (the shim clears its own).
    pub env: BTreeMap<String, String>,
    /// CPUs the job may run on (empty: no affinity change).
    pub cpus: Vec<usize>,
    pub memory_bytes: u64,
    /// Relative CPU weight 1..=10000 (cgroup cpu.weight / systemd CPUWeight).
    pub cpu_weight: u64,
    /// 0 = none.
    pub max_runtime_s: u64,
    /// SIGTERM → SIGKILL grace, milliseconds.
    pub grace_ms: u64,
    pub log_path: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub run_dir: PathBuf,
    /// Create a cgroup for the job (false when systemd already put it in a unit).
    pub cgroup: bool,
    /// Where cgroup hierarchies are mounted (normally /sys/fs/cgroup).
    pub cgroup_root: PathBuf,
}

/// Written by the shim once the job's process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedInfo {
    pub shim_pid: i32,
    pub shim_start_ticks: u64,
    pub pid: i32,
    pub started_at: i64,
    /// CPU list applied with sched_setaffinity, e.g. "0-3".
    pub cpus: String,
    /// How memory is limited: e.g. "cgroup v2 memory.max=...", "cgroup v1 ...", "rlimit AS=...".
    pub memory_limit: String,
    /// The cgroup directory created for the job, if any.
    pub cgroup: Option<PathBuf>,
    /// Why no cgroup was used, if none was.
    pub cgroup_note: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code when it exited normally.
    pub code: Option<i32>,
    /// Signal that ended it.
    pub signal: Option<i32>,
    /// `exited`, `cancelled`, `max-runtime`, `memory-limit`, `spawn-failed`, `lost`.
    pub reason: String,
    pub detail: String,
    pub finished_at: i64,
}

impl ExitRecord {
    pub fn success(&self) -> bool {
        self.code == Some(0) && self.reason == "exited"
    }

    pub fn lost(detail: impl Into<String>) -> ExitRecord {
        ExitRecord {
            code: None,
            signal: None,
            reason: "lost".into(),
            detail: detail.into(),
            finished_at: now_unix(),
        }
    }

    /// One line: "exited 0", "cancelled (signal 15)", ...
    pub fn summary(&self) -> String {
        let how = match (self.code, self.signal) {
            (Some(c), _) => format!("code {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => "no status".into(),
        };
        if self.detail.is_empty() {
            format!("{} ({how})", self.reason)
        } else {
            format!("{} ({how}): {}", self.reason, self.detail)
        }
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What the caller persists to find a job again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: u64,
    pub run_dir: PathBuf,
    pub shim_pid: i32,
    pub shim_start_ticks: u64,
    /// Job process pid (its process group id).
    pub pid: i32,
    pub checkpoint_dir: PathBuf,
    /// systemd unit name when started through systemd.
    pub unit: Option<String>,
}

/// What [`JobLauncher::adopt`] found.
pub enum Adopted {
    Running(Box<dyn RunningJob>),
    Finished(ExitRecord),
    Lost(String),
}

/// Something that runs jobs. Calls block: run them on blocking threads.
pub trait JobLauncher: Send + Sync {
    /// What the jobs component reports, e.g. `supervised child processes (fork)`.
    fn describe(&self) -> String;
    /// Starts the job. `PermissionDenied` means this launcher may not start jobs here
    /// (the engine then falls back to another).
    fn start(&self, plan: &LaunchPlan) -> Result<Box<dyn RunningJob>, PortError>;
    /// Finds a job again from the record persisted when it started.
    fn adopt(&self, record: &JobRecord) -> Adopted;
    /// A job whose start was interrupted (no record persisted): its record, if its
    /// supervisor got as far as running it.
    fn started_record(
        &self,
        job_id: u64,
        run_dir: &std::path::Path,
        checkpoint_dir: &std::path::Path,
    ) -> Option<(JobRecord, StartedInfo)>;
    /// Consumes a checkpoint request the job left in its checkpoint directory, returning
    /// its label (possibly empty).
    fn take_checkpoint_request(&self, checkpoint_dir: &std::path::Path) -> Option<String>;
    /// Memory the job uses now, when its limit mechanism can tell.
    fn memory_used(&self, started: &StartedInfo) -> Option<u64>;
}

/// A job a launcher started or adopted.
pub trait RunningJob: Send {
    fn record(&self) -> &JobRecord;
    fn started(&self) -> &StartedInfo;
    /// `Some` once the job has ended (never blocks).
    fn poll(&mut self) -> Option<ExitRecord>;
    /// Asks the job to stop (it gets its grace period). `FailedPrecondition` if it ended.
    fn cancel(&mut self) -> Result<(), PortError>;
}
