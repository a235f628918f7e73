//! The uniform device view (CPU kinds, NPUs, GPUs, NCS2 sticks), device health, and
//! the diff between two inventories that drives hotplug events. Pure data; no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tree::{Fault, Problem};

/// Whether a device can be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    Ok,
    /// Present, but some files were missing, truncated or unparsable.
    Degraded {
        problems: Vec<Problem>,
    },
    /// Vanished while being read (unplugged mid-probe).
    Gone {
        path: String,
    },
}

impl Health {
    pub(crate) fn from_faults(faults: Vec<Fault>) -> Health {
        let mut problems = Vec::new();
        for f in faults {
            match f {
                Fault::Gone(path) => return Health::Gone { path },
                Fault::Bad(p) => problems.push(p),
            }
        }
        if problems.is_empty() {
            Health::Ok
        } else {
            Health::Degraded { problems }
        }
    }

    pub(crate) fn from_problems(problems: Vec<Problem>) -> Health {
        if problems.is_empty() {
            Health::Ok
        } else {
            Health::Degraded { problems }
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Health::Ok)
    }

    /// Problems of a degraded device; empty otherwise.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Health::Degraded { problems } => problems,
            _ => &[],
        }
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Npu,
    Gpu,
    Ncs2,
}

impl DeviceKind {
    /// `cpu`, `npu`, `gpu`, `ncs2` (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Npu => "npu",
            DeviceKind::Gpu => "gpu",
            DeviceKind::Ncs2 => "ncs2",
        }
    }
}

/// Who a device is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub name: String,
    /// `pci`, `usb` or `cpu`.
    pub bus: String,
    /// PCI address (`0000:00:0b.0`) or USB port (`3-2`).
    pub address: Option<String>,
    pub vendor_id: Option<String>,
    pub product_id: Option<String>,
    pub driver: Option<String>,
    pub serial: Option<String>,
    /// OpenVINO device name (`NPU`, `GPU.0`, `MYRIAD`), when one applies.
    pub openvino_device: Option<String>,
}

/// Live use, filled by sampling (`None` in a plain probe).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Utilisation {
    /// Busy share since the previous sample, 0–100.
    pub busy_percent: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub freq_mhz: Option<u64>,
}

/// One schedulable device in a uniform shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    /// Stable across rescans: `cpu-performance`, `npu0`, `gpu0`, `ncs2-usb-3-2`.
    pub id: String,
    pub kind: DeviceKind,
    pub identity: Identity,
    /// Capability tags, e.g. `avx512f`, `fp16`, `int8`, `static_shapes`, `uma`.
    pub capabilities: Vec<String>,
    pub health: Health,
    pub utilisation: Option<Utilisation>,
}

/// A change between two inventories.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", content = "device", rename_all = "snake_case")]
pub enum DeviceEvent {
    Added(Device),
    /// The id of the device that disappeared.
    Removed(String),
    /// Identity, capabilities or health changed (utilisation alone does not count).
    Changed(Device),
}

/// Events that turn `old` into `new`: removals first, then additions and changes in
/// `new`'s order.
pub fn diff(old: &[Device], new: &[Device]) -> Vec<DeviceEvent> {
    let before: BTreeMap<&str, &Device> = old.iter().map(|d| (d.id.as_str(), d)).collect();
    let after: BTreeMap<&str, &Device> = new.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut out: Vec<DeviceEvent> = old
        .iter()
        .filter(|d| !after.contains_key(d.id.as_str()))
        .map(|d| DeviceEvent::Removed(d.id.clone()))
        .collect();
    for d in new {
        match before.get(d.id.as_str()) {
            None => out.push(DeviceEvent::Added(d.clone())),
            Some(o)
                if o.kind != d.kind
                    || o.identity != d.identity
                    || o.capabilities != d.capabilities
                    || o.health != d.health =>
            {
                out.push(DeviceEvent::Changed(d.clone()))
            }
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, driver: &str, busy: f64) -> Device {
        Device {
            id: id.into(),
            kind: DeviceKind::Ncs2,
            identity: Identity {
                driver: Some(driver.into()),
                ..Identity::default()
            },
            capabilities: vec![],
            health: Health::Ok,
            utilisation: Some(Utilisation {
                busy_percent: Some(busy),
                ..Utilisation::default()
            }),
        }
    }

    #[test]
    fn diff_reports_added_removed_changed_not_utilisation() {
        let old = vec![dev("a", "x", 1.0), dev("b", "x", 1.0), dev("c", "x", 1.0)];
        let new = vec![dev("a", "x", 90.0), dev("c", "y", 1.0), dev("d", "x", 1.0)];
        let ev = diff(&old, &new);
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert_eq!(ev[0], DeviceEvent::Removed("b".into()));
        assert!(matches!(&ev[1], DeviceEvent::Changed(d) if d.id == "c"));
        assert!(matches!(&ev[2], DeviceEvent::Added(d) if d.id == "d"));
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn health_from_faults() {
        assert_eq!(Health::from_faults(vec![]), Health::Ok);
        let bad = Fault::Bad(Problem {
            path: "/x".into(),
            reason: "r".into(),
        });
        assert_eq!(Health::from_faults(vec![bad.clone()]).problems().len(), 1);
        let gone = Health::from_faults(vec![bad, Fault::Gone("/d".into())]);
        assert_eq!(gone, Health::Gone { path: "/d".into() });
        let json = serde_json::to_string(&gone).unwrap();
        assert_eq!(json, r#"{"state":"gone","path":"/d"}"#);
    }
}
