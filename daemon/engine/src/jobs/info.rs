//! A job as every transport and the event bus show it. Pure data over the jobs table's
//! vocabulary; touches nothing.

use super::db::{CheckpointRow, JobState};
use kiln_jobs::JobSpec;
use serde::Serialize;

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobInfo {
    pub id: u64,
    pub name: String,
    pub state: JobState,
    /// Why it waits, how it ended, or "running".
    pub detail: String,
    pub spec: JobSpec,
    pub owner_uid: Option<u32>,
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The job's process (its process group id) while it runs.
    pub pid: Option<i32>,
    /// CPUs it is pinned to ("" = not pinned).
    pub cpus: String,
    /// How its memory is limited (cgroup v2 / v1 / rlimit / systemd MemoryMax).
    pub memory_limit: String,
    pub memory_used_bytes: Option<u64>,
    /// The last line the job wrote to `$KILN_PROGRESS_FILE`.
    pub progress: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub log_path: String,
    pub checkpoint_dir: String,
    pub checkpoints: Vec<CheckpointRow>,
    pub unit: Option<String>,
}

impl JobInfo {
    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }
}
