//! PCI accelerators: NPUs (`sys/class/accel/accel*`) and GPUs (`sys/class/drm/card*`).
//!
//! Reads identity (vendor, device, driver link), i915/xe frequency files and, when
//! sampling, `npu_busy_time_us`, `npu_memory_utilization` and RC6/idle residency below
//! the root. Never writes.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::device::{Health, Utilisation};
use crate::tree::{Fault, Node, Tree};

/// A PCI function's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pci {
    /// e.g. `0000:00:0b.0`.
    pub address: Option<String>,
    pub vendor_id: Option<String>,
    pub device_id: Option<String>,
    pub driver: Option<String>,
}

fn pci(dev: &Node, faults: &mut Vec<Fault>) -> Pci {
    let address = match std::fs::canonicalize(dev.dir()) {
        Ok(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
        Err(_) => {
            // The class entry still there but no device behind it: a broken tree or
            // driver. Neither there: unplugged while we read.
            let entry = dev.dir().parent().filter(|p| p.exists());
            faults.push(match entry {
                Some(_) => Fault::bad(
                    dev.dir(),
                    "the device link is missing or dangling; re-record the tree or check the driver",
                ),
                None => Fault::Gone(dev.dir().display().to_string()),
            });
            return Pci::default();
        }
    };
    let vendor_id = dev.hex_id("vendor").map_err(|f| faults.push(f)).ok();
    let device_id = dev.hex_id("device").map_err(|f| faults.push(f)).ok();
    let driver = match dev.link_name("driver") {
        Ok(Some(d)) => Some(d),
        Ok(None) => {
            faults.push(Fault::bad(
                &dev.dir().join("driver"),
                "no driver bound; load the kernel module (e.g. modprobe intel_vpu / i915)",
            ));
            None
        }
        Err(f) => {
            faults.push(f);
            None
        }
    };
    Pci {
        address,
        vendor_id,
        device_id,
        driver,
    }
}

/// Marketing names for the ids we know; others are named by id.
pub(crate) fn pci_name(vendor: Option<&str>, device: Option<&str>, fallback: &str) -> String {
    match (vendor, device) {
        (Some("8086"), Some("7d1d")) => "Intel AI Boost (NPU 3720, Meteor Lake)".into(),
        (Some("8086"), Some("ad1d")) => "Intel AI Boost (NPU, Arrow Lake)".into(),
        (Some("8086"), Some("643e")) => "Intel AI Boost (NPU 4000, Lunar Lake)".into(),
        (Some("8086"), Some("7d55")) => "Intel Arc Graphics (Meteor Lake-H)".into(),
        (Some("8086"), Some("7d45")) => "Intel Graphics (Meteor Lake-U)".into(),
        (Some(v), Some(d)) => format!("{fallback} {v}:{d}"),
        _ => fallback.into(),
    }
}

/// An NPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Npu {
    /// `npu<N>` from `accel<N>`.
    pub id: String,
    pub accel: String,
    pub name: String,
    pub pci: Pci,
    pub openvino_device: Option<String>,
    pub utilisation: Option<Utilisation>,
    pub health: Health,
    /// The PCI device directory (`.../accel/accelN/device`).
    #[serde(skip)]
    pub(crate) dev_dir: PathBuf,
}

pub(crate) fn probe_npus(tree: &Tree) -> Vec<Npu> {
    let names = tree.list("sys/class/accel").unwrap_or_default();
    names
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix("accel")
                .and_then(|i| i.parse::<u32>().ok())
                .map(|i| (n, i))
        })
        .map(|(accel, index)| {
            let dev = tree.node(format!("sys/class/accel/{accel}/device"));
            let mut faults = Vec::new();
            let pci = pci(&dev, &mut faults);
            let intel_npu = pci.driver.as_deref() == Some("intel_vpu");
            Npu {
                id: format!("npu{index}"),
                name: pci_name(
                    pci.vendor_id.as_deref(),
                    pci.device_id.as_deref(),
                    "accelerator",
                ),
                openvino_device: intel_npu.then(|| "NPU".to_string()),
                accel,
                pci,
                utilisation: None,
                health: Health::from_faults(faults),
                dev_dir: dev.dir().to_path_buf(),
            }
        })
        .collect()
}

/// GPU frequencies in MHz, from i915 `gt/gt0/rps_*_freq_mhz` or xe `tile0/gt0/freq0/*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GpuFreq {
    pub min_mhz: Option<u64>,
    pub max_mhz: Option<u64>,
    pub cur_mhz: Option<u64>,
    pub act_mhz: Option<u64>,
    pub rp0_mhz: Option<u64>,
}

/// A DRM GPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gpu {
    /// `gpu<N>` from `card<N>`.
    pub id: String,
    pub card: String,
    pub name: String,
    pub pci: Pci,
    pub openvino_device: Option<String>,
    /// Integrated (shares system memory): an Intel GPU at PCI `00:02.0`.
    pub integrated: bool,
    pub freq: Option<GpuFreq>,
    pub utilisation: Option<Utilisation>,
    pub health: Health,
    /// File whose growth is idle time in ms (i915 RC6 or xe gtidle), if any.
    #[serde(skip)]
    pub(crate) idle_ms_file: Option<PathBuf>,
}

fn freq(card: &Node, driver: Option<&str>, faults: &mut Vec<Fault>) -> Option<GpuFreq> {
    let (dir, names): (Node, [&str; 5]) = match driver {
        Some("i915") if card.has("gt/gt0") => (
            card.child("gt/gt0"),
            [
                "rps_min_freq_mhz",
                "rps_max_freq_mhz",
                "rps_cur_freq_mhz",
                "rps_act_freq_mhz",
                "rps_RP0_freq_mhz",
            ],
        ),
        Some("i915") => (
            card.clone(),
            [
                "gt_min_freq_mhz",
                "gt_max_freq_mhz",
                "gt_cur_freq_mhz",
                "gt_act_freq_mhz",
                "gt_RP0_freq_mhz",
            ],
        ),
        Some("xe") => (
            card.child("device/tile0/gt0/freq0"),
            ["min_freq", "max_freq", "cur_freq", "act_freq", "rp0_freq"],
        ),
        _ => return None,
    };
    let mut read = |f: &str| dir.opt_u64(f).map_err(|e| faults.push(e)).ok().flatten();
    let f = GpuFreq {
        min_mhz: read(names[0]),
        max_mhz: read(names[1]),
        cur_mhz: read(names[2]),
        act_mhz: read(names[3]),
        rp0_mhz: read(names[4]),
    };
    (f != GpuFreq::default()).then_some(f)
}

fn idle_file(card: &Node, driver: Option<&str>) -> Option<PathBuf> {
    let candidates: &[&str] = match driver {
        Some("i915") => &["gt/gt0/rc6_residency_ms", "power/rc6_residency_ms"],
        Some("xe") => &["device/tile0/gt0/gtidle/idle_residency_ms"],
        _ => &[],
    };
    candidates
        .iter()
        .map(|c| card.dir().join(c))
        .find(|p| p.exists())
}

pub(crate) fn probe_gpus(tree: &Tree) -> Vec<Gpu> {
    let names = tree.list("sys/class/drm").unwrap_or_default();
    let mut intel_index = 0;
    names
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix("card")
                .and_then(|i| i.parse::<u32>().ok())
                .map(|i| (n, i))
        })
        .map(|(card, index)| {
            let node = tree.node(format!("sys/class/drm/{card}"));
            let mut faults = Vec::new();
            let pci = pci(&node.child("device"), &mut faults);
            let driver = pci.driver.clone();
            let intel = matches!(driver.as_deref(), Some("i915" | "xe"));
            let openvino_device = intel.then(|| {
                intel_index += 1;
                format!("GPU.{}", intel_index - 1)
            });
            let freq = freq(&node, driver.as_deref(), &mut faults);
            Gpu {
                id: format!("gpu{index}"),
                name: pci_name(pci.vendor_id.as_deref(), pci.device_id.as_deref(), "GPU"),
                integrated: intel
                    && pci
                        .address
                        .as_deref()
                        .is_some_and(|a| a.ends_with(":00:02.0")),
                openvino_device,
                freq,
                utilisation: None,
                health: Health::from_faults(faults),
                idle_ms_file: idle_file(&node, driver.as_deref()),
                card,
                pci,
            }
        })
        .collect()
}

/// Reads an unsigned counter for sampling.
pub(crate) fn read_counter(path: &Path) -> Result<u64, Fault> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Node::at(dir).u64(&file)
}
