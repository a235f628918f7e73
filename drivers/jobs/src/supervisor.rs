//! Starting, watching, cancelling and re-adopting job shims. `spawn` forks the shim
//! directly; `systemd::spawn_unit` starts it as a transient unit. Either way the daemon
//! keeps a [`JobRecord`] (persisted by the caller) from which [`readopt`] finds the job
//! again after a daemon restart: by pidfd of the shim (checked against its start time)
//! and the shim's `exit.json`. Touches the job's run dir and signals only the shim.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::JobError;
use crate::launch::{
    CHECKPOINT_MARKER, EXIT_FILE, ExitRecord, LAUNCH_FILE, LaunchPlan, STARTED_FILE, StartedInfo,
    proc_start, read_json, write_json_atomic,
};
pub use kiln_hal::ports::JobRecord;
use kiln_hal::process::{pidfd_exited, pidfd_open};

/// How to run the shim: e.g. `kilnd` with `["job-shim"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// A running job.
#[derive(Debug)]
pub struct JobHandle {
    pub record: JobRecord,
    pub started: StartedInfo,
    pidfd: Option<OwnedFd>,
    child: Option<Child>,
    exit: Option<ExitRecord>,
}

/// What [`readopt`] found.
#[derive(Debug)]
pub enum Readopt {
    Running(Box<JobHandle>),
    Finished(ExitRecord),
    Lost(String),
}

/// Write the plan into its run dir (created) and return the launch file path.
pub fn prepare(plan: &LaunchPlan) -> Result<PathBuf, JobError> {
    for d in [&plan.run_dir, &plan.checkpoint_dir] {
        std::fs::create_dir_all(d).map_err(|e| JobError::io("create directory", d, e))?;
    }
    if let Some(p) = plan.log_path.parent() {
        std::fs::create_dir_all(p).map_err(|e| JobError::io("create directory", p, e))?;
    }
    for f in [STARTED_FILE, EXIT_FILE] {
        let _ = std::fs::remove_file(plan.run_dir.join(f));
    }
    let launch = plan.run_dir.join(LAUNCH_FILE);
    write_json_atomic(&launch, plan)?;
    Ok(launch)
}

/// Wait until the shim reports the job running (or failing to start).
pub(crate) fn wait_started(
    run_dir: &Path,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<StartedInfo, JobError> {
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_micros(200);
    loop {
        if let Some(s) = read_json::<StartedInfo>(&run_dir.join(STARTED_FILE))? {
            return Ok(s);
        }
        if let Some(e) = read_json::<ExitRecord>(&run_dir.join(EXIT_FILE))? {
            return Err(JobError::spawn(format!(
                "the job did not start: {}",
                e.detail
            )));
        }
        if !alive() {
            // It may have written its files just before exiting.
            if let Some(s) = read_json::<StartedInfo>(&run_dir.join(STARTED_FILE))? {
                return Ok(s);
            }
            if let Some(e) = read_json::<ExitRecord>(&run_dir.join(EXIT_FILE))? {
                return Err(JobError::spawn(format!(
                    "the job did not start: {}",
                    e.detail
                )));
            }
            return Err(JobError::spawn(
                "the job supervisor exited before starting the job; see the daemon log",
            ));
        }
        if Instant::now() > deadline {
            return Err(JobError::spawn(format!(
                "the job supervisor did not report within {} s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(5));
    }
}

/// Run the job through a shim forked from this process; returns once the job runs.
pub fn spawn(shim: &ShimCommand, plan: &LaunchPlan) -> Result<JobHandle, JobError> {
    let launch = prepare(plan)?;
    let mut child = Command::new(&shim.program)
        .args(&shim.args)
        .arg(&launch)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            JobError::spawn(format!(
                "cannot start the job supervisor {}: {e}",
                shim.program.display()
            ))
        })?;
    let started = match wait_started(&plan.run_dir, Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(None))
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let pidfd = pidfd_open(child.id() as i32);
    Ok(JobHandle {
        record: JobRecord {
            job_id: plan.job_id,
            run_dir: plan.run_dir.clone(),
            shim_pid: started.shim_pid,
            shim_start_ticks: started.shim_start_ticks,
            pid: started.pid,
            checkpoint_dir: plan.checkpoint_dir.clone(),
            unit: None,
        },
        started,
        pidfd,
        child: Some(child),
        exit: None,
    })
}

impl JobHandle {
    pub(crate) fn adopted(record: JobRecord, started: StartedInfo) -> JobHandle {
        let pidfd = pidfd_open(record.shim_pid);
        JobHandle {
            record,
            started,
            pidfd,
            child: None,
            exit: None,
        }
    }

    fn shim_alive(&mut self) -> bool {
        if let Some(c) = &mut self.child {
            return matches!(c.try_wait(), Ok(None));
        }
        if let Some(fd) = &self.pidfd {
            return !pidfd_exited(fd);
        }
        matches!(proc_start(self.record.shim_pid), Some((t, false)) if t == self.record.shim_start_ticks)
    }

    /// `Some` once the job has ended (never blocks).
    pub fn poll(&mut self) -> Option<ExitRecord> {
        if self.exit.is_some() {
            return self.exit.clone();
        }
        if self.shim_alive() {
            return None;
        }
        let exit = match read_json::<ExitRecord>(&self.record.run_dir.join(EXIT_FILE)) {
            Ok(Some(e)) => e,
            Ok(None) => {
                end_leftovers(&self.record, Some(&self.started));
                ExitRecord::lost(format!(
                    "the job supervisor (pid {}) ended without recording an exit status; the job's processes were ended",
                    self.record.shim_pid
                ))
            }
            Err(e) => ExitRecord::lost(e.message),
        };
        self.exit = Some(exit.clone());
        Some(exit)
    }

    /// Block until the job ends or `timeout` passes.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.poll() {
                return Some(e);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Ask the job to stop: SIGTERM now, SIGKILL after the grace period (the shim does
    /// the escalation, so it happens even if the daemon dies meanwhile).
    pub fn cancel(&mut self) -> Result<(), JobError> {
        if self.poll().is_some() {
            return Err(JobError::state(format!(
                "job {} has already ended",
                self.record.job_id
            )));
        }
        // SAFETY: signalling through our pidfd, or a pid whose start time we just checked.
        let rc = match &self.pidfd {
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGTERM,
                    0,
                    0,
                ) as i32
            },
            None => unsafe { libc::kill(self.record.shim_pid, libc::SIGTERM) },
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(JobError::spawn(format!(
                    "cannot signal job {}: {e}",
                    self.record.job_id
                )));
            }
        }
        Ok(())
    }

    /// If the job asked for a checkpoint (created `$KILN_CHECKPOINT_DIR/.checkpoint`),
    /// consume the marker and return its contents (a label, possibly empty).
    pub fn take_checkpoint_request(&self) -> Option<String> {
        take_checkpoint_request(&self.record.checkpoint_dir)
    }
}

/// Consume a checkpoint marker in `dir`, if present; returns its trimmed contents.
pub fn take_checkpoint_request(dir: &Path) -> Option<String> {
    let marker = dir.join(CHECKPOINT_MARKER);
    let taken = dir.join(format!("{CHECKPOINT_MARKER}.taken"));
    std::fs::rename(&marker, &taken).ok()?;
    let label = std::fs::read_to_string(&taken).unwrap_or_default();
    let _ = std::fs::remove_file(&taken);
    Some(label.trim().chars().take(100).collect())
}

/// Kill a job whose shim vanished, so nothing is left behind.
fn end_leftovers(rec: &JobRecord, started: Option<&StartedInfo>) {
    if rec.pid > 0 && proc_start(rec.pid).is_some_and(|(_, z)| !z) {
        // SAFETY: the job's process group (the job is its leader).
        unsafe { libc::kill(-rec.pid, libc::SIGKILL) };
    }
    if let Some(dir) = started.and_then(|s| s.cgroup.clone()) {
        let cg = crate::cgroup::JobCgroup {
            dir,
            version: 0,
            applied: String::new(),
        };
        cg.destroy();
    }
}

/// Find a job again after a daemon restart.
pub fn readopt(rec: &JobRecord) -> Readopt {
    let exit_path = rec.run_dir.join(EXIT_FILE);
    if let Ok(Some(e)) = read_json::<ExitRecord>(&exit_path) {
        return Readopt::Finished(e);
    }
    let started = read_json::<StartedInfo>(&rec.run_dir.join(STARTED_FILE))
        .ok()
        .flatten();
    let same = matches!(proc_start(rec.shim_pid), Some((t, false)) if t == rec.shim_start_ticks);
    if same {
        let h = JobHandle::adopted(
            rec.clone(),
            started.clone().unwrap_or(StartedInfo {
                shim_pid: rec.shim_pid,
                shim_start_ticks: rec.shim_start_ticks,
                pid: rec.pid,
                started_at: 0,
                cpus: String::new(),
                memory_limit: String::new(),
                cgroup: None,
                cgroup_note: None,
            }),
        );
        // Re-check after opening the pidfd: the shim may have ended in between.
        if matches!(proc_start(rec.shim_pid), Some((t, false)) if t == rec.shim_start_ticks) {
            return Readopt::Running(Box::new(h));
        }
    }
    if let Ok(Some(e)) = read_json::<ExitRecord>(&exit_path) {
        return Readopt::Finished(e);
    }
    end_leftovers(rec, started.as_ref());
    Readopt::Lost(format!(
        "the job supervisor (pid {}) is gone and recorded no exit status (machine reboot or killed supervisor); its processes were ended",
        rec.shim_pid
    ))
}
