//! Memory section: MemTotal/MemAvailable, PSI pressure, the cgroup limit, and the UMA
//! budget computed from them.
//!
//! Reads `proc/meminfo`, `proc/pressure/memory`, `proc/self/cgroup` and the matching
//! `sys/fs/cgroup/**` files (v2, v1, or hybrid) below the root.

use serde::Serialize;

use crate::budget::{Budget, BudgetPolicy};
use crate::cpu::problem_of;
use crate::tree::{Fault, Node, Problem, Tree, clip};

/// One line of a PSI file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Total stall time in microseconds.
    pub total_us: u64,
}

/// A PSI file (`some` always, `full` for memory and io).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Psi {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    V1,
    V2,
    /// v1 controllers plus a v2 tree at `sys/fs/cgroup/unified`.
    Hybrid,
}

/// The memory cgroup this process runs in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cgroup {
    pub version: CgroupVersion,
    /// Path inside the hierarchy, from `proc/self/cgroup`.
    pub path: String,
    /// Smallest memory limit on the way to the root; `None` when unlimited.
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    /// The cgroup's own `memory.pressure` (v2 and hybrid).
    pub pressure: Option<Psi>,
}

/// The memory section of the inventory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// The budget in force (see [`BudgetPolicy`]).
    pub budget_bytes: u64,
    pub budget: Budget,
    pub psi: Option<Psi>,
    pub cgroup: Option<Cgroup>,
    pub problems: Vec<Problem>,
}

/// Parses a PSI file; `None` names nothing, the caller reports the path.
pub(crate) fn parse_psi(text: &str) -> Option<Psi> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let which = it.next()?;
        let mut l = PsiLine {
            avg10: f64::NAN,
            avg60: f64::NAN,
            avg300: f64::NAN,
            total_us: u64::MAX,
        };
        for kv in it {
            let (k, v) = kv.split_once('=')?;
            match k {
                "avg10" => l.avg10 = v.parse().ok()?,
                "avg60" => l.avg60 = v.parse().ok()?,
                "avg300" => l.avg300 = v.parse().ok()?,
                "total" => l.total_us = v.parse().ok()?,
                _ => {}
            }
        }
        if l.avg10.is_nan() || l.avg60.is_nan() || l.avg300.is_nan() || l.total_us == u64::MAX {
            return None;
        }
        match which {
            "some" => some = Some(l),
            "full" => full = Some(l),
            _ => return None,
        }
    }
    Some(Psi { some: some?, full })
}

fn read_psi(node: &Node, file: &str, problems: &mut Vec<Problem>) -> Option<Psi> {
    match node.opt_text(file) {
        Ok(None) => None,
        Ok(Some(t)) => parse_psi(&t).or_else(|| {
            problems.push(Problem {
                path: node.dir().join(file).display().to_string(),
                reason: format!(
                    "expected PSI lines like \"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\", found {:?}",
                    clip(&t)
                ),
            });
            None
        }),
        Err(f) => {
            problems.push(problem_of(f));
            None
        }
    }
}

/// Values at or above this in v1 `memory.limit_in_bytes` mean "no limit".
const V1_UNLIMITED: u64 = 1 << 60;

fn cgroup(tree: &Tree, problems: &mut Vec<Problem>) -> Option<Cgroup> {
    let text = match tree.read("proc/self/cgroup") {
        Ok(t) => t,
        Err(f) => {
            problems.push(problem_of(f));
            return None;
        }
    };
    let mut v2_path = None;
    let mut v1_mem = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            problems.push(Problem {
                path: tree.path("proc/self/cgroup").display().to_string(),
                reason: format!(
                    "expected \"id:controllers:path\" lines, found {:?}",
                    clip(line)
                ),
            });
            return None;
        };
        if id == "0" && ctrls.is_empty() {
            v2_path = Some(path.to_string());
        } else if ctrls.split(',').any(|c| c == "memory") {
            v1_mem = Some(path.to_string());
        }
    }
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    // Smallest limit on the way from the cgroup up to the hierarchy root.
    let walk = |base: &str, path: &str, file: &str, problems: &mut Vec<Problem>| -> Option<u64> {
        let mut best: Option<u64> = None;
        let mut cur = std::path::PathBuf::from(rel(path));
        loop {
            let node = tree.node(std::path::Path::new(base).join(&cur));
            match node.opt_text(file) {
                Ok(Some(t)) if t == "max" => {}
                Ok(Some(t)) => match t.parse::<u64>() {
                    Ok(v) if v < V1_UNLIMITED => best = Some(best.map_or(v, |b| b.min(v))),
                    Ok(_) => {}
                    Err(_) => problems.push(Problem {
                        path: node.dir().join(file).display().to_string(),
                        reason: format!("expected a byte count or \"max\", found {:?}", clip(&t)),
                    }),
                },
                Ok(None) | Err(Fault::Gone(_)) => {}
                Err(f) => problems.push(problem_of(f)),
            }
            if !cur.pop() {
                break;
            }
        }
        best
    };
    let usage = |dir: &str, file: &str, problems: &mut Vec<Problem>| {
        let node = tree.node(dir);
        if !node.dir().exists() {
            return None;
        }
        node.opt_u64(file).unwrap_or_else(|f| {
            problems.push(problem_of(f));
            None
        })
    };
    if tree.exists("sys/fs/cgroup/cgroup.controllers") {
        let path = v2_path.unwrap_or_else(|| "/".to_string());
        let dir = format!("sys/fs/cgroup/{}", rel(&path));
        return Some(Cgroup {
            version: CgroupVersion::V2,
            limit_bytes: walk("sys/fs/cgroup", &path, "memory.max", problems),
            usage_bytes: usage(&dir, "memory.current", problems),
            pressure: read_psi(&tree.node(&dir), "memory.pressure", problems),
            path,
        });
    }
    let path = v1_mem?;
    let dir = format!("sys/fs/cgroup/memory/{}", rel(&path));
    let unified = tree.exists("sys/fs/cgroup/unified");
    let pressure = match (&v2_path, unified) {
        (Some(p), true) => read_psi(
            &tree.node(format!("sys/fs/cgroup/unified/{}", rel(p))),
            "memory.pressure",
            problems,
        ),
        _ => None,
    };
    Some(Cgroup {
        version: if unified {
            CgroupVersion::Hybrid
        } else {
            CgroupVersion::V1
        },
        limit_bytes: walk(
            "sys/fs/cgroup/memory",
            &path,
            "memory.limit_in_bytes",
            problems,
        ),
        usage_bytes: usage(&dir, "memory.usage_in_bytes", problems),
        pressure,
        path,
    })
}

/// Builds the memory section. Never fails: problems are listed with their paths.
pub(crate) fn probe(tree: &Tree, policy: &BudgetPolicy) -> Memory {
    let mut problems = Vec::new();
    let meminfo = tree.path("proc/meminfo");
    let (mut total, mut avail) = (None, None);
    match tree.read("proc/meminfo") {
        Ok(text) => {
            for line in text.lines() {
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                let slot = match k.trim() {
                    "MemTotal" => &mut total,
                    "MemAvailable" => &mut avail,
                    _ => continue,
                };
                let num = v.trim().trim_end_matches("kB").trim();
                match num.parse::<u64>() {
                    Ok(kb) => *slot = Some(kb.saturating_mul(1024)),
                    Err(_) => problems.push(Problem {
                        path: meminfo.display().to_string(),
                        reason: format!(
                            "{}: expected a size in kB, found {:?}",
                            k.trim(),
                            clip(v.trim())
                        ),
                    }),
                }
            }
            for (name, v) in [("MemTotal", total), ("MemAvailable", avail)] {
                if v.is_none() && !problems.iter().any(|p| p.reason.starts_with(name)) {
                    problems.push(Problem {
                        path: meminfo.display().to_string(),
                        reason: format!("no {name} line (truncated?); re-record the tree"),
                    });
                }
            }
        }
        Err(f) => problems.push(problem_of(f)),
    }
    let psi = read_psi(&tree.node("proc/pressure"), "memory", &mut problems);
    let cgroup = cgroup(tree, &mut problems);
    let total_bytes = total.unwrap_or(0);
    let budget = policy.compute(total_bytes, cgroup.as_ref().and_then(|c| c.limit_bytes));
    Memory {
        total_bytes,
        available_bytes: avail.unwrap_or(0),
        budget_bytes: budget.in_force(),
        budget,
        psi,
        cgroup,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_parses_and_rejects_garbage() {
        let p = parse_psi("some avg10=1.50 avg60=0.20 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=5\n").unwrap();
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.full.unwrap().total_us, 5);
        assert!(parse_psi("some avg10=x avg60=0 avg300=0 total=1").is_none());
        assert!(parse_psi("some avg10=0.0").is_none());
        assert!(parse_psi("").is_none());
    }
}
