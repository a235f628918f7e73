//! The JSON form of an [`Inventory`] (what `kilnd probe --json` prints).
//!
//! `cpus` is the array of per-CPU objects and the CPU-wide facts sit beside it in
//! `cpu_info`; NPUs and GPUs carry `pci_id` and `driver` at top level, NCS2 sticks
//! `usb_id` and `state`, next to all their other fields. Pure data; no I/O.

use serde::{Serialize, Serializer};

use crate::accel::Pci;
use crate::cpu::{Cpu, HwlocKind, Source};
use crate::memory::Memory;
use crate::ncs2::{MOVIDIUS_VENDOR, Ncs2};
use crate::power::{Power, Thermal};
use crate::tree::Problem;
use crate::{Gpu, Inventory, Npu};

#[derive(Serialize)]
struct InventoryJson<'a> {
    root: &'a str,
    cpus: &'a [Cpu],
    cpu_info: CpuInfo<'a>,
    npus: Vec<PciJson<'a, Npu>>,
    gpus: Vec<PciJson<'a, Gpu>>,
    ncs2: Vec<Ncs2Json<'a>>,
    memory: &'a Memory,
    power: &'a Power,
    thermal: &'a Thermal,
}

/// Facts about the CPUs as a whole.
#[derive(Serialize)]
struct CpuInfo<'a> {
    count: usize,
    vendor: Option<&'a str>,
    model_name: Option<&'a str>,
    hybrid: bool,
    kind_source: Source,
    hwloc_kinds: &'a [HwlocKind],
    problems: &'a [Problem],
}

/// A PCI device with `pci_id` (`vendor:device`, null when either is unreadable) and
/// `driver` (null when unbound) up front.
#[derive(Serialize)]
struct PciJson<'a, T> {
    pci_id: Option<String>,
    driver: Option<&'a str>,
    #[serde(flatten)]
    device: &'a T,
}

fn pci_json<'a, T>(pci: &'a Pci, device: &'a T) -> PciJson<'a, T> {
    PciJson {
        pci_id: pci_id(pci),
        driver: pci.driver.as_deref(),
        device,
    }
}

/// `8086:7d1d`, when both ids were read.
pub(crate) fn pci_id(pci: &Pci) -> Option<String> {
    Some(format!(
        "{}:{}",
        pci.vendor_id.as_deref()?,
        pci.device_id.as_deref()?
    ))
}

/// A stick with `usb_id` (`03e7:2485`, null when `idProduct` is unreadable) and
/// `state` (`booted` / `unbooted`) up front.
#[derive(Serialize)]
struct Ncs2Json<'a> {
    usb_id: Option<String>,
    state: &'static str,
    #[serde(flatten)]
    stick: &'a Ncs2,
}

impl Serialize for Inventory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = &self.cpus;
        InventoryJson {
            root: &self.root,
            cpus: &c.list,
            cpu_info: CpuInfo {
                count: c.count,
                vendor: c.vendor.as_deref(),
                model_name: c.model_name.as_deref(),
                hybrid: c.hybrid,
                kind_source: c.kind_source,
                hwloc_kinds: &c.hwloc_kinds,
                problems: &c.problems,
            },
            npus: self.npus.iter().map(|n| pci_json(&n.pci, n)).collect(),
            gpus: self.gpus.iter().map(|g| pci_json(&g.pci, g)).collect(),
            ncs2: self
                .ncs2
                .iter()
                .map(|st| Ncs2Json {
                    usb_id: st
                        .product_id
                        .as_deref()
                        .map(|p| format!("{MOVIDIUS_VENDOR}:{p}")),
                    state: if st.booted { "booted" } else { "unbooted" },
                    stick: st,
                })
                .collect(),
            memory: &self.memory,
            power: &self.power,
            thermal: &self.thermal,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_id_needs_both_ids() {
        let mut p = Pci {
            vendor_id: Some("8086".into()),
            device_id: Some("7d1d".into()),
            ..Pci::default()
        };
        assert_eq!(pci_id(&p).as_deref(), Some("8086:7d1d"));
        p.device_id = None;
        assert_eq!(pci_id(&p), None);
    }
}
