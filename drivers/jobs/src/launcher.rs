//! The job launcher port over this crate: [`ForkLauncher`] supervises each job as a child
//! shim of the daemon; [`SystemdLauncher`] starts the shim as a systemd transient unit (the
//! async D-Bus call is driven on the runtime handle it was built with, so the port stays
//! blocking like the fork path). Both find jobs again the same way ([`readopt`]).
//! Touches job run directories, processes and, for systemd, the system bus.

use std::path::Path;

use kiln_hal::ports::{
    Adopted, ExitRecord, JobLauncher, JobRecord, LaunchPlan, PortError, RunningJob, StartedInfo,
};

use crate::error::{JobError, JobErrorKind};
use crate::launch::{STARTED_FILE, read_json};
use crate::supervisor::{JobHandle, Readopt, ShimCommand, readopt, spawn, take_checkpoint_request};

impl From<JobError> for PortError {
    fn from(e: JobError) -> PortError {
        match e.kind {
            JobErrorKind::Invalid => PortError::invalid(e.message),
            JobErrorKind::NotFound => PortError::not_found(e.message),
            JobErrorKind::State => PortError::precondition(e.message),
            JobErrorKind::Denied => PortError::denied(e.message),
            JobErrorKind::Spawn | JobErrorKind::Io => PortError::internal(e.message),
        }
    }
}

impl RunningJob for JobHandle {
    fn record(&self) -> &JobRecord {
        &self.record
    }

    fn started(&self) -> &StartedInfo {
        &self.started
    }

    fn poll(&mut self) -> Option<ExitRecord> {
        JobHandle::poll(self)
    }

    fn cancel(&mut self) -> Result<(), PortError> {
        Ok(JobHandle::cancel(self)?)
    }
}

/// Jobs as supervised child processes of the daemon (they stop when it stops).
pub struct ForkLauncher {
    shim: ShimCommand,
}

impl ForkLauncher {
    pub fn new(shim: ShimCommand) -> ForkLauncher {
        ForkLauncher { shim }
    }
}

impl JobLauncher for ForkLauncher {
    fn describe(&self) -> String {
        "supervised child processes (fork)".into()
    }

    fn start(&self, plan: &LaunchPlan) -> Result<Box<dyn RunningJob>, PortError> {
        Ok(Box::new(spawn(&self.shim, plan)?))
    }

    fn adopt(&self, record: &JobRecord) -> Adopted {
        match readopt(record) {
            Readopt::Running(h) => Adopted::Running(h),
            Readopt::Finished(e) => Adopted::Finished(e),
            Readopt::Lost(why) => Adopted::Lost(why),
        }
    }

    fn started_record(
        &self,
        job_id: u64,
        run_dir: &Path,
        checkpoint_dir: &Path,
    ) -> Option<(JobRecord, StartedInfo)> {
        let s: StartedInfo = read_json(&run_dir.join(STARTED_FILE)).ok().flatten()?;
        let rec = JobRecord {
            job_id,
            run_dir: run_dir.to_path_buf(),
            shim_pid: s.shim_pid,
            shim_start_ticks: s.shim_start_ticks,
            pid: s.pid,
            checkpoint_dir: checkpoint_dir.to_path_buf(),
            unit: None,
        };
        Some((rec, s))
    }

    fn take_checkpoint_request(&self, checkpoint_dir: &Path) -> Option<String> {
        take_checkpoint_request(checkpoint_dir)
    }

    fn memory_used(&self, started: &StartedInfo) -> Option<u64> {
        let dir = started.cgroup.as_ref()?;
        ["memory.current", "memory.usage_in_bytes"]
            .iter()
            .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
            .and_then(|s| s.trim().parse().ok())
    }
}

/// Jobs as systemd transient units (systemd owns their cgroups; they outlive the daemon).
/// Finding, watching and checkpointing them is the fork launcher's way.
#[cfg(feature = "systemd")]
pub struct SystemdLauncher {
    fork: ForkLauncher,
    conn: zbus::Connection,
    runtime: tokio::runtime::Handle,
}

#[cfg(feature = "systemd")]
impl SystemdLauncher {
    /// A launcher on the system bus connection `conn`; its calls run on `runtime`.
    pub fn new(
        shim: ShimCommand,
        conn: zbus::Connection,
        runtime: tokio::runtime::Handle,
    ) -> SystemdLauncher {
        SystemdLauncher {
            fork: ForkLauncher::new(shim),
            conn,
            runtime,
        }
    }
}

#[cfg(feature = "systemd")]
impl JobLauncher for SystemdLauncher {
    fn describe(&self) -> String {
        "systemd transient units".into()
    }

    fn start(&self, plan: &LaunchPlan) -> Result<Box<dyn RunningJob>, PortError> {
        let mut plan = plan.clone();
        plan.cgroup = false;
        let unit = self.runtime.block_on(crate::systemd::start_unit(
            &self.conn,
            &self.fork.shim,
            &plan,
        ))?;
        Ok(Box::new(crate::systemd::finish_unit_start(&plan, &unit)?))
    }

    fn adopt(&self, record: &JobRecord) -> Adopted {
        self.fork.adopt(record)
    }

    fn started_record(
        &self,
        job_id: u64,
        run_dir: &Path,
        checkpoint_dir: &Path,
    ) -> Option<(JobRecord, StartedInfo)> {
        self.fork.started_record(job_id, run_dir, checkpoint_dir)
    }

    fn take_checkpoint_request(&self, checkpoint_dir: &Path) -> Option<String> {
        self.fork.take_checkpoint_request(checkpoint_dir)
    }

    fn memory_used(&self, started: &StartedInfo) -> Option<u64> {
        self.fork.memory_used(started)
    }
}
