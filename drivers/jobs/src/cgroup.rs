//! A per-job cgroup with a memory limit, where the machine lets us create one:
//! cgroup v2 (`memory.max`, `cpu.weight`) when the memory controller is available
//! below our own cgroup, else the cgroup v1 memory hierarchy (`memory.limit_in_bytes`)
//! on hybrid machines, else nothing (the caller falls back to rlimits and says so).
//! Touches only `<cgroup root>/**/kiln-job-<id>-<shim pid>` directories it creates.

use std::fs;
use std::path::{Path, PathBuf};

/// A cgroup made for one job.
#[derive(Debug, Clone)]
pub struct JobCgroup {
    pub dir: PathBuf,
    pub version: u8,
    /// What was applied, e.g. "cgroup v2 memory.max=1073741824 cpu.weight=100".
    pub applied: String,
}

fn own_cgroup_paths() -> Vec<(String, String)> {
    // Lines "id:controllers:path".
    fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _ = it.next()?;
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

fn join(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches('/'))
}

/// Create the job's cgroup. `Err` says why none could be made (all attempts).
pub fn create(root: &Path, job_id: u64, memory: u64, cpu_weight: u64) -> Result<JobCgroup, String> {
    let paths = own_cgroup_paths();
    // The shim pid keeps names unique when several daemons (tests) share a parent cgroup.
    let name = format!("kiln-job-{job_id}-{}", std::process::id());
    let mut why = Vec::new();
    // cgroup v2: unified at the root, or at <root>/unified on hybrid machines.
    if let Some((_, rel)) = paths.iter().find(|(c, _)| c.is_empty()) {
        for mount in [root.to_path_buf(), root.join("unified")] {
            if !mount.join("cgroup.controllers").exists() {
                continue;
            }
            let parent = join(&mount, rel);
            match v2(&parent, &name, memory, cpu_weight) {
                Ok(cg) => return Ok(cg),
                Err(e) => why.push(format!("cgroup v2 at {}: {e}", parent.display())),
            }
        }
    }
    if let Some((_, rel)) = paths
        .iter()
        .find(|(c, _)| c.split(',').any(|x| x == "memory"))
    {
        let parent = join(&root.join("memory"), rel);
        match v1(&parent, &name, memory) {
            Ok(cg) => return Ok(cg),
            Err(e) => why.push(format!("cgroup v1 memory at {}: {e}", parent.display())),
        }
    }
    if why.is_empty() {
        why.push(format!(
            "no cgroup hierarchy with a memory controller under {}",
            root.display()
        ));
    }
    Err(why.join("; "))
}

/// The cgroup this process already runs in (a systemd unit's), if it enforces a memory
/// limit of at most `memory` (rounded up to a page): used to detect the job being killed
/// by that limit; never destroyed.
pub fn enclosing(root: &Path, memory: u64) -> Option<JobCgroup> {
    let paths = own_cgroup_paths();
    let within = |file: PathBuf| -> Option<u64> {
        let limit: u64 = fs::read_to_string(file).ok()?.trim().parse().ok()?;
        (limit <= memory.div_ceil(4096) * 4096).then_some(limit)
    };
    if let Some((_, rel)) = paths.iter().find(|(c, _)| c.is_empty()) {
        for mount in [root.to_path_buf(), root.join("unified")] {
            let dir = join(&mount, rel);
            if let Some(limit) = within(dir.join("memory.max")) {
                return Some(JobCgroup {
                    dir,
                    version: 2,
                    applied: format!("systemd MemoryMax={limit} (cgroup v2)"),
                });
            }
        }
    }
    let (_, rel) = paths
        .iter()
        .find(|(c, _)| c.split(',').any(|x| x == "memory"))?;
    let dir = join(&root.join("memory"), rel);
    let limit = within(dir.join("memory.limit_in_bytes"))?;
    Some(JobCgroup {
        dir,
        version: 1,
        applied: format!("systemd MemoryMax={limit} (cgroup v1)"),
    })
}

fn v2(parent: &Path, name: &str, memory: u64, cpu_weight: u64) -> Result<JobCgroup, String> {
    let controllers =
        fs::read_to_string(parent.join("cgroup.controllers")).map_err(|e| e.to_string())?;
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err("the memory controller is not delegated here".into());
    }
    let sub = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    if !sub.split_whitespace().any(|c| c == "memory") {
        fs::write(parent.join("cgroup.subtree_control"), "+memory")
            .map_err(|e| format!("cannot enable memory for children ({e})"))?;
    }
    let _ = fs::write(parent.join("cgroup.subtree_control"), "+cpu");
    let dir = parent.join(name);
    fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let fail = |e: String| {
        let _ = fs::remove_dir(&dir);
        e
    };
    fs::write(dir.join("memory.max"), memory.to_string())
        .map_err(|e| fail(format!("memory.max: {e}")))?;
    let _ = fs::write(dir.join("memory.swap.max"), "0");
    let mut applied = format!("cgroup v2 memory.max={memory}");
    if fs::write(dir.join("cpu.weight"), cpu_weight.to_string()).is_ok() {
        applied.push_str(&format!(" cpu.weight={cpu_weight}"));
    }
    Ok(JobCgroup {
        dir,
        version: 2,
        applied,
    })
}

fn v1(parent: &Path, name: &str, memory: u64) -> Result<JobCgroup, String> {
    if !parent.join("memory.limit_in_bytes").exists() {
        return Err("no memory.limit_in_bytes (not a v1 memory cgroup)".into());
    }
    let dir = parent.join(name);
    fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    if let Err(e) = fs::write(dir.join("memory.limit_in_bytes"), memory.to_string()) {
        let _ = fs::remove_dir(&dir);
        return Err(format!("memory.limit_in_bytes: {e}"));
    }
    let mut applied = format!("cgroup v1 memory.limit_in_bytes={memory}");
    if fs::write(dir.join("memory.memsw.limit_in_bytes"), memory.to_string()).is_ok() {
        applied.push_str(" memsw");
    }
    Ok(JobCgroup {
        dir,
        version: 1,
        applied,
    })
}

impl JobCgroup {
    /// The file a pid is written to in order to join.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The limit as the kernel reports it now.
    pub fn memory_limit(&self) -> Option<u64> {
        let f = if self.version == 2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        fs::read_to_string(self.dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Did the kernel kill something in this cgroup for exceeding the limit?
    pub fn oom_killed(&self) -> bool {
        let (file, key) = if self.version == 2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let text = fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        let kills = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.trim().parse::<u64>().ok());
        match kills {
            Some(n) => n > 0,
            None if self.version == 1 => fs::read_to_string(self.dir.join("memory.failcnt"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0),
            None => false,
        }
    }

    /// Kill whatever is left inside and remove the directory.
    pub fn destroy(&self) {
        for _ in 0..50 {
            let procs = fs::read_to_string(self.procs_file()).unwrap_or_default();
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            for p in &pids {
                // SAFETY: plain kill(2) on pids listed in our own job's cgroup.
                unsafe { libc::kill(*p, libc::SIGKILL) };
            }
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        tracing::warn!(dir = %self.dir.display(), "job cgroup could not be removed");
    }
}
