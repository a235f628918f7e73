//! Devices: the live inventory from the HAL, kept current by a monitor
//! thread (utilisation sampling, uevent-driven or explicit rescans), device
//! events fanned out to watchers, and the budget/pressure fed to the ledger.
//! Reads the machine only through kiln_hal.

use crate::auth::{Action, Caller};
use crate::config::Config;
use crate::engine::{ComponentState, Engine};
use crate::error::EngineError;
use crate::events::Event;
use kiln_hal::{CpuSets, Hal, Health, Monitor, MonitorHandle};
/// The device vocabulary transports show (the HAL's shared words).
pub use kiln_hal::{Device, DeviceEvent, Inventory};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub(crate) struct DeviceHub {
    inventory: RwLock<Inventory>,
    hal: Mutex<Option<Hal>>,
    monitor: Mutex<Option<MonitorHandle>>,
    interval: Duration,
}

/// Read the machine (or a recorded tree at `root`) once, without a daemon (`kilnd probe`).
pub fn probe(cfg: &Config, root: std::path::PathBuf) -> Result<Inventory, String> {
    Hal::new(root, cfg.budget.clone())
        .map(|h| h.probe())
        .map_err(|e| e.to_string())
}

/// The budget in force for this configuration on this machine.
pub fn budget_bytes(cfg: &Config, inv: &Inventory) -> u64 {
    let limit = inv.memory.cgroup.as_ref().and_then(|c| c.limit_bytes);
    cfg.budget.compute(inv.memory.total_bytes, limit).in_force()
}

impl DeviceHub {
    pub(crate) fn open(cfg: &Config) -> Result<DeviceHub, String> {
        let hal = Hal::new(cfg.hal.root.clone(), cfg.budget.clone()).map_err(|e| e.to_string())?;
        let inventory = hal.probe();
        Ok(DeviceHub {
            inventory: RwLock::new(inventory),
            hal: Mutex::new(Some(hal)),
            monitor: Mutex::new(None),
            interval: Duration::from_millis(cfg.hal.sample_interval_ms),
        })
    }

    pub(crate) fn snapshot(&self) -> Inventory {
        self.inventory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn summary(inv: &Inventory) -> (ComponentState, String) {
    let devices = inv.devices();
    let bad: Vec<String> = devices
        .iter()
        .filter(|d| d.health != Health::Ok)
        .map(|d| {
            let (state, why) = health_text(&d.health);
            format!("{} {state} ({why})", d.id)
        })
        .collect();
    let base = format!("root {}, {} devices", inv.root, devices.len());
    if bad.is_empty() {
        (ComponentState::Ok, base)
    } else {
        (
            ComponentState::Degraded,
            format!("{base}; {}", bad.join(", ")),
        )
    }
}

impl Engine {
    pub fn inventory(&self) -> Inventory {
        self.inner.devices.snapshot()
    }

    pub fn devices(&self) -> Vec<Device> {
        self.inventory().devices()
    }

    pub fn device(&self, id: &str) -> Result<Device, EngineError> {
        self.devices()
            .into_iter()
            .find(|d| d.id == id)
            .ok_or_else(|| {
                EngineError::not_found(format!("no device {id:?}; `kilnctl devices` lists the ids"))
            })
    }

    pub fn cpu_sets(&self) -> CpuSets {
        self.inventory().cpus.cpu_sets()
    }

    /// Ask the monitor to rescan now (a recorded tree has no uevents). It costs a walk of
    /// sysfs, so it is a managed action (`ManageDaemon`), audited.
    pub async fn rescan_devices(&self, caller: &Caller) -> Result<(), EngineError> {
        self.authorised(
            caller,
            Action::ManageDaemon,
            "RescanDevices",
            "",
            || async {
                match &*self
                    .inner
                    .devices
                    .monitor
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                {
                    Some(m) => {
                        m.rescan_now();
                        Ok(())
                    }
                    None => Err(EngineError::unavailable(
                        "the device monitor is not running",
                    )),
                }
            },
            |_| String::new(),
        )
        .await
    }

    /// Start the monitor thread. Call once, after construction.
    pub fn start_device_monitor(&self) -> Result<(), String> {
        let hub = &self.inner.devices;
        let Some(hal) = hub.hal.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err("device monitor already started".into());
        };
        let weak = Arc::downgrade(&self.inner);
        let handle = Monitor::spawn(
            hal,
            hub.interval,
            move |inv: &Inventory, events: Vec<DeviceEvent>| {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let engine = Engine { inner };
                let hub = &engine.inner.devices;
                *hub.inventory.write().unwrap_or_else(|p| p.into_inner()) = inv.clone();
                let ledger = engine.budget();
                ledger.set_budget(budget_bytes(&engine.config(), inv));
                ledger.set_pressure(inv.memory.psi.map(|p| p.some.avg10));
                for e in events {
                    match &e {
                        DeviceEvent::Added(d) => tracing::info!(device = %d.id, "device added"),
                        DeviceEvent::Removed(id) => tracing::info!(device = %id, "device removed"),
                        DeviceEvent::Changed(d) => {
                            tracing::info!(device = %d.id, health = ?d.health, "device changed")
                        }
                    }
                    engine.core().events.publish(Event::Device(Box::new(e)));
                }
                let (state, detail) = summary(inv);
                engine.set_component("hal", state, detail);
            },
        )
        .map_err(|e| format!("cannot start the device monitor: {e}"))?;
        if !handle.listening_to_uevents() {
            tracing::info!(
                "no kernel uevents; devices are rescanned every {:?} and on request",
                hub.interval
            );
        }
        *hub.monitor.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        let (state, detail) = summary(&hub.snapshot());
        self.set_component("hal", state, detail);
        Ok(())
    }

    /// Stop the monitor thread (shutdown).
    pub fn stop_device_monitor(&self) {
        if let Some(m) = self
            .inner
            .devices
            .monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            m.stop();
        }
    }
}

/// `ok` / `degraded` / `gone`, and what is wrong, for every transport alike.
pub fn health_text(h: &Health) -> (&'static str, String) {
    match h {
        Health::Ok => ("ok", String::new()),
        Health::Degraded { problems } => (
            "degraded",
            problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.reason))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Health::Gone { path } => ("gone", format!("vanished while reading {path}")),
    }
}

/// `vendor:product` for PCI and USB devices; empty for CPU groups.
pub fn hw_id(d: &Device) -> String {
    match (&d.identity.vendor_id, &d.identity.product_id) {
        (Some(v), Some(p)) => format!("{v}:{p}"),
        _ => String::new(),
    }
}
