//! kiln-hal: the hardware abstraction layer of kilnd.
//!
//! [`Hal`] reads a machine tree — the live `/` or a recorded directory laid out like
//! it (see `docs/hal-trees.md`) — and reports an [`Inventory`]: CPU kinds and ISA,
//! memory with the UMA budget, NPUs, GPUs, NCS2 sticks, power and thermal. Sampling
//! adds utilisation; [`Monitor`] rescans on USB/PCI uevents and on an interval.
//! Synchronous, read-only; the only side effects are thread pinning and, on the live
//! machine, short-lived CPUID probe threads.

mod accel;
mod budget;
mod cpu;
mod device;
mod json;
mod memory;
mod monitor;
mod ncs2;
pub mod ports;
mod power;
pub mod process;
mod sample;
mod tree;
mod uevent;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use accel::{Gpu, GpuFreq, Npu, Pci};
pub use budget::{Budget, BudgetMode, BudgetPolicy};
pub use cpu::{
    Cpu, CpuKind, CpuSets, Cpus, HwlocKind, Isa, Source, current_affinity, pin_current_thread,
    pin_thread,
};
pub use device::{Device, DeviceEvent, DeviceKind, Health, Identity, Utilisation, diff};
pub use memory::{Cgroup, CgroupVersion, Memory, Psi, PsiLine};
pub use monitor::{DEBOUNCE, Monitor, MonitorHandle, MonitorOptions};
pub use ncs2::Ncs2;
pub use power::{Battery, Power, PowerSource, Thermal, ThermalZone, TripPoint};
pub use tree::{Problem, parse_cpu_list};

/// Everything the HAL found, in one serialisable snapshot. Its JSON form differs from
/// the Rust layout: `cpus` is the per-CPU array, the CPU-wide facts are `cpu_info`
/// (see `docs/hal-trees.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    /// The root that was read (`/` on the live machine).
    pub root: String,
    pub cpus: Cpus,
    pub npus: Vec<Npu>,
    pub gpus: Vec<Gpu>,
    pub ncs2: Vec<Ncs2>,
    pub memory: Memory,
    pub power: Power,
    pub thermal: Thermal,
}

/// Why a [`Hal`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HalError {
    /// The root directory does not exist or is not a directory.
    BadRoot { path: PathBuf, reason: String },
    /// The `[budget]` policy is invalid; the text names the field.
    Policy(String),
}

impl fmt::Display for HalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HalError::BadRoot { path, reason } => write!(
                f,
                "HAL root {} is unusable: {reason}; pass / for this machine or a recorded tree (scripts/record-machine-tree.sh)",
                path.display()
            ),
            HalError::Policy(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for HalError {}

/// The hardware abstraction layer over one machine tree.
#[derive(Debug)]
pub struct Hal {
    tree: tree::Tree,
    policy: BudgetPolicy,
    live: Option<cpu::LiveCpu>,
    state: sample::State,
    last: Option<Vec<Device>>,
}

impl Hal {
    /// A HAL reading `root`. When `root` is `/`, CPU kinds come from hwloc and ISA from
    /// CPUID on pinned threads; otherwise from the tree's files.
    pub fn new(root: impl Into<PathBuf>, policy: BudgetPolicy) -> Result<Hal, HalError> {
        let root = root.into();
        policy.validate().map_err(HalError::Policy)?;
        let canon = std::fs::canonicalize(&root).map_err(|e| HalError::BadRoot {
            path: root.clone(),
            reason: e.to_string(),
        })?;
        if !canon.is_dir() {
            return Err(HalError::BadRoot {
                path: root,
                reason: "not a directory".into(),
            });
        }
        let live = (canon == Path::new("/")).then(cpu::LiveCpu::default);
        Ok(Hal {
            tree: tree::Tree::new(canon),
            policy,
            live,
            state: sample::State::default(),
            last: None,
        })
    }

    pub fn root(&self) -> &Path {
        self.tree.root()
    }

    /// True when reading the running machine (root `/`).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    pub fn policy(&self) -> &BudgetPolicy {
        &self.policy
    }

    /// A fresh inventory without utilisation. Never fails: unusable files show up as
    /// `problems` or as a device's `degraded`/`gone` health.
    pub fn probe(&self) -> Inventory {
        Inventory {
            root: self.tree.root().display().to_string(),
            cpus: cpu::probe(&self.tree, self.live.as_ref()),
            npus: accel::probe_npus(&self.tree),
            gpus: accel::probe_gpus(&self.tree),
            ncs2: ncs2::probe(&self.tree),
            memory: memory::probe(&self.tree, &self.policy),
            power: power::probe_power(&self.tree),
            thermal: power::probe_thermal(&self.tree),
        }
    }

    /// A probe plus utilisation (deltas against the previous sample).
    pub fn sample(&mut self) -> Inventory {
        self.sample_at(Instant::now())
    }

    /// [`Hal::sample`] with an explicit clock. NPU busy time is re-read only when a
    /// second or more has passed since it was last read.
    pub fn sample_at(&mut self, now: Instant) -> Inventory {
        let mut inv = self.probe();
        self.state.apply(&self.tree, &mut inv, now);
        inv
    }

    /// Samples and reports what changed since the previous rescan (everything is
    /// `Added` the first time).
    pub fn rescan(&mut self) -> (Inventory, Vec<DeviceEvent>) {
        let inv = self.sample();
        let devices = inv.devices();
        let events = diff(self.last.as_deref().unwrap_or(&[]), &devices);
        self.last = Some(devices);
        (inv, events)
    }
}

impl Inventory {
    /// Performance / efficiency / low-power CPU ids (non-hybrid: all performance).
    pub fn cpu_sets(&self) -> CpuSets {
        self.cpus.cpu_sets()
    }

    /// Every device in the uniform shape: CPU kinds, NPUs, GPUs, NCS2 sticks.
    pub fn devices(&self) -> Vec<Device> {
        let mut out = Vec::new();
        for kind in [CpuKind::Performance, CpuKind::Efficiency, CpuKind::LowPower] {
            let cpus: Vec<&Cpu> = self.cpus.list.iter().filter(|c| c.kind == kind).collect();
            if cpus.is_empty() {
                continue;
            }
            let common = cpus
                .iter()
                .map(|c| c.isa.unwrap_or_default())
                .reduce(|a, b| Isa {
                    avx2: a.avx2 && b.avx2,
                    fma: a.fma && b.fma,
                    avx_vnni: a.avx_vnni && b.avx_vnni,
                    avx512f: a.avx512f && b.avx512f,
                    avx512bw: a.avx512bw && b.avx512bw,
                    avx512vl: a.avx512vl && b.avx512vl,
                    avx512_vnni: a.avx512_vnni && b.avx512_vnni,
                    avx512_bf16: a.avx512_bf16 && b.avx512_bf16,
                    amx_tile: a.amx_tile && b.amx_tile,
                    amx_int8: a.amx_int8 && b.amx_int8,
                    amx_bf16: a.amx_bf16 && b.amx_bf16,
                })
                .unwrap_or_default();
            let busy: Vec<f64> = cpus.iter().filter_map(|c| c.busy_percent).collect();
            let ids: Vec<usize> = cpus.iter().map(|c| c.id).collect();
            out.push(Device {
                id: format!("cpu-{}", kind.as_str()),
                kind: DeviceKind::Cpu,
                identity: Identity {
                    name: self.cpus.model_name.clone().unwrap_or_else(|| "CPU".into()),
                    bus: "cpu".into(),
                    address: Some(format_cpu_list(&ids)),
                    vendor_id: self.cpus.vendor.clone(),
                    openvino_device: (kind == CpuKind::Performance).then(|| "CPU".into()),
                    ..Identity::default()
                },
                capabilities: common.names().into_iter().map(String::from).collect(),
                health: Health::from_problems(self.cpus.problems.clone()),
                utilisation: (!busy.is_empty()).then(|| Utilisation {
                    busy_percent: Some(busy.iter().sum::<f64>() / busy.len() as f64),
                    ..Utilisation::default()
                }),
            });
        }
        for n in &self.npus {
            out.push(Device {
                id: n.id.clone(),
                kind: DeviceKind::Npu,
                identity: pci_identity(&n.name, &n.pci, n.openvino_device.clone()),
                capabilities: if n.openvino_device.is_some() {
                    ["fp16", "int8", "static_shapes", "uma"]
                        .map(String::from)
                        .to_vec()
                } else {
                    Vec::new()
                },
                health: n.health.clone(),
                utilisation: n.utilisation.clone(),
            });
        }
        for g in &self.gpus {
            let mut caps: Vec<String> = Vec::new();
            if g.openvino_device.is_some() {
                caps.extend(["fp32", "fp16", "int8"].map(String::from));
            }
            if g.integrated {
                caps.push("uma".into());
            }
            out.push(Device {
                id: g.id.clone(),
                kind: DeviceKind::Gpu,
                identity: pci_identity(&g.name, &g.pci, g.openvino_device.clone()),
                capabilities: caps,
                health: g.health.clone(),
                utilisation: g.utilisation.clone(),
            });
        }
        for s in &self.ncs2 {
            let mut caps = vec!["fp16".to_string(), "openvino_2022_3".to_string()];
            if s.booted {
                caps.push("firmware_booted".into());
            }
            out.push(Device {
                id: s.id.clone(),
                kind: DeviceKind::Ncs2,
                identity: Identity {
                    name: s
                        .product
                        .clone()
                        .unwrap_or_else(|| "Intel Neural Compute Stick 2".into()),
                    bus: "usb".into(),
                    address: Some(s.port.clone()),
                    vendor_id: Some(ncs2::MOVIDIUS_VENDOR.into()),
                    product_id: s.product_id.clone(),
                    driver: None,
                    serial: s.serial.clone(),
                    openvino_device: Some("MYRIAD".into()),
                },
                capabilities: caps,
                health: s.health.clone(),
                utilisation: None,
            });
        }
        out
    }
}

fn pci_identity(name: &str, pci: &Pci, openvino_device: Option<String>) -> Identity {
    Identity {
        name: name.to_string(),
        bus: "pci".into(),
        address: pci.address.clone(),
        vendor_id: pci.vendor_id.clone(),
        product_id: pci.device_id.clone(),
        driver: pci.driver.clone(),
        serial: None,
        openvino_device,
    }
}

/// `[0,1,2,5]` → `0-2,5` (any order, duplicates once): the inverse of [`parse_cpu_list`].
pub fn format_cpu_list(ids: &[usize]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let ids = &sorted;
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}
