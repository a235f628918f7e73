//! kiln-jobs: training and batch jobs as supervised processes. [`spec`] says what a job
//! is and refuses bad ones; [`queue`] orders them by priority with budget-aware
//! admission supplied by the caller; [`supervisor`] starts each job under a small
//! [`shim`] (directly or as a systemd transient unit, [`systemd`]) that pins it, limits
//! its memory ([`cgroup`] or rlimit), logs it, cancels it and records its exit; and
//! [`supervisor::readopt`] finds running jobs again after a daemon restart. Independent
//! of the engine: it never touches the budget ledger, the database or storage itself.

pub mod cgroup;
pub mod error;
pub mod launch;
pub mod launcher;
pub mod queue;
pub mod shim;
pub mod spec;
pub mod supervisor;
#[cfg(feature = "systemd")]
pub mod systemd;

pub use error::{JobError, JobErrorKind};
pub use launch::{CHECKPOINT_MARKER, ExitRecord, LaunchPlan, StartedInfo};
pub use launcher::ForkLauncher;
#[cfg(feature = "systemd")]
pub use launcher::SystemdLauncher;
pub use queue::{Admit, JobQueue, Queued};
pub use spec::{
    CpuKind, CpuRequest, Device, JobSpec, Limits, Placement, cpu_kind_name, gib, parse_device,
    parse_memory,
};
pub use supervisor::{
    JobHandle, JobRecord, Readopt, ShimCommand, readopt, spawn, take_checkpoint_request,
};
