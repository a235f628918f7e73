//! CPU inventory: which CPUs exist, their kind (performance / efficiency / low-power)
//! and their instruction set, plus thread pinning.
//!
//! Reads `proc/cpuinfo`, `proc/stat`, `sys/devices/system/cpu/**` and, on hybrid Intel,
//! `sys/devices/cpu_core/cpus` and `sys/devices/cpu_atom/cpus` below the root. On the
//! live machine (root `/`) it also asks hwloc for CPU kinds and runs CPUID on a thread
//! pinned to each CPU, because cpuinfo flags are the boot CPU's, not each CPU's.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use serde::Serialize;

use crate::tree::{Fault, Problem, Tree, clip, parse_cpu_list};

/// What a CPU is for, in scheduling terms.
/// Serialises as `"performance"`, `"efficiency"` or `"low-power"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuKind {
    /// P-cores, and every CPU of a non-hybrid machine.
    Performance,
    /// E-cores sharing the L3 with the P-cores.
    Efficiency,
    /// Low-power E-cores (Meteor Lake SoC tile): no L3 shared with the P-cores.
    LowPower,
}

impl CpuKind {
    /// Short name used in device ids (`cpu-performance`, ...) and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CpuKind::Performance => "performance",
            CpuKind::Efficiency => "efficiency",
            CpuKind::LowPower => "low-power",
        }
    }
}

/// The vector/matrix extensions placement cares about. Serialises as the sorted array
/// of the names that are present, e.g. `["avx2","avx512f","fma"]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Isa {
    pub avx2: bool,
    pub fma: bool,
    pub avx_vnni: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
    pub avx512_vnni: bool,
    pub avx512_bf16: bool,
    pub amx_tile: bool,
    pub amx_int8: bool,
    pub amx_bf16: bool,
}

impl Isa {
    /// AVX-512 kernels need F, BW and VL together.
    pub fn avx512(&self) -> bool {
        self.avx512f && self.avx512bw && self.avx512vl
    }

    /// Names of the extensions present, in a fixed order (device capabilities).
    pub fn names(&self) -> Vec<&'static str> {
        [
            ("avx2", self.avx2),
            ("fma", self.fma),
            ("avx_vnni", self.avx_vnni),
            ("avx512f", self.avx512f),
            ("avx512bw", self.avx512bw),
            ("avx512vl", self.avx512vl),
            ("avx512_vnni", self.avx512_vnni),
            ("avx512_bf16", self.avx512_bf16),
            ("amx_tile", self.amx_tile),
            ("amx_int8", self.amx_int8),
            ("amx_bf16", self.amx_bf16),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect()
    }

    /// [`Isa::names`] sorted by name: the JSON form.
    pub fn sorted_names(&self) -> Vec<&'static str> {
        let mut n = self.names();
        n.sort_unstable();
        n
    }

    /// From a cpuinfo `flags` line.
    pub(crate) fn from_flags<'a>(flags: impl IntoIterator<Item = &'a str>) -> Isa {
        let set: BTreeSet<&str> = flags.into_iter().collect();
        let has = |f: &str| set.contains(f);
        Isa {
            avx2: has("avx2"),
            fma: has("fma"),
            avx_vnni: has("avx_vnni"),
            avx512f: has("avx512f"),
            avx512bw: has("avx512bw"),
            avx512vl: has("avx512vl"),
            avx512_vnni: has("avx512_vnni"),
            avx512_bf16: has("avx512_bf16"),
            amx_tile: has("amx_tile"),
            amx_int8: has("amx_int8"),
            amx_bf16: has("amx_bf16"),
        }
    }
}

impl Serialize for Isa {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.sorted_names())
    }
}

/// Where an ISA or kind figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// CPUID executed on a thread pinned to that CPU (live machine only).
    Cpuid,
    /// The `flags` line of `proc/cpuinfo`.
    Cpuinfo,
    /// hwloc cpukinds ranking (live machine only).
    Hwloc,
    /// `sys/devices/cpu_core|cpu_atom/cpus` and the L3 cache layout.
    Sysfs,
    /// No hybrid information: every CPU is a performance CPU.
    Uniform,
}

/// One logical CPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cpu {
    pub id: usize,
    pub kind: CpuKind,
    /// Physical core id, when the tree has `topology/core_id`.
    pub core_id: Option<u64>,
    /// SMT siblings including this CPU, when the tree has `topology/thread_siblings_list`.
    pub siblings: Vec<usize>,
    /// `None` (JSON `null`) when neither CPUID nor cpuinfo could say; in JSON a sorted
    /// array of the extensions present.
    pub isa: Option<Isa>,
    pub isa_source: Source,
    /// Busy share since the previous sample, 0–100 (sampling only).
    pub busy_percent: Option<f64>,
}

/// The CPU section of the inventory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cpus {
    pub count: usize,
    pub vendor: Option<String>,
    pub model_name: Option<String>,
    /// More than one kind present.
    pub hybrid: bool,
    pub kind_source: Source,
    /// hwloc's cpukinds, most power-efficient first (live machine only).
    pub hwloc_kinds: Vec<HwlocKind>,
    pub list: Vec<Cpu>,
    pub problems: Vec<Problem>,
}

/// One hwloc CPU kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HwlocKind {
    pub cpus: Vec<usize>,
    pub efficiency: Option<usize>,
    pub infos: BTreeMap<String, String>,
}

/// CPU id lists per kind, for pinning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuSets {
    pub performance: Vec<usize>,
    pub efficiency: Vec<usize>,
    pub low_power: Vec<usize>,
}

impl Cpus {
    /// Performance / efficiency / low-power CPU ids. Non-hybrid: all performance.
    pub fn cpu_sets(&self) -> CpuSets {
        let mut s = CpuSets::default();
        for c in &self.list {
            match c.kind {
                CpuKind::Performance => s.performance.push(c.id),
                CpuKind::Efficiency => s.efficiency.push(c.id),
                CpuKind::LowPower => s.low_power.push(c.id),
            }
        }
        s
    }

    /// CPUs whose ISA satisfies `pred`, e.g. `|i| i.avx512()`.
    pub fn cpus_with(&self, pred: impl Fn(&Isa) -> bool) -> Vec<usize> {
        self.list
            .iter()
            .filter(|c| c.isa.as_ref().is_some_and(&pred))
            .map(|c| c.id)
            .collect()
    }
}

/// Restricts the calling thread to `cpus` (sched_setaffinity).
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    pin_thread(0, cpus)
}

/// Restricts thread `tid` of this process (0 = the calling thread) to `cpus`.
pub fn pin_thread(tid: i32, cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot pin to an empty CPU list: pass at least one CPU id (see Inventory::cpu_sets)",
        ));
    }
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for &c in cpus {
        if c >= max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "CPU id {c} is beyond the supported maximum {}; use ids from the inventory",
                    max - 1
                ),
            ));
        }
        // SAFETY: c < CPU_SETSIZE, checked above.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: set is a valid cpu_set_t of the given size; a bad tid fails with ESRCH.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(
            e.kind(),
            format!(
                "sched_setaffinity to CPUs {cpus:?} failed: {e} (are they online and in this cgroup's cpuset?)"
            ),
        ))
    }
}

/// The CPUs the calling thread may run on (sched_getaffinity).
pub fn current_affinity() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; set is a valid cpu_set_t of the given size.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: c < CPU_SETSIZE.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// One `processor` block of cpuinfo.
#[derive(Debug, Default)]
pub(crate) struct CpuinfoEntry {
    pub processor: usize,
    pub vendor: Option<String>,
    pub model_name: Option<String>,
    pub flags: Option<Vec<String>>,
}

/// Parses `proc/cpuinfo`; a block without a valid `processor` number is a problem.
pub(crate) fn parse_cpuinfo(text: &str) -> (Vec<CpuinfoEntry>, Vec<String>) {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for block in text.split("\n\n") {
        if block.trim().is_empty() {
            continue;
        }
        let mut e = CpuinfoEntry::default();
        let mut have_proc = false;
        for line in block.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            match k {
                "processor" => match v.parse() {
                    Ok(n) => {
                        e.processor = n;
                        have_proc = true;
                    }
                    Err(_) => errs.push(format!("bad processor number {:?}", clip(v))),
                },
                "vendor_id" => e.vendor = Some(v.to_string()),
                "model name" => e.model_name = Some(v.to_string()),
                "flags" => e.flags = Some(v.split_whitespace().map(str::to_string).collect()),
                _ => {}
            }
        }
        if have_proc {
            out.push(e);
        } else if errs.is_empty() {
            errs.push(format!(
                "a block has no processor line (starts {:?})",
                clip(block.trim())
            ));
        }
    }
    (out, errs)
}

/// Live-machine helpers that the tree probe cannot use.
pub(crate) mod live {
    use super::*;

    /// CPUID of the current thread.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn cpuid_here() -> Isa {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        #[allow(unused_unsafe)]
        // SAFETY: CPUID exists on every x86_64 CPU.
        let (max, l1) = unsafe { (__cpuid(0).eax, __cpuid(1)) };
        let osxsave = (l1.ecx >> 27) & 1 == 1;
        let xcr0: u64 = if osxsave {
            let (lo, hi): (u32, u32);
            // SAFETY: XGETBV is available when CPUID.1:ECX.OSXSAVE is set.
            unsafe {
                std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                    options(nomem, nostack, preserves_flags));
            }
            ((hi as u64) << 32) | lo as u64
        } else {
            0
        };
        let os_avx = xcr0 & 0b110 == 0b110;
        let os_avx512 = os_avx && xcr0 & 0xe0 == 0xe0;
        let os_amx = xcr0 & (0b11 << 17) == (0b11 << 17);
        let bit = |r: u32, b: u32| (r >> b) & 1 == 1;
        let (mut b7, mut c7, mut d7, mut a71) = (0, 0, 0, 0);
        if max >= 7 {
            #[allow(unused_unsafe)]
            // SAFETY: leaf 7 is within the reported maximum.
            let l7 = unsafe { __cpuid_count(7, 0) };
            (b7, c7, d7) = (l7.ebx, l7.ecx, l7.edx);
            if l7.eax >= 1 {
                #[allow(unused_unsafe)]
                // SAFETY: subleaf 1 is within the reported maximum subleaf.
                let l71 = unsafe { __cpuid_count(7, 1) };
                a71 = l71.eax;
            }
        }
        Isa {
            avx2: os_avx && bit(b7, 5),
            fma: os_avx && bit(l1.ecx, 12),
            avx_vnni: os_avx && bit(a71, 4),
            avx512f: os_avx512 && bit(b7, 16),
            avx512bw: os_avx512 && bit(b7, 30),
            avx512vl: os_avx512 && bit(b7, 31),
            avx512_vnni: os_avx512 && bit(c7, 11),
            avx512_bf16: os_avx512 && bit(a71, 5),
            amx_tile: os_amx && bit(d7, 24),
            amx_int8: os_amx && bit(d7, 25),
            amx_bf16: os_amx && bit(d7, 22),
        }
    }

    /// CPUID run on a thread pinned to `cpu`; `None` if pinning is not allowed.
    pub(crate) fn isa_of(cpu: usize) -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            let handle = std::thread::Builder::new()
                .name(format!("kiln-cpuid-{cpu}"))
                .spawn(move || {
                    pin_current_thread(&[cpu]).ok()?;
                    Some(cpuid_here())
                })
                .ok()?;
            handle.join().ok().flatten()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = cpu;
            None
        }
    }

    /// hwloc's CPU kinds, most power-efficient first; empty if hwloc has none.
    pub(crate) fn hwloc_kinds() -> Result<Vec<HwlocKind>, String> {
        let topo = hwlocality::Topology::new().map_err(|e| format!("hwloc topology: {e}"))?;
        let Ok(kinds) = topo.cpu_kinds() else {
            return Ok(Vec::new());
        };
        Ok(kinds
            .map(|k| HwlocKind {
                cpus: k.cpuset.iter_set().map(usize::from).collect(),
                efficiency: k.efficiency,
                infos: k
                    .infos
                    .iter()
                    .map(|i| {
                        (
                            i.name().to_string_lossy().into_owned(),
                            i.value().to_string_lossy().into_owned(),
                        )
                    })
                    .collect(),
            })
            .collect())
    }
}

/// Inputs the probe gathers before classifying.
pub(crate) struct CpuFacts {
    pub online: Vec<usize>,
    pub core_list: Option<Vec<usize>>,
    pub atom_list: Option<Vec<usize>>,
    /// L3 sharing per CPU (`cache/index3/shared_cpu_list`), when recorded.
    pub l3: BTreeMap<usize, Vec<usize>>,
}

/// Kind of every online CPU from sysfs: core → performance; atom → efficiency, or
/// low-power when it shares no L3 with any core CPU (only when L3 data is present).
pub(crate) fn classify_sysfs(f: &CpuFacts) -> (BTreeMap<usize, CpuKind>, Source) {
    let (Some(core), Some(atom)) = (&f.core_list, &f.atom_list) else {
        return (
            f.online
                .iter()
                .map(|&c| (c, CpuKind::Performance))
                .collect(),
            Source::Uniform,
        );
    };
    let core_set: BTreeSet<usize> = core.iter().copied().collect();
    let l3_known = core.iter().any(|c| f.l3.contains_key(c));
    let mut out = BTreeMap::new();
    for &c in &f.online {
        let kind = if core_set.contains(&c) {
            CpuKind::Performance
        } else if atom.contains(&c) {
            let shares_l3 =
                f.l3.get(&c)
                    .is_some_and(|l3| l3.iter().any(|x| core_set.contains(x)));
            if l3_known && !shares_l3 {
                CpuKind::LowPower
            } else {
                CpuKind::Efficiency
            }
        } else {
            CpuKind::Performance
        };
        out.insert(c, kind);
    }
    (out, Source::Sysfs)
}

/// Kinds from hwloc's ranking (most efficient first). Three or more kinds: first is
/// low-power, last performance, the rest efficiency. Two kinds: the lower one is
/// efficiency, split into low-power by the sysfs L3 rule. `None` if hwloc knows nothing.
pub(crate) fn classify_hwloc(
    kinds: &[HwlocKind],
    sysfs: &BTreeMap<usize, CpuKind>,
) -> Option<BTreeMap<usize, CpuKind>> {
    if kinds.len() < 2 || kinds.iter().any(|k| k.efficiency.is_none()) {
        return None;
    }
    let n = kinds.len();
    let mut out = BTreeMap::new();
    for (i, k) in kinds.iter().enumerate() {
        for &c in &k.cpus {
            let kind = if i == n - 1 {
                CpuKind::Performance
            } else if (n >= 3 && i == 0) || (n == 2 && sysfs.get(&c) == Some(&CpuKind::LowPower)) {
                CpuKind::LowPower
            } else {
                CpuKind::Efficiency
            };
            out.insert(c, kind);
        }
    }
    Some(out)
}

pub(crate) fn problem_of(f: Fault) -> Problem {
    match f {
        Fault::Bad(p) => p,
        Fault::Gone(path) => Problem {
            path,
            reason: "vanished while being read".to_string(),
        },
    }
}

/// Reads per-CPU jiffies from `proc/stat`: id → (busy, total).
pub(crate) fn read_stat(tree: &Tree) -> BTreeMap<usize, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(text) = tree.read("proc/stat") else {
        return out;
    };
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(name) = it.next() else { continue };
        let Some(id) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let v: Vec<u64> = it.map_while(|x| x.parse().ok()).collect();
        if v.len() < 4 {
            continue;
        }
        let total: u64 = v.iter().take(8).sum();
        let idle = v[3] + v.get(4).copied().unwrap_or(0);
        out.insert(id, (total.saturating_sub(idle), total));
    }
    out
}

/// Caches for the live machine: ISA per CPU and hwloc kinds do not change while running.
#[derive(Debug, Default)]
pub(crate) struct LiveCpu {
    isa: std::sync::Mutex<BTreeMap<usize, Option<Isa>>>,
    hwloc: std::sync::OnceLock<Result<Vec<HwlocKind>, String>>,
}

/// Builds the CPU section. Never fails: problems are listed with their paths.
pub(crate) fn probe(tree: &Tree, live: Option<&LiveCpu>) -> Cpus {
    let mut problems = Vec::new();
    let cpuinfo_path = tree.path("proc/cpuinfo").display().to_string();
    let entries = match tree.read("proc/cpuinfo") {
        Ok(text) => {
            let (entries, errs) = parse_cpuinfo(&text);
            for e in errs {
                problems.push(Problem {
                    path: cpuinfo_path.clone(),
                    reason: format!("{e}; re-record the tree"),
                });
            }
            entries
        }
        Err(f) => {
            problems.push(problem_of(f));
            Vec::new()
        }
    };
    let by_id: BTreeMap<usize, &CpuinfoEntry> = entries.iter().map(|e| (e.processor, e)).collect();

    let sys = tree.node("sys/devices/system/cpu");
    let online = match sys.text("online") {
        Ok(t) => match parse_cpu_list(&t) {
            Some(l) => l,
            None => {
                problems.push(Problem {
                    path: sys.dir().join("online").display().to_string(),
                    reason: format!("expected a CPU list like 0-21, found {:?}", clip(&t)),
                });
                by_id.keys().copied().collect()
            }
        },
        Err(f) => {
            problems.push(problem_of(f));
            by_id.keys().copied().collect()
        }
    };

    let mut read_list = |rel: &str| -> Option<Vec<usize>> {
        let node = tree.node(rel);
        if !node.dir().exists() {
            return None;
        }
        match node.opt_text("cpus") {
            Ok(None) => None,
            Ok(Some(t)) => parse_cpu_list(&t).or_else(|| {
                problems.push(Problem {
                    path: node.dir().join("cpus").display().to_string(),
                    reason: format!("expected a CPU list like 0-11, found {:?}", clip(&t)),
                });
                None
            }),
            Err(f) => {
                problems.push(problem_of(f));
                None
            }
        }
    };
    let core_list = read_list("sys/devices/cpu_core");
    let atom_list = read_list("sys/devices/cpu_atom");

    let mut l3 = BTreeMap::new();
    let mut topo = BTreeMap::new();
    for &c in &online {
        let node = sys.child(format!("cpu{c}"));
        if !node.dir().exists() {
            continue;
        }
        let core_id = node.opt_u64("topology/core_id").unwrap_or_else(|f| {
            problems.push(problem_of(f));
            None
        });
        let siblings = match node.opt_text("topology/thread_siblings_list") {
            Ok(Some(t)) => parse_cpu_list(&t).unwrap_or_else(|| {
                problems.push(Problem {
                    path: node
                        .dir()
                        .join("topology/thread_siblings_list")
                        .display()
                        .to_string(),
                    reason: format!("expected a CPU list, found {:?}", clip(&t)),
                });
                Vec::new()
            }),
            Ok(None) => Vec::new(),
            Err(f) => {
                problems.push(problem_of(f));
                Vec::new()
            }
        };
        match node.opt_text("cache/index3/shared_cpu_list") {
            Ok(Some(t)) => match parse_cpu_list(&t) {
                Some(l) => {
                    l3.insert(c, l);
                }
                None => problems.push(Problem {
                    path: node
                        .dir()
                        .join("cache/index3/shared_cpu_list")
                        .display()
                        .to_string(),
                    reason: format!("expected a CPU list, found {:?}", clip(&t)),
                }),
            },
            Ok(None) => {}
            Err(f) => problems.push(problem_of(f)),
        }
        topo.insert(c, (core_id, siblings));
    }

    let facts = CpuFacts {
        online: online.clone(),
        core_list,
        atom_list,
        l3,
    };
    let (sysfs_kinds, sysfs_source) = classify_sysfs(&facts);
    let mut hwloc_kinds = Vec::new();
    let (kinds, kind_source) = match live {
        Some(l) => match l.hwloc.get_or_init(live::hwloc_kinds) {
            Ok(k) => {
                hwloc_kinds = k.clone();
                match classify_hwloc(k, &sysfs_kinds) {
                    Some(m) if online.iter().all(|c| m.contains_key(c)) => (m, Source::Hwloc),
                    _ if k.len() == 1 => (
                        online.iter().map(|&c| (c, CpuKind::Performance)).collect(),
                        Source::Hwloc,
                    ),
                    _ => (sysfs_kinds, sysfs_source),
                }
            }
            Err(e) => {
                tracing::warn!("hwloc unavailable, classifying CPUs from sysfs: {e}");
                (sysfs_kinds, sysfs_source)
            }
        },
        None => (sysfs_kinds, sysfs_source),
    };

    let mut list = Vec::with_capacity(online.len());
    for &c in &online {
        let info = by_id.get(&c);
        let from_flags = info
            .and_then(|e| e.flags.as_ref())
            .map(|f| Isa::from_flags(f.iter().map(String::as_str)));
        if info.is_none() {
            problems.push(Problem {
                path: cpuinfo_path.clone(),
                reason: format!("no entry for online CPU {c} (truncated?); re-record the tree"),
            });
        } else if from_flags.is_none() {
            problems.push(Problem {
                path: cpuinfo_path.clone(),
                reason: format!("no flags line for CPU {c} (truncated?); re-record the tree"),
            });
        }
        let cpuid = live.and_then(|l| {
            let mut cache = l.isa.lock().unwrap_or_else(|p| p.into_inner());
            *cache.entry(c).or_insert_with(|| live::isa_of(c))
        });
        let (isa, isa_source) = match cpuid {
            Some(i) => (Some(i), Source::Cpuid),
            None => (from_flags, Source::Cpuinfo),
        };
        let (core_id, siblings) = topo.remove(&c).unwrap_or((None, Vec::new()));
        list.push(Cpu {
            id: c,
            kind: kinds.get(&c).copied().unwrap_or(CpuKind::Performance),
            core_id,
            siblings,
            isa,
            isa_source,
            busy_percent: None,
        });
    }
    let distinct: BTreeSet<CpuKind> = list.iter().map(|c| c.kind).collect();
    let first = entries.first();
    Cpus {
        count: list.len(),
        vendor: first.and_then(|e| e.vendor.clone()),
        model_name: first.and_then(|e| e.model_name.clone()),
        hybrid: distinct.len() > 1,
        kind_source,
        hwloc_kinds,
        list,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_blocks_and_flags() {
        let t = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: X\nflags\t\t: fpu avx2 fma avx512f avx512bw avx512vl\n\nprocessor\t: 1\nflags\t: avx2\n";
        let (e, errs) = parse_cpuinfo(t);
        assert!(errs.is_empty());
        assert_eq!(e.len(), 2);
        let isa = Isa::from_flags(e[0].flags.as_ref().unwrap().iter().map(String::as_str));
        assert!(isa.avx512() && isa.fma);
        let isa1 = Isa::from_flags(e[1].flags.as_ref().unwrap().iter().map(String::as_str));
        assert!(isa1.avx2 && !isa1.avx512f);
        let (_, errs) = parse_cpuinfo("processor : zz\n");
        assert!(errs[0].contains("zz"));
    }

    #[test]
    fn kinds_and_isa_serialise_as_the_json_names() {
        let kinds = [CpuKind::Performance, CpuKind::Efficiency, CpuKind::LowPower];
        let json = serde_json::to_string(&kinds).unwrap();
        assert_eq!(json, r#"["performance","efficiency","low-power"]"#);
        for k in kinds {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        let isa = Isa::from_flags(["fma", "avx512f", "avx2", "avx_vnni", "sse4_2"]);
        let json = serde_json::to_string(&isa).unwrap();
        assert_eq!(json, r#"["avx2","avx512f","avx_vnni","fma"]"#);
        assert_eq!(serde_json::to_string(&Isa::default()).unwrap(), "[]");
    }

    #[test]
    fn hwloc_ranking_maps_to_kinds() {
        let k = |cpus: Vec<usize>, e| HwlocKind {
            cpus,
            efficiency: Some(e),
            infos: BTreeMap::new(),
        };
        let three = [k(vec![4], 0), k(vec![2, 3], 1), k(vec![0, 1], 2)];
        let m = classify_hwloc(&three, &BTreeMap::new()).unwrap();
        assert_eq!(m[&0], CpuKind::Performance);
        assert_eq!(m[&2], CpuKind::Efficiency);
        assert_eq!(m[&4], CpuKind::LowPower);
        let two = [k(vec![2, 3, 4], 0), k(vec![0, 1], 1)];
        let sysfs = BTreeMap::from([(4, CpuKind::LowPower)]);
        let m = classify_hwloc(&two, &sysfs).unwrap();
        assert_eq!(m[&3], CpuKind::Efficiency);
        assert_eq!(m[&4], CpuKind::LowPower);
        assert!(classify_hwloc(&[k(vec![0, 1], 0)], &BTreeMap::new()).is_none());
    }

    #[test]
    fn pin_rejects_bad_lists() {
        assert_eq!(
            pin_current_thread(&[]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let e = pin_current_thread(&[1 << 20]).unwrap_err();
        assert!(e.to_string().contains("beyond"), "{e}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn cpuid_agrees_with_std_detection() {
        let isa = live::cpuid_here();
        assert_eq!(isa.avx2, std::arch::is_x86_feature_detected!("avx2"));
        assert_eq!(isa.fma, std::arch::is_x86_feature_detected!("fma"));
        assert_eq!(isa.avx512f, std::arch::is_x86_feature_detected!("avx512f"));
        assert_eq!(
            isa.avx512bw,
            std::arch::is_x86_feature_detected!("avx512bw")
        );
        assert_eq!(
            isa.avx512_vnni,
            std::arch::is_x86_feature_detected!("avx512vnni")
        );
    }
}
