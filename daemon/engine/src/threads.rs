//! Where the daemon's own threads run. Background work (the async runtime: transports,
//! monitors, storage, job supervision) goes to efficiency CPUs; compute (inference workers,
//! model compilation, vector search) to performance CPUs, narrowed to those that report
//! AVX-512 when only some do. Both are limited to the CPUs kilnd was started with, and a
//! kind this machine lacks falls back to all of them (on a non-hybrid machine every CPU is a
//! performance CPU, so both sets are every CPU). Touches thread CPU affinity only.

use std::io;

use kiln_hal::{Cpus, format_cpu_list, pin_thread};
use serde::Serialize;

/// The CPU sets for the daemon's threads, planned once when the engine starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ThreadPlacement {
    /// The CPUs kilnd was started with (its affinity mask before anything was pinned).
    pub usable: Vec<usize>,
    pub background: Vec<usize>,
    /// Which CPUs `background` is, in words.
    pub background_note: String,
    pub compute: Vec<usize>,
    pub compute_note: String,
    /// Physical cores among `compute`: the default number of compute threads.
    pub compute_cores: usize,
}

impl ThreadPlacement {
    /// Plan from the HAL's CPU inventory and the CPUs this process may use.
    pub fn plan(cpus: &Cpus, usable: &[usize]) -> ThreadPlacement {
        let sets = cpus.cpu_sets();
        let within = |v: &[usize]| -> Vec<usize> {
            v.iter().copied().filter(|c| usable.contains(c)).collect()
        };

        let (background, background_note) = [
            (within(&sets.efficiency), "efficiency CPUs"),
            (
                within(&sets.low_power),
                "low-power CPUs; there are no efficiency CPUs",
            ),
        ]
        .into_iter()
        .find(|(v, _)| !v.is_empty())
        .map(|(v, n)| (v, n.to_string()))
        .unwrap_or_else(|| {
            (
                usable.to_vec(),
                "every CPU; there are no efficiency CPUs".into(),
            )
        });

        let mut perf = sets.performance.clone();
        let mut compute_note = String::from("performance CPUs");
        if perf.is_empty() {
            perf = cpus.list.iter().map(|c| c.id).collect();
            compute_note = "every CPU; the HAL reports no performance CPUs".into();
        }
        let avx512 = cpus.cpus_with(|i| i.avx512());
        let perf512: Vec<usize> = perf
            .iter()
            .copied()
            .filter(|c| avx512.contains(c))
            .collect();
        if !perf512.is_empty() && perf512.len() < perf.len() {
            perf = perf512;
            compute_note = "performance CPUs that report AVX-512".into();
        }
        let mut compute = within(&perf);
        if compute.is_empty() {
            compute = usable.to_vec();
            compute_note = format!(
                "every CPU kilnd may use; none of the HAL's {} is in its affinity mask",
                format_cpu_list(&perf)
            );
        }
        let mut cores: Vec<(Option<u64>, usize)> = cpus
            .list
            .iter()
            .filter(|c| compute.contains(&c.id))
            .map(|c| (c.core_id, if c.core_id.is_some() { 0 } else { c.id }))
            .collect();
        cores.sort_unstable();
        cores.dedup();
        let compute_cores = cores.len().clamp(1, compute.len().max(1));
        ThreadPlacement {
            usable: usable.to_vec(),
            background,
            background_note,
            compute,
            compute_note,
            compute_cores,
        }
    }

    /// Pin the calling thread to the compute CPUs.
    pub fn pin_compute(&self) -> io::Result<()> {
        pin_if_any(0, &self.compute)
    }

    /// Pin the calling thread to the background CPUs.
    pub fn pin_background(&self) -> io::Result<()> {
        pin_if_any(0, &self.background)
    }

    /// Run `f` on the calling thread pinned to compute CPUs and named `kiln-compute`, then
    /// put the thread back (for blocking-pool threads that do one piece of compute work).
    /// Threads that `f` starts (OpenVINO's pools) inherit both, so `top -H` tells them apart.
    pub fn on_compute<T>(&self, f: impl FnOnce() -> T) -> T {
        if let Err(e) = self.pin_compute() {
            tracing::warn!("cannot pin a compute thread: {e}");
        }
        let name = thread_name();
        set_thread_name(COMPUTE_THREAD_NAME);
        let out = f();
        set_thread_name(&name);
        if let Err(e) = self.pin_background() {
            tracing::warn!("cannot return a thread to the background CPUs: {e}");
        }
        out
    }

    /// Pin every thread of this process to the background CPUs; threads started later
    /// inherit the mask of the thread that starts them. Returns how many were pinned.
    pub fn pin_process_background(&self) -> io::Result<usize> {
        if self.background.is_empty() {
            return Ok(0);
        }
        let mut done = std::collections::BTreeSet::new();
        // A thread started while we walk inherits its starter's old mask: walk until a pass
        // finds no thread not yet pinned.
        loop {
            let mut new = 0;
            for entry in std::fs::read_dir("/proc/self/task")? {
                let Some(tid) = entry?
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                if done.insert(tid) {
                    new += 1;
                    match pin_thread(tid, &self.background) {
                        Ok(()) => {}
                        // It ended in the meantime.
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if new == 0 {
                return Ok(done.len());
            }
        }
    }

    /// One line for status: both sets and why.
    pub fn summary(&self) -> String {
        format!(
            "background on CPUs {} ({}); inference and vector search on CPUs {} ({})",
            format_cpu_list(&self.background),
            self.background_note,
            format_cpu_list(&self.compute),
            self.compute_note
        )
    }
}

/// The name [`ThreadPlacement::on_compute`] gives the calling thread.
pub const COMPUTE_THREAD_NAME: &str = "kiln-compute";

/// The calling thread's name (at most 15 bytes).
fn thread_name() -> Vec<u8> {
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into buf.
    unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr()) };
    buf.iter().take_while(|&&b| b != 0).copied().collect()
}

fn set_thread_name(name: impl AsRef<[u8]>) {
    let mut buf = [0u8; 16];
    let n = name.as_ref();
    let len = n.len().min(15);
    buf[..len].copy_from_slice(&n[..len]);
    // SAFETY: buf is NUL-terminated and 16 bytes long, as PR_SET_NAME reads.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}

fn pin_if_any(tid: i32, cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    pin_thread(tid, cpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_hal::{Cpu, CpuKind, Isa, Source};

    fn cpu(id: usize, kind: CpuKind, core: u64, avx512: bool) -> Cpu {
        let isa = Isa {
            avx2: true,
            avx512f: avx512,
            avx512bw: avx512,
            avx512vl: avx512,
            ..Isa::default()
        };
        Cpu {
            id,
            kind,
            core_id: Some(core),
            siblings: vec![id],
            isa: Some(isa),
            isa_source: Source::Cpuinfo,
            busy_percent: None,
        }
    }

    fn cpus(list: Vec<Cpu>) -> Cpus {
        Cpus {
            count: list.len(),
            vendor: None,
            model_name: None,
            hybrid: true,
            kind_source: Source::Sysfs,
            hwloc_kinds: Vec::new(),
            list,
            problems: Vec::new(),
        }
    }

    #[test]
    fn hybrid_splits_background_and_compute() {
        let c = cpus(vec![
            cpu(0, CpuKind::Performance, 0, false),
            cpu(1, CpuKind::Performance, 0, false),
            cpu(2, CpuKind::Efficiency, 8, false),
            cpu(3, CpuKind::Efficiency, 9, false),
            cpu(4, CpuKind::LowPower, 64, false),
        ]);
        let p = ThreadPlacement::plan(&c, &[0, 1, 2, 3, 4]);
        assert_eq!(p.background, vec![2, 3]);
        assert_eq!(p.compute, vec![0, 1]);
        assert_eq!(p.compute_cores, 1, "two SMT siblings are one core");
        assert!(
            p.summary().contains("CPUs 2-3 (efficiency CPUs)"),
            "{}",
            p.summary()
        );
    }

    #[test]
    fn kinds_outside_the_affinity_mask_fall_back() {
        let c = cpus(vec![
            cpu(0, CpuKind::Performance, 0, false),
            cpu(1, CpuKind::Efficiency, 8, false),
            cpu(2, CpuKind::LowPower, 64, false),
        ]);
        // Only the low-power CPU is usable: background takes it, compute falls back to it.
        let p = ThreadPlacement::plan(&c, &[2]);
        assert_eq!(p.background, vec![2]);
        assert!(p.background_note.starts_with("low-power"));
        assert_eq!(p.compute, vec![2]);
        assert!(
            p.compute_note.contains("affinity mask"),
            "{}",
            p.compute_note
        );
    }

    #[test]
    fn non_hybrid_uses_every_cpu_for_both() {
        let mut c = cpus(vec![
            cpu(0, CpuKind::Performance, 0, true),
            cpu(1, CpuKind::Performance, 1, true),
        ]);
        c.hybrid = false;
        let p = ThreadPlacement::plan(&c, &[0, 1]);
        assert_eq!(p.background, vec![0, 1]);
        assert_eq!(p.compute, vec![0, 1]);
        assert_eq!(p.compute_cores, 2);
    }

    #[test]
    fn avx512_narrows_compute_when_only_some_report_it() {
        let c = cpus(vec![
            cpu(0, CpuKind::Performance, 0, true),
            cpu(1, CpuKind::Performance, 1, false),
            cpu(2, CpuKind::Efficiency, 8, false),
        ]);
        let p = ThreadPlacement::plan(&c, &[0, 1, 2]);
        assert_eq!(p.compute, vec![0]);
        assert!(p.compute_note.contains("AVX-512"));
    }

    #[test]
    fn pinning_the_calling_thread_follows_the_plan() {
        let usable = kiln_hal::current_affinity().unwrap();
        let first = usable[0];
        let p = ThreadPlacement {
            usable: usable.clone(),
            background: usable.clone(),
            compute: vec![first],
            ..Default::default()
        };
        std::thread::Builder::new()
            .name("plain".into())
            .spawn(move || {
                let (seen, name) =
                    p.on_compute(|| (kiln_hal::current_affinity().unwrap(), thread_name()));
                assert_eq!(seen, vec![first]);
                assert_eq!(name, COMPUTE_THREAD_NAME.as_bytes());
                assert_eq!(kiln_hal::current_affinity().unwrap(), usable);
                assert_eq!(thread_name(), b"plain");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
