//! Power and thermal sections: AC or battery, battery charge, thermal zone temperatures.
//!
//! Reads `sys/class/power_supply/*` and `sys/class/thermal/thermal_zone*` below the root.

use serde::Serialize;

use crate::device::Health;
use crate::tree::{Fault, Problem, Tree};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerSource {
    /// Mains, USB-C power, or no battery at all.
    Ac,
    /// Running from the battery.
    Battery,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Battery {
    pub name: String,
    /// `Charging`, `Discharging`, `Full`, `Not charging`, ...
    pub status: Option<String>,
    pub capacity_percent: Option<u64>,
    pub health: Health,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Power {
    pub source: PowerSource,
    /// Whether a mains/USB supply reports online; `None` when there is none.
    pub ac_online: Option<bool>,
    pub batteries: Vec<Battery>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThermalZone {
    pub name: String,
    /// The zone's `type` (e.g. `x86_pkg_temp`, `acpitz`).
    pub kind: Option<String>,
    pub temp_millicelsius: Option<i64>,
    /// The `critical` trip point, when the zone has one.
    pub critical_millicelsius: Option<i64>,
    /// All trip points in order (`passive` is where throttling starts).
    pub trips: Vec<TripPoint>,
    pub health: Health,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TripPoint {
    /// `critical`, `hot`, `passive` or `active`.
    pub kind: String,
    pub temp_millicelsius: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thermal {
    pub zones: Vec<ThermalZone>,
    /// Hottest readable zone.
    pub max_millicelsius: Option<i64>,
}

pub(crate) fn probe_power(tree: &Tree) -> Power {
    let mut problems = Vec::new();
    let mut ac: Option<bool> = None;
    let mut batteries = Vec::new();
    let names = tree.list("sys/class/power_supply").unwrap_or_else(|f| {
        problems.push(crate::cpu::problem_of(f));
        Vec::new()
    });
    for name in names {
        let node = tree.node(format!("sys/class/power_supply/{name}"));
        let kind = match node.text("type") {
            Ok(k) => k,
            Err(Fault::Gone(_)) => continue,
            Err(f) => {
                problems.push(crate::cpu::problem_of(f));
                continue;
            }
        };
        match kind.as_str() {
            "Mains" | "USB" | "USB_C" | "USB_PD" => match node.u64("online") {
                Ok(v) => ac = Some(ac.unwrap_or(false) || v != 0),
                Err(Fault::Gone(_)) => {}
                Err(f) => problems.push(crate::cpu::problem_of(f)),
            },
            "Battery" => {
                let mut faults = Vec::new();
                let status = node.opt_text("status").unwrap_or_else(|f| {
                    faults.push(f);
                    None
                });
                let capacity_percent = node.opt_u64("capacity").unwrap_or_else(|f| {
                    faults.push(f);
                    None
                });
                batteries.push(Battery {
                    name,
                    status,
                    capacity_percent,
                    health: Health::from_faults(faults),
                });
            }
            _ => {}
        }
    }
    let discharging = batteries
        .iter()
        .any(|b| b.status.as_deref() == Some("Discharging"));
    let source = match (ac, batteries.is_empty()) {
        (Some(true), _) => PowerSource::Ac,
        (_, true) => PowerSource::Ac,
        (Some(false), false) => PowerSource::Battery,
        (None, false) if discharging => PowerSource::Battery,
        (None, false) => PowerSource::Ac,
    };
    Power {
        source,
        ac_online: ac,
        batteries,
        problems,
    }
}

pub(crate) fn probe_thermal(tree: &Tree) -> Thermal {
    let names = tree.list("sys/class/thermal").unwrap_or_default();
    let mut zones = Vec::new();
    for name in names.into_iter().filter(|n| n.starts_with("thermal_zone")) {
        let node = tree.node(format!("sys/class/thermal/{name}"));
        let mut faults = Vec::new();
        let kind = node.text("type").map_err(|f| faults.push(f)).ok();
        let temp = node.i64("temp").map_err(|f| faults.push(f)).ok();
        let mut trips = Vec::new();
        for i in 0..64 {
            let kind = match node.opt_text(&format!("trip_point_{i}_type")) {
                Ok(Some(t)) => t,
                Ok(None) => break,
                Err(f) => {
                    faults.push(f);
                    break;
                }
            };
            match node.i64(&format!("trip_point_{i}_temp")) {
                Ok(temp_millicelsius) => trips.push(TripPoint {
                    kind,
                    temp_millicelsius,
                }),
                Err(f) => faults.push(f),
            }
        }
        let critical = trips
            .iter()
            .find(|t| t.kind == "critical")
            .map(|t| t.temp_millicelsius);
        zones.push(ThermalZone {
            name,
            kind,
            temp_millicelsius: temp,
            critical_millicelsius: critical,
            trips,
            health: Health::from_faults(faults),
        });
    }
    let max_millicelsius = zones.iter().filter_map(|z| z.temp_millicelsius).max();
    Thermal {
        zones,
        max_millicelsius,
    }
}
