//! Jobs as systemd transient units: `org.freedesktop.systemd1.Manager.StartTransientUnit`
//! on the system bus, running the job shim as the unit's main process with MemoryMax,
//! AllowedCPUs, CPUWeight and RuntimeMaxSec set, so systemd owns the cgroup. Used when
//! `/run/systemd/system` exists and the bus answers; elsewhere the supervisor forks.
//! The unit runs as kilnd's own user with NoNewPrivileges. Touches only units named
//! `kiln-job-<id>.service`. Starting one needs polkit's
//! `org.freedesktop.systemd1.manage-units`; a refusal comes back as
//! [`JobErrorKind::Denied`](crate::JobErrorKind::Denied).

use std::path::Path;
use std::time::Duration;

use zbus::Variant as Value;

use crate::error::JobError;
use crate::launch::LaunchPlan;
use crate::supervisor::{JobHandle, JobRecord, ShimCommand, prepare, wait_started};

/// True when this machine was booted with systemd (sd_booted semantics).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

pub fn unit_name(job_id: u64) -> String {
    format!("kiln-job-{job_id}.service")
}

/// AllowedCPUs as systemd's byte mask (bit n = CPU n).
pub fn cpu_mask(cpus: &[usize]) -> Vec<u8> {
    let mut m = vec![0u8; cpus.iter().max().map(|m| m / 8 + 1).unwrap_or(0)];
    for c in cpus {
        m[c / 8] |= 1 << (c % 8);
    }
    m
}

/// Start the shim for `plan` as a transient unit; returns the unit name. Follow with
/// [`finish_unit_start`] (blocking) to wait until the job runs.
pub async fn start_unit(
    conn: &zbus::Connection,
    shim: &ShimCommand,
    plan: &LaunchPlan,
) -> Result<String, JobError> {
    let launch = prepare(plan)?;
    let unit = unit_name(plan.job_id);
    let program = shim.program.to_string_lossy().into_owned();
    let mut argv = vec![program.clone()];
    argv.extend(shim.args.iter().cloned());
    argv.push(launch.to_string_lossy().into_owned());
    let grace_us = plan.grace_ms * 1000;
    // SAFETY: geteuid/getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut props: Vec<(&str, Value<'_>)> = vec![
        (
            "Description",
            Value::from(format!("kiln job {} ({})", plan.job_id, plan.name)),
        ),
        ("ExecStart", Value::from(vec![(program, argv, false)])),
        // The job runs as kilnd's own user, never as the service manager's root.
        ("User", Value::from(uid.to_string())),
        ("Group", Value::from(gid.to_string())),
        ("NoNewPrivileges", Value::from(true)),
        ("MemoryMax", Value::from(plan.memory_bytes)),
        ("MemorySwapMax", Value::from(0u64)),
        ("CPUWeight", Value::from(plan.cpu_weight)),
        ("KillMode", Value::from("mixed")),
        ("TimeoutStopUSec", Value::from(grace_us + 5_000_000)),
        ("CollectMode", Value::from("inactive-or-failed")),
    ];
    if !plan.cpus.is_empty() {
        props.push(("AllowedCPUs", Value::from(cpu_mask(&plan.cpus))));
    }
    if plan.max_runtime_s > 0 {
        // The shim enforces max runtime with the grace period; this is the backstop.
        props.push((
            "RuntimeMaxUSec",
            Value::from(plan.max_runtime_s * 1_000_000 + grace_us + 10_000_000),
        ));
    }
    let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
    conn.call_method(
        Some("org.freedesktop.systemd1"),
        "/org/freedesktop/systemd1",
        Some("org.freedesktop.systemd1.Manager"),
        "StartTransientUnit",
        &(unit.as_str(), "fail", props, aux),
    )
    .await
    .map_err(|e| {
        let denied = match &e {
            zbus::Error::FDO(f) => matches!(
                **f,
                zbus::fdo::Error::AccessDenied(_)
                    | zbus::fdo::Error::InteractiveAuthorizationRequired(_)
            ),
            zbus::Error::MethodError(name, _, _) => name.ends_with(".AccessDenied"),
            _ => false,
        };
        let msg = format!("systemd refused to start {unit}: {e}");
        if denied {
            JobError::denied(msg)
        } else {
            JobError::spawn(msg)
        }
    })?;
    Ok(unit)
}

/// Wait until the unit's shim reports the job running.
pub fn finish_unit_start(plan: &LaunchPlan, unit: &str) -> Result<JobHandle, JobError> {
    let started = wait_started(&plan.run_dir, Duration::from_secs(10), || true)
        .map_err(|e| JobError::spawn(format!("{unit}: {}", e.message)))?;
    Ok(JobHandle::adopted(
        JobRecord {
            job_id: plan.job_id,
            run_dir: plan.run_dir.clone(),
            shim_pid: started.shim_pid,
            shim_start_ticks: started.shim_start_ticks,
            pid: started.pid,
            checkpoint_dir: plan.checkpoint_dir.clone(),
            unit: Some(unit.to_string()),
        },
        started,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_mask_sets_one_bit_per_cpu() {
        assert_eq!(super::cpu_mask(&[0, 1, 9]), vec![0b11, 0b10]);
        assert!(super::cpu_mask(&[]).is_empty());
    }
}
