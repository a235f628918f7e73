//! Jobs in the engine: submit (validate, authorise, store, queue), budget-aware admission
//! against the UMA ledger, CPU sets from the HAL, the battery policy for GPU training,
//! launching through `kiln_jobs` (fork or systemd transient unit), a monitor that
//! records exits and turns checkpoint markers into held snapshots on the checkpoints
//! dataset, log streaming, change events, and re-adoption at daemon start.
//! Touches the `jobs` tables, `<state_dir>/jobs/`, the checkpoints and logs datasets,
//! and the job supervisors it started.

pub mod db;
pub mod info;
pub use info::JobInfo;
#[cfg(test)]
mod hub_tests;

pub use db::JobState;
mod request;

pub use kiln_jobs::{JobSpec, ShimCommand, cpu_kind_name};
pub use request::{CpusRequest, JobRequest};

/// `kilnd job-shim LAUNCH`: the supervisor process of one job (the jobs driver's).
pub fn run_job_shim(launch: &str) -> i32 {
    kiln_jobs::shim::shim_main(&[launch.to_string()])
}

/// `[jobs]` of kiln.toml.
pub use crate::config::JobsConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::auth::{Action, Caller};
use crate::budget::{Refusal, Reservation, gib};
use crate::core::{Core, rfc3339};
use crate::devices::DeviceHub;
use crate::error::{EngineError, ErrorKind};
use crate::events::Event;
use crate::storage::StorageHub;
use db::JobRow;
use kiln_hal::ports::storage::Dataset;
use kiln_hal::ports::{
    Adopted, ErrorKind as PortKind, ExitRecord, JobLauncher, JobRecord, LaunchPlan, PortError,
    RunningJob,
};
use kiln_jobs::{Admit, CpuKind, Device, JobError, JobErrorKind, JobQueue, Limits};

struct Running {
    handle: Box<dyn RunningJob>,
    _reservation: Option<Reservation>,
    cpus: Vec<usize>,
    snapshots: Vec<String>,
}

#[derive(Default)]
struct HubState {
    queue: JobQueue,
    queued: BTreeMap<u64, JobSpec>,
    running: BTreeMap<u64, Running>,
}

/// The launcher jobs start on, the one they fall back to when it refuses, and why the
/// choice is not the one configured (chosen by the wiring).
pub struct Launchers {
    pub active: Arc<dyn JobLauncher>,
    pub fallback: Option<Arc<dyn JobLauncher>>,
    pub degraded: Option<String>,
}

/// The engine's job registry.
pub struct JobsHub {
    core: Arc<Core>,
    /// Logs and checkpoints datasets; checkpoints are snapshots.
    storage: Arc<StorageHub>,
    /// CPU sets and the power source.
    devices: Arc<DeviceHub>,
    state: Mutex<HubState>,
    ops: tokio::sync::Mutex<()>,
    kick: Notify,
    /// What starts jobs; `None` until [`Engine::start_jobs`].
    launcher: std::sync::RwLock<Option<Arc<dyn JobLauncher>>>,
    /// Where jobs go when the launcher may not start them (systemd refusing kilnd).
    fallback: Mutex<Option<Arc<dyn JobLauncher>>>,
    /// A launcher given at construction (tests' fakes); `None`: chosen by `[jobs] launcher`.
    given: Option<Arc<dyn JobLauncher>>,
}

impl JobsHub {
    pub(crate) fn new(
        core: Arc<Core>,
        storage: Arc<StorageHub>,
        devices: Arc<DeviceHub>,
        given: Option<Arc<dyn JobLauncher>>,
    ) -> JobsHub {
        JobsHub {
            core,
            storage,
            devices,
            state: Mutex::new(HubState::default()),
            ops: tokio::sync::Mutex::new(()),
            kick: Notify::new(),
            launcher: std::sync::RwLock::new(None),
            fallback: Mutex::new(None),
            given,
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn launcher(&self) -> Option<Arc<dyn JobLauncher>> {
        self.launcher
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_launcher(&self, l: Arc<dyn JobLauncher>) {
        *self.launcher.write().unwrap_or_else(|p| p.into_inner()) = Some(l);
    }
}

fn job_err(e: JobError) -> EngineError {
    let kind = match e.kind {
        JobErrorKind::Invalid => ErrorKind::InvalidArgument,
        JobErrorKind::NotFound => ErrorKind::NotFound,
        JobErrorKind::State => ErrorKind::FailedPrecondition,
        JobErrorKind::Denied => ErrorKind::PermissionDenied,
        JobErrorKind::Spawn | JobErrorKind::Io => ErrorKind::Internal,
    };
    EngineError::new(kind, e.message)
}

fn now() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// cgroup CPU weight from priority: 0 → 100, +100 → 1000, -100 → 10.
fn cpu_weight(priority: i32) -> u64 {
    let p = priority.clamp(-100, 100) as i64;
    (if p >= 0 {
        100 + 9 * p
    } else {
        100 + 9 * p / 10
    }) as u64
}

/// The job's owner, root, or kilnd itself (an internal caller).
fn owner_or_admin(caller: &Caller, owner: Option<u32>) -> bool {
    caller.transport == crate::auth::Transport::Internal
        || caller.uid == Some(0)
        || owner.is_none()
        || caller.uid == owner
}

/// What `caller` may see of a job: its environment values are its owner's (and root's);
/// others see the names with the values replaced.
pub fn redacted_for(caller: &Caller, mut job: JobInfo) -> JobInfo {
    if !owner_or_admin(caller, job.owner_uid) {
        for v in job.spec.env.values_mut() {
            *v = "<redacted>".into();
        }
    }
    job
}

fn final_state(exit: &ExitRecord) -> JobState {
    if exit.success() {
        JobState::Succeeded
    } else if exit.reason == "cancelled" {
        JobState::Cancelled
    } else {
        JobState::Failed
    }
}

impl JobsHub {
    /// CPU ids per requested kind, limited to CPUs this process can use.
    fn job_cpu_set(&self, kind: Option<CpuKind>) -> Vec<usize> {
        let sets = self.devices.cpu_sets();
        let usable = &self.core.threads().usable;
        let mut v = match kind {
            Some(CpuKind::Performance) => sets.performance,
            Some(CpuKind::Efficiency) => sets.efficiency,
            Some(CpuKind::LowPower) => sets.low_power,
            None => {
                let mut all = sets.performance;
                all.extend(sets.efficiency);
                all.extend(sets.low_power);
                all
            }
        };
        v.retain(|c| usable.contains(c));
        v.sort_unstable();
        v
    }

    fn job_limits(&self) -> Limits {
        let n = |k| self.job_cpu_set(k).len() as u32;
        Limits::new(
            self.core.budget().status().budget_bytes,
            n(Some(CpuKind::Performance)),
            n(Some(CpuKind::Efficiency)),
            n(Some(CpuKind::LowPower)),
            n(None),
        )
    }

    fn job_info(&self, r: JobRow) -> Result<JobInfo, EngineError> {
        let checkpoints = db::checkpoints(self.core.db(), r.id)?;
        let running = r.state == JobState::Running;
        let progress = if running {
            std::fs::read_to_string(PathBuf::from(&r.run_dir).join("progress"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .map(|l| l.trim().chars().take(200).collect())
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        let st = r.started.as_ref();
        Ok(JobInfo {
            id: r.id,
            name: r.name,
            state: r.state,
            detail: r.detail,
            spec: r.spec,
            owner_uid: r.owner_uid,
            submitted_at: r.submitted_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            pid: st.filter(|_| running).map(|s| s.pid),
            cpus: st.map(|s| s.cpus.clone()).unwrap_or_default(),
            memory_limit: st.map(|s| s.memory_limit.clone()).unwrap_or_default(),
            memory_used_bytes: st
                .filter(|_| running)
                .and_then(|s| self.launcher()?.memory_used(s)),
            progress,
            exit_code: r.exit.as_ref().and_then(|e| e.code),
            signal: r.exit.as_ref().and_then(|e| e.signal),
            log_path: r.log_path,
            checkpoint_dir: r.checkpoint_dir,
            checkpoints,
            unit: r.record.and_then(|r| r.unit),
        })
    }

    pub fn get_job(&self, id: u64) -> Result<JobInfo, EngineError> {
        let row = db::get(self.core.db(), id)?.ok_or_else(|| {
            EngineError::not_found(format!("no job {id}; `kilnctl jobs list` shows the jobs"))
        })?;
        self.job_info(row)
    }

    /// One job as `caller` may see it ([`redacted_for`]).
    pub fn job_for(&self, caller: &Caller, id: u64) -> Result<JobInfo, EngineError> {
        self.get_job(id).map(|j| redacted_for(caller, j))
    }

    /// The newest 500 jobs as `caller` may see them ([`redacted_for`]).
    pub fn jobs_for(&self, caller: &Caller) -> Result<Vec<JobInfo>, EngineError> {
        Ok(self
            .list_jobs()?
            .into_iter()
            .map(|j| redacted_for(caller, j))
            .collect())
    }

    /// The newest 500 jobs, newest first.
    pub fn list_jobs(&self) -> Result<Vec<JobInfo>, EngineError> {
        db::list(self.core.db(), 500)?
            .into_iter()
            .map(|r| self.job_info(r))
            .collect()
    }

    fn publish(&self, id: u64) {
        if let Ok(info) = self.get_job(id) {
            self.core.events().publish(Event::Job(Box::new(info)));
        }
    }

    /// Validate, store and queue a job; it starts at once when the budget allows.
    /// Queue a job. Every transport hands over a [`JobRequest`]; the defaults are filled in
    /// here, the same for all of them.
    pub async fn submit_job(
        &self,
        caller: &Caller,
        request: JobRequest,
    ) -> Result<JobInfo, EngineError> {
        let args = format!(
            "{:?} memory={} device={}",
            request.argv,
            request
                .memory_bytes
                .filter(|m| *m > 0)
                .unwrap_or(self.core.config().jobs.default_memory_bytes),
            request.device.as_deref().unwrap_or("cpu")
        );
        let default_memory = self.core.config().jobs.default_memory_bytes;
        self.core
            .authorised(
                caller,
                Action::ManageJobs,
                "SubmitJob",
                &args,
                || async {
                    let spec = request.into_spec(default_memory).map_err(job_err)?;
                    self.submit_authorized(caller, spec).await
                },
                |j| format!("job {} {}", j.id, j.state),
            )
            .await
    }

    async fn submit_authorized(
        &self,
        caller: &Caller,
        mut spec: JobSpec,
    ) -> Result<JobInfo, EngineError> {
        spec.validate(&self.job_limits()).map_err(job_err)?;
        if self.launcher().is_none() {
            return Err(EngineError::unavailable(
                "jobs are not running in this daemon (start_jobs was not called)",
            ));
        }
        let storage = self.storage.port().map_err(|e| {
            EngineError::unavailable(format!(
                "jobs need the checkpoints and logs datasets: {}",
                e.message
            ))
        })?;
        let jobs_dir = self.core.config().daemon.state_dir.join("jobs");
        let logs = storage.dataset_path(Dataset::Logs).join("jobs");
        let ckpts = storage.dataset_path(Dataset::Checkpoints);
        let id = db::insert(self.core.db(), &spec, caller.uid, &now(), |id| {
            (
                jobs_dir.join(id.to_string()).to_string_lossy().into_owned(),
                logs.join(format!("job-{id}.log"))
                    .to_string_lossy()
                    .into_owned(),
                ckpts
                    .join(format!("job-{id}"))
                    .to_string_lossy()
                    .into_owned(),
            )
        })?;
        {
            let mut st = self.st();
            st.queue.push(id, spec.priority, spec.memory_bytes);
            st.queued.insert(id, spec);
        }
        tracing::info!(job = id, "job submitted");
        self.admit_jobs().await;
        self.publish(id);
        self.get_job(id)
    }

    /// One admission pass: start every queued job that fits, in priority order.
    async fn admit_jobs(&self) {
        let _ops = self.ops.lock().await;
        let cfg = self.core.config().jobs;
        let on_battery = self.devices.inventory().power.source == kiln_hal::PowerSource::Battery;
        let ledger = self.core.budget().clone();
        let mut waits = Vec::new();
        let started = {
            let mut guard = self.st();
            let st = &mut *guard;
            let specs = &st.queued;
            st.queue.admit(|q| {
                let Some(spec) = specs.get(&q.id) else {
                    return Admit::Wait("queued".into());
                };
                let why = if cfg.defer_gpu_on_battery && on_battery && spec.device == Device::Gpu && spec.training {
                    Some("deferred: GPU training waits while on battery power ([jobs] defer_gpu_on_battery)".to_string())
                } else {
                    match ledger.reserve(&format!("job {} ({})", q.id, spec.name), q.memory_bytes) {
                        Ok(r) => return Admit::Start(r),
                        Err(e @ Refusal::Pressure { .. }) => Some(format!("queued: {e}")),
                        Err(_) => Some(format!(
                            "queued: waiting for {} of the UMA budget ({} free now)",
                            gib(q.memory_bytes),
                            gib(ledger.free_bytes())
                        )),
                    }
                };
                let why = why.unwrap_or_default();
                if q.waiting_for != why {
                    waits.push((q.id, why.clone()));
                }
                Admit::Wait(why)
            })
        };
        for (id, why) in waits {
            let _ = db::set_state(self.core.db(), id, JobState::Queued, &why);
            self.publish(id);
        }
        for (id, res) in started {
            let spec = self.st().queued.remove(&id);
            if let Some(spec) = spec {
                self.launch_job(id, spec, res).await;
            }
        }
    }

    async fn launch_job(&self, id: u64, spec: JobSpec, reservation: Reservation) {
        let row = match db::get(self.core.db(), id) {
            Ok(Some(r)) => r,
            _ => return,
        };
        let cfg = self.core.config();
        // Least-used CPUs of the requested kind.
        let mut set = self.job_cpu_set(spec.cpus.kind);
        // `any` without a count still gets an explicit mask: every CPU kilnd may use, not
        // the background CPUs its supervising thread runs on.
        let pinned = !(spec.cpus.kind.is_none() && spec.cpus.count == 0);
        let cpus = if spec.cpus.count == 0 {
            set
        } else {
            let st = self.st();
            let load = |c: &usize| st.running.values().filter(|r| r.cpus.contains(c)).count();
            set.sort_by_key(|c| (load(c), *c));
            let mut v: Vec<usize> = set.into_iter().take(spec.cpus.count as usize).collect();
            v.sort_unstable();
            v
        };
        let ckpt = PathBuf::from(&row.checkpoint_dir);
        let run_dir = PathBuf::from(&row.run_dir);
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
        env.insert("LANG".into(), "C.UTF-8".into());
        if let Ok(h) = std::env::var("HOME") {
            env.insert("HOME".into(), h);
        }
        if pinned && !cpus.is_empty() {
            env.insert("OMP_NUM_THREADS".into(), cpus.len().to_string());
        }
        env.extend(spec.env.clone());
        env.insert("KILN_JOB_ID".into(), id.to_string());
        env.insert("KILN_JOB_NAME".into(), spec.name.clone());
        env.insert("KILN_DEVICE".into(), spec.device.as_str().to_uppercase());
        env.insert(
            "KILN_CHECKPOINT_DIR".into(),
            ckpt.to_string_lossy().into_owned(),
        );
        env.insert(
            "KILN_PROGRESS_FILE".into(),
            run_dir.join("progress").to_string_lossy().into_owned(),
        );
        let plan = LaunchPlan {
            job_id: id,
            name: spec.name.clone(),
            argv: spec.argv.clone(),
            workdir: spec.workdir.clone().unwrap_or_else(|| ckpt.clone()),
            env,
            cpus: cpus.clone(),
            memory_bytes: spec.memory_bytes,
            cpu_weight: cpu_weight(spec.priority),
            max_runtime_s: spec.max_runtime_s,
            grace_ms: cfg.jobs.grace_ms,
            log_path: PathBuf::from(&row.log_path),
            checkpoint_dir: ckpt,
            run_dir,
            cgroup: true,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        };
        let _ = db::set_state(self.core.db(), id, JobState::Starting, "starting");
        let Some(launcher) = self.launcher() else {
            return;
        };
        let result = match self.start_on(launcher, plan.clone()).await {
            Err(e) if e.kind == PortKind::PermissionDenied => match self.fall_back(&e) {
                Some(fallback) => self.start_on(fallback, plan).await,
                None => Err(e),
            },
            r => r,
        };
        match result {
            Ok(handle) => {
                let started = handle.started();
                let _ = db::set_running(self.core.db(), id, handle.record(), started, &now());
                tracing::info!(job = id, pid = started.pid, cpus = %started.cpus, memory = %started.memory_limit, "job running");
                self.st().running.insert(
                    id,
                    Running {
                        handle,
                        _reservation: Some(reservation),
                        cpus,
                        snapshots: Vec::new(),
                    },
                );
            }
            Err(e) => {
                tracing::warn!(job = id, error = %e, "job did not start");
                let _ = db::set_finished(
                    self.core.db(),
                    id,
                    JobState::Failed,
                    &e.message,
                    None,
                    &now(),
                );
                drop(reservation);
            }
        }
        self.publish(id);
    }

    /// Continue the job ids past the highest one the logs and checkpoints datasets name
    /// (`job-<id>.log`, `job-<id>/`, `job-<id>-ckpt-<n>`), so a fresh `state.db` over old
    /// datasets never hands a new job an old job's log, directory or snapshot names.
    fn skip_ids_the_datasets_hold(&self) {
        let Ok(storage) = self.storage.port() else {
            return;
        };
        let mut highest = 0u64;
        let mut see = |name: &str| {
            let digits: String = name
                .strip_prefix("job-")
                .unwrap_or("")
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(n) = digits.parse::<u64>() {
                highest = highest.max(n);
            }
        };
        for dir in [
            storage.dataset_path(Dataset::Logs).join("jobs"),
            storage.dataset_path(Dataset::Checkpoints),
        ] {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                see(&e.file_name().to_string_lossy());
            }
        }
        for s in storage
            .list_snapshots(Some(Dataset::Checkpoints))
            .unwrap_or_default()
        {
            see(&s.name);
        }
        if highest > 0 {
            match db::skip_ids_through(self.core.db(), highest) {
                Ok(()) => tracing::debug!(highest, "job ids continue past the datasets' jobs"),
                Err(e) => tracing::warn!(error = %e, "cannot move the job id sequence"),
            }
        }
    }

    /// Cancel a queued job (removed) or a running one (SIGTERM, SIGKILL after the grace period).
    pub async fn cancel_job(&self, caller: &Caller, id: u64) -> Result<JobInfo, EngineError> {
        self.core
            .authorised(
                caller,
                Action::ManageJobs,
                "CancelJob",
                &id.to_string(),
                || self.cancel_authorized(caller, id),
                |_| String::new(),
            )
            .await
    }

    async fn cancel_authorized(&self, caller: &Caller, id: u64) -> Result<JobInfo, EngineError> {
        let _ops = self.ops.lock().await;
        let info = self.get_job(id)?;
        // Managing jobs is not managing everyone's: the owner, root or kilnd itself.
        if !owner_or_admin(caller, info.owner_uid) {
            return Err(EngineError::denied(format!(
                "job {id} belongs to uid {}; only its owner or root may cancel it",
                info.owner_uid.unwrap_or_default()
            )));
        }
        if info.is_finished() {
            return Err(EngineError::precondition(format!(
                "job {id} has already ended ({})",
                info.state
            )));
        }
        let queued = {
            let mut st = self.st();
            st.queued.remove(&id);
            st.queue.remove(id)
        };
        if queued {
            db::set_finished(
                self.core.db(),
                id,
                JobState::Cancelled,
                "cancelled before it started",
                None,
                &now(),
            )?;
        } else {
            let mut st = self.st();
            let Some(r) = st.running.get_mut(&id) else {
                return Err(EngineError::precondition(format!(
                    "job {id} is {}; retry in a moment",
                    info.state
                )));
            };
            r.handle.cancel().map_err(EngineError::from)?;
            drop(st);
            db::set_state(
                self.core.db(),
                id,
                JobState::Running,
                "cancelling: SIGTERM sent, SIGKILL after the grace period",
            )?;
        }
        self.publish(id);
        self.get_job(id)
    }

    /// Snapshot a running job's checkpoint directory now (as if it had set the marker).
    pub async fn checkpoint_job(
        &self,
        caller: &Caller,
        id: u64,
        label: &str,
    ) -> Result<String, EngineError> {
        self.core
            .authorised(
                caller,
                Action::ManageJobs,
                "CheckpointJob",
                &id.to_string(),
                || async {
                    if !self.st().running.contains_key(&id) {
                        let info = self.get_job(id)?;
                        return Err(EngineError::precondition(format!(
                            "job {id} is {}; only a running job can be checkpointed",
                            info.state
                        )));
                    }
                    self.take_checkpoint(id, label.to_string()).await
                },
                |snapshot: &String| snapshot.clone(),
            )
            .await
    }

    async fn take_checkpoint(&self, id: u64, label: String) -> Result<String, EngineError> {
        let storage = self.storage.port()?;
        let seq = db::checkpoints(self.core.db(), id)?.len() as u32 + 1;
        let snap = format!("job-{id}-ckpt-{seq}");
        let tag = format!("kiln-job-{id}");
        // The row first: a crash after the hold then still finds the hold to release when
        // the job ends (a row whose snapshot never came only logs a missing hold).
        db::add_checkpoint(self.core.db(), id, seq, &snap, &label, &now())?;
        let s = snap.clone();
        let taken = tokio::task::spawn_blocking(
            move || -> Result<(), kiln_hal::ports::storage::StorageError> {
                storage.snapshot(Dataset::Checkpoints, &s, false)?;
                storage.hold(Dataset::Checkpoints, &s, &tag)
            },
        )
        .await
        .map_err(|e| EngineError::internal(e.to_string()))
        .and_then(|r| r.map_err(|e| EngineError::internal(format!("checkpoint of job {id}: {e}"))));
        if let Err(e) = taken {
            let _ = db::remove_checkpoint(self.core.db(), id, seq);
            return Err(e);
        }
        if let Some(r) = self.st().running.get_mut(&id) {
            r.snapshots.push(snap.clone());
        }
        tracing::info!(job = id, snapshot = %snap, "job checkpoint recorded");
        self.publish(id);
        Ok(snap)
    }

    fn release_holds(&self, id: u64, snaps: Vec<String>) {
        let Ok(storage) = self.storage.port() else {
            return;
        };
        let tag = format!("kiln-job-{id}");
        for s in snaps {
            if let Err(e) = storage.release(Dataset::Checkpoints, &s, &tag) {
                tracing::warn!(job = id, snapshot = %s, error = %e, "could not release checkpoint hold");
            }
        }
    }

    fn finish_job(&self, id: u64, exit: &ExitRecord, snaps: Vec<String>) {
        let state = final_state(exit);
        let _ = db::set_finished(
            self.core.db(),
            id,
            state,
            &exit.summary(),
            Some(exit),
            &now(),
        );
        self.release_holds(id, snaps);
        tracing::info!(job = id, state = state.as_str(), detail = %exit.summary(), "job ended");
        self.publish(id);
    }

    /// Check running jobs once: exits and checkpoint markers.
    async fn check_running(&self) {
        let mut ended = Vec::new();
        let mut ckpts = Vec::new();
        let Some(launcher) = self.launcher() else {
            return;
        };
        {
            let mut st = self.st();
            for (id, r) in st.running.iter_mut() {
                let marker = |r: &Running| {
                    launcher.take_checkpoint_request(&r.handle.record().checkpoint_dir)
                };
                // A marker set just before exit is still honoured.
                if let Some(label) = marker(r) {
                    ckpts.push((*id, label));
                }
                if let Some(exit) = r.handle.poll() {
                    // A marker written between the check above and the exit.
                    if let Some(label) = marker(r) {
                        ckpts.push((*id, label));
                    }
                    ended.push((*id, exit));
                }
            }
        }
        for (id, label) in ckpts {
            if let Err(e) = self.take_checkpoint(id, label).await {
                tracing::warn!(job = id, error = %e, "checkpoint failed");
                let _ = db::set_state(
                    self.core.db(),
                    id,
                    JobState::Running,
                    &format!("running; last checkpoint failed: {e}"),
                );
            }
        }
        for (id, exit) in ended {
            let r = self.st().running.remove(&id);
            // Dropping `r` releases the memory reservation exactly once.
            let snaps = r.map(|r| r.snapshots).unwrap_or_default();
            self.finish_job(id, &exit, snaps);
        }
    }

    /// Start a job on `launcher` (a blocking call, off the async workers).
    async fn start_on(
        &self,
        launcher: Arc<dyn JobLauncher>,
        plan: LaunchPlan,
    ) -> Result<Box<dyn RunningJob>, PortError> {
        tokio::task::spawn_blocking(move || launcher.start(&plan))
            .await
            .unwrap_or_else(|e| {
                Err(PortError::internal(format!(
                    "the job start task failed: {e}"
                )))
            })
    }

    /// The launcher refused to start jobs for kilnd (systemd without the polkit grant):
    /// use the fallback from now on (until kilnd restarts) and say why in status.
    fn fall_back(&self, e: &PortError) -> Option<Arc<dyn JobLauncher>> {
        let fallback = self
            .fallback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        self.set_launcher(fallback.clone());
        let detail = format!(
            "{}: {}. Jobs stop when kilnd stops; to run them as systemd units allow user kiln \
             org.freedesktop.systemd1.manage-units (docs/jobs.md, Under systemd) and restart kilnd",
            fallback.describe(),
            e.message
        );
        tracing::warn!("{detail}");
        self.core
            .set_component("jobs", crate::ComponentState::Degraded, detail);
        Some(fallback)
    }

    /// The launcher given at construction (tests' fakes), if any.
    pub(crate) fn given(&self) -> Option<Launchers> {
        self.given.as_ref().map(|l| Launchers {
            active: l.clone(),
            fallback: None,
            degraded: None,
        })
    }

    /// Start job handling on `chosen`: re-adopt jobs left by a previous daemon, requeue
    /// waiting ones and run the scheduler. Call once, inside the runtime.
    pub async fn start_jobs(self: &Arc<Self>, chosen: Launchers) {
        match &chosen.degraded {
            Some(why) => {
                self.core
                    .set_component("jobs", crate::ComponentState::Degraded, why.clone())
            }
            None => {
                self.core
                    .set_component("jobs", crate::ComponentState::Ok, chosen.active.describe())
            }
        }
        self.set_launcher(chosen.active);
        *self.fallback.lock().unwrap_or_else(|p| p.into_inner()) = chosen.fallback;
        self.skip_ids_the_datasets_hold();
        self.recover_jobs().await;
        let me = self.clone();
        tokio::spawn(async move {
            let every = Duration::from_millis(me.core.config().jobs.poll_interval_ms);
            loop {
                let ledger = me.core.budget().clone();
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = me.kick.notified() => {}
                    _ = ledger.changed() => {}
                }
                me.check_running().await;
                if !me.st().queue.is_empty() {
                    me.admit_jobs().await;
                }
            }
        });
    }

    async fn recover_jobs(&self) {
        let rows = match db::unfinished(self.core.db()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read jobs to recover");
                return;
            }
        };
        for row in rows {
            let id = row.id;
            match row.state {
                JobState::Queued => {
                    let mut st = self.st();
                    st.queue.push(id, row.spec.priority, row.spec.memory_bytes);
                    st.queued.insert(id, row.spec);
                    continue;
                }
                JobState::Starting if row.record.is_none() => {
                    // Died between launch and the running row: the shim may have started.
                    let found = self.launcher().and_then(|l| {
                        l.started_record(
                            id,
                            Path::new(&row.run_dir),
                            Path::new(&row.checkpoint_dir),
                        )
                    });
                    match found {
                        Some((rec, s)) => {
                            let _ = db::set_running(self.core.db(), id, &rec, &s, &now());
                            self.readopt_one(id, &row.spec, rec).await;
                        }
                        None => {
                            let _ = db::set_finished(
                                self.core.db(),
                                id,
                                JobState::Failed,
                                "kilnd stopped while starting this job and it never ran; submit it again",
                                None,
                                &now(),
                            );
                            self.publish(id);
                        }
                    }
                }
                _ => match row.record.clone() {
                    Some(rec) => self.readopt_one(id, &row.spec, rec).await,
                    None => {
                        let _ = db::set_finished(
                            self.core.db(),
                            id,
                            JobState::Failed,
                            "no supervisor record was stored; the job cannot be found",
                            None,
                            &now(),
                        );
                    }
                },
            }
        }
    }

    async fn readopt_one(&self, id: u64, spec: &JobSpec, rec: JobRecord) {
        let snaps: Vec<String> = db::checkpoints(self.core.db(), id)
            .map(|v| v.into_iter().map(|c| c.snapshot).collect())
            .unwrap_or_default();
        let ckpt_dir = rec.checkpoint_dir.clone();
        let Some(launcher) = self.launcher() else {
            return;
        };
        let l = launcher.clone();
        let r = tokio::task::spawn_blocking(move || l.adopt(&rec)).await;
        match r {
            Ok(Adopted::Running(handle)) => {
                let reservation = match self
                    .core
                    .budget()
                    .reserve(&format!("job {id} ({})", spec.name), spec.memory_bytes)
                {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(job = id, error = %e, "re-adopted job runs without a budget reservation");
                        None
                    }
                };
                tracing::info!(
                    job = id,
                    pid = handle.started().pid,
                    "re-adopted running job"
                );
                let cpus = kiln_hal::parse_cpu_list(&handle.started().cpus).unwrap_or_default();
                self.st().running.insert(
                    id,
                    Running {
                        handle,
                        _reservation: reservation,
                        cpus,
                        snapshots: snaps,
                    },
                );
                let _ = db::set_state(
                    self.core.db(),
                    id,
                    JobState::Running,
                    "running (re-adopted after a daemon restart)",
                );
                self.publish(id);
            }
            Ok(Adopted::Finished(exit)) => {
                // A checkpoint asked for while kilnd was away is still recorded.
                let mut snaps = snaps;
                if let Some(label) = launcher.take_checkpoint_request(&ckpt_dir) {
                    match self.take_checkpoint(id, label).await {
                        Ok(s) => snaps.push(s),
                        Err(e) => tracing::warn!(job = id, error = %e, "checkpoint failed"),
                    }
                }
                self.finish_job(id, &exit, snaps)
            }
            Ok(Adopted::Lost(why)) => {
                let _ = db::set_finished(
                    self.core.db(),
                    id,
                    JobState::Failed,
                    &why,
                    Some(&ExitRecord::lost(why.clone())),
                    &now(),
                );
                self.release_holds(id, snaps);
                self.publish(id);
            }
            Err(e) => tracing::error!(job = id, error = %e, "re-adopt task failed"),
        }
    }

    /// The job's output: what is there now and, with `follow`, new output until it ends.
    pub fn job_logs(
        self: &Arc<Self>,
        id: u64,
        follow: bool,
    ) -> Result<mpsc::Receiver<Result<Vec<u8>, EngineError>>, EngineError> {
        let info = self.get_job(id)?;
        let path = PathBuf::from(&info.log_path);
        let (tx, rx) = mpsc::channel(16);
        let me = self.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut offset: u64 = 0;
            loop {
                let mut sent_any = false;
                if let Ok(mut f) = tokio::fs::File::open(&path).await {
                    use tokio::io::AsyncSeekExt;
                    if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match f.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    offset += n as u64;
                                    sent_any = true;
                                    if tx.send(Ok(buf[..n].to_vec())).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                }
                if !follow {
                    return;
                }
                let done = me.get_job(id).map(|j| j.is_finished()).unwrap_or(true);
                if done && !sent_any {
                    return;
                }
                if !done {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Engine;

    struct NoLive;
    impl crate::engine::LiveSettings for NoLive {
        fn set_log_level(&self, _: &str) -> Result<(), String> {
            Ok(())
        }
    }

    fn member(uid: u32) -> Caller {
        Caller {
            transport: crate::auth::Transport::Grpc,
            uid: Some(uid),
            gid: Some(0),
            pid: Some(1),
            bus_name: None,
        }
    }

    #[tokio::test]
    async fn only_the_owner_or_root_cancels_a_job() {
        let t = tempfile::tempdir().unwrap();
        let main = t.path().join("kiln.toml");
        std::fs::write(
            &main,
            format!(
                "[storage]\nroot = \"{}\"\n[budget]\nconservative_bytes = 1073741824\n",
                t.path().join("data").display()
            ),
        )
        .unwrap();
        let sources =
            crate::config::ConfigSources::new(Some(main), crate::config::Overrides::default());
        let loaded = crate::config::load(&sources).unwrap();
        let db = crate::state::StateDb::open(&t.path().join("state")).unwrap();
        // Members of group root (gid 0) may manage jobs.
        let e = Engine::new(
            loaded,
            sources,
            db,
            Box::new(crate::auth::GroupAuthority::new("root")),
            Box::new(NoLive),
        )
        .unwrap();
        e.start_jobs(ShimCommand {
            program: "/bin/false".into(),
            args: Vec::new(),
        })
        .await;
        // The budget is taken, so the jobs stay queued.
        let _hog = e.budget().reserve("test", e.budget().free_bytes()).unwrap();
        let request = || JobRequest {
            argv: vec!["/bin/true".into()],
            memory_bytes: Some(64 << 20),
            env: [("TOKEN".to_string(), "s3cret".to_string())].into(),
            ..Default::default()
        };
        let (alice, bob) = (member(60001), member(60002));
        let a = e.submit_job(&alice, request()).await.unwrap();
        assert_eq!(a.state, JobState::Queued, "{a:?}");
        // Env values are the owner's (and root's) to read.
        let env = async |c: &Caller| e.job_for(c, a.id).await.unwrap().spec.env["TOKEN"].clone();
        assert_eq!(env(&alice).await, "s3cret");
        assert_eq!(env(&member(0)).await, "s3cret");
        assert_eq!(env(&bob).await, "<redacted>");
        assert!(
            e.jobs_for(&bob)
                .await
                .unwrap()
                .iter()
                .all(|j| j.spec.env["TOKEN"] == "<redacted>")
        );
        // Someone outside the managing group may not read jobs at all.
        let outsider = Caller {
            gid: Some(60003),
            ..member(60003)
        };
        let err = e.job_for(&outsider, a.id).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err:?}");
        assert!(e.jobs_for(&outsider).await.is_err());
        let denied = e.cancel_job(&bob, a.id).await.unwrap_err();
        assert_eq!(denied.kind, ErrorKind::PermissionDenied);
        assert!(denied.message.contains("uid 60001"), "{}", denied.message);
        assert_eq!(e.get_job(a.id).unwrap().state, JobState::Queued);
        assert_eq!(
            e.cancel_job(&alice, a.id).await.unwrap().state,
            JobState::Cancelled
        );
        let b = e.submit_job(&bob, request()).await.unwrap();
        assert_eq!(
            e.cancel_job(&member(0), b.id).await.unwrap().state,
            JobState::Cancelled
        );
        let audit = e.db().recent_audit(10).unwrap();
        let denied: Vec<_> = audit
            .iter()
            .filter(|r| r.action == "CancelJob" && r.result == "PermissionDenied")
            .collect();
        assert_eq!((denied.len(), denied[0].caller_uid), (1, Some(60002)));
    }

    #[test]
    fn weights_and_config_checks() {
        assert_eq!(cpu_weight(0), 100);
        assert_eq!(cpu_weight(100), 1000);
        assert_eq!(cpu_weight(-100), 10);
        assert!(JobsConfig::default().validate().is_ok());
        let bad = JobsConfig {
            launcher: "docker".into(),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("jobs.launcher"));
    }
}
