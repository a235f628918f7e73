//! Devices: the live inventory from the HAL, kept current by a monitor
//! thread (utilisation sampling, uevent-driven or explicit rescans), device
//! events fanned out to watchers, and the budget/pressure fed to the ledger.
//! Reads the machine only through kiln_hal; depends on the core, no other hub.

use crate::auth::{Action, Caller};
use crate::config::Config;
use crate::core::ComponentState;
use crate::core::Core;
use crate::error::EngineError;
use crate::events::Event;
use kiln_hal::{CpuSets, Hal, Health, Monitor, MonitorHandle};
/// The device vocabulary transports show (the HAL's shared words).
pub use kiln_hal::{Device, DeviceEvent, Inventory};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The device hub: the inventory and its monitor. Depends on the core only.
pub struct DeviceHub {
    core: Arc<Core>,
    inventory: Arc<RwLock<Inventory>>,
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

/// The machine as first read, before the core exists (the budget is sized from it).
pub(crate) struct FirstProbe {
    hal: Hal,
    pub(crate) inventory: Inventory,
    interval: Duration,
}

impl FirstProbe {
    pub(crate) fn read(cfg: &Config) -> Result<FirstProbe, String> {
        let hal = Hal::new(cfg.hal.root.clone(), cfg.budget.clone()).map_err(|e| e.to_string())?;
        let inventory = hal.probe();
        Ok(FirstProbe {
            hal,
            inventory,
            interval: Duration::from_millis(cfg.hal.sample_interval_ms),
        })
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

/// A new inventory: kept, fed to the ledger (budget and pressure), its events published,
/// component `hal` updated.
fn apply(core: &Core, inventory: &RwLock<Inventory>, inv: &Inventory, events: Vec<DeviceEvent>) {
    *inventory.write().unwrap_or_else(|p| p.into_inner()) = inv.clone();
    let ledger = core.budget();
    ledger.set_budget(budget_bytes(&core.config(), inv));
    ledger.set_pressure(inv.memory.psi.map(|p| p.some.avg10));
    for e in events {
        match &e {
            DeviceEvent::Added(d) => tracing::info!(device = %d.id, "device added"),
            DeviceEvent::Removed(id) => tracing::info!(device = %id, "device removed"),
            DeviceEvent::Changed(d) => {
                tracing::info!(device = %d.id, health = ?d.health, "device changed")
            }
        }
        core.events().publish(Event::Device(Box::new(e)));
    }
    let (state, detail) = summary(inv);
    core.set_component("hal", state, detail);
}

impl DeviceHub {
    pub(crate) fn new(core: Arc<Core>, first: FirstProbe) -> DeviceHub {
        DeviceHub {
            core,
            inventory: Arc::new(RwLock::new(first.inventory)),
            hal: Mutex::new(Some(first.hal)),
            monitor: Mutex::new(None),
            interval: first.interval,
        }
    }

    pub fn inventory(&self) -> Inventory {
        self.inventory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
    pub async fn rescan(&self, caller: &Caller) -> Result<(), EngineError> {
        self.core
            .authorised(
                caller,
                Action::ManageDaemon,
                "RescanDevices",
                "",
                || async {
                    match &*self.monitor.lock().unwrap_or_else(|p| p.into_inner()) {
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
    pub fn start_monitor(&self) -> Result<(), String> {
        let Some(hal) = self.hal.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err("device monitor already started".into());
        };
        let core = Arc::downgrade(&self.core);
        let inventory = self.inventory.clone();
        let handle = Monitor::spawn(
            hal,
            self.interval,
            move |inv: &Inventory, events: Vec<DeviceEvent>| {
                if let Some(core) = core.upgrade() {
                    apply(&core, &inventory, inv, events);
                }
            },
        )
        .map_err(|e| format!("cannot start the device monitor: {e}"))?;
        if !handle.listening_to_uevents() {
            tracing::info!(
                "no kernel uevents; devices are rescanned every {:?} and on request",
                self.interval
            );
        }
        *self.monitor.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        let (state, detail) = summary(&self.inventory());
        self.core.set_component("hal", state, detail);
        Ok(())
    }

    /// Stop the monitor thread (shutdown).
    pub fn stop_monitor(&self) {
        if let Some(m) = self
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

#[cfg(test)]
mod tests {
    use crate::ErrorKind;
    use crate::auth::{Caller, Transport};
    use crate::testing::engine;
    use kiln_hal::DeviceKind;
    use kiln_testkit::fakes::FakeBackend;

    fn outsider() -> Caller {
        Caller {
            transport: Transport::Grpc,
            uid: Some(60001),
            gid: Some(60001),
            pid: Some(1),
            bus_name: None,
        }
    }

    #[tokio::test]
    async fn the_recorded_5450_is_the_inventory_and_sizes_the_budget() {
        let t = engine(FakeBackend::default(), "");
        let e = &t.engine;
        let kinds: Vec<DeviceKind> = e.devices().iter().map(|d| d.kind).collect();
        for k in [
            DeviceKind::Cpu,
            DeviceKind::Npu,
            DeviceKind::Gpu,
            DeviceKind::Ncs2,
        ] {
            assert!(kinds.contains(&k), "{k:?} in {kinds:?}");
        }
        assert_eq!(
            e.devices()
                .iter()
                .filter(|d| d.kind == DeviceKind::Ncs2)
                .count(),
            3
        );
        let inv = e.inventory();
        assert_eq!(
            e.budget().status().budget_bytes,
            super::budget_bytes(&e.config(), &inv),
            "the ledger holds the budget of this machine"
        );
        let npu = e
            .devices()
            .into_iter()
            .find(|d| d.kind == DeviceKind::Npu)
            .unwrap();
        assert_eq!(e.device(&npu.id).unwrap(), npu);
        let err = e.device("tpu0").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(err.message.contains("kilnctl devices"), "{}", err.message);
    }

    #[tokio::test]
    async fn a_rescan_is_authorised_audited_and_needs_the_monitor() {
        let t = engine(FakeBackend::default(), "");
        let e = &t.engine;
        let err = e.rescan_devices(&outsider()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err:?}");
        let err = e.rescan_devices(&Caller::internal()).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
        e.start_device_monitor().unwrap();
        e.rescan_devices(&Caller::internal()).await.unwrap();
        assert!(e.start_device_monitor().is_err(), "one monitor");
        e.stop_device_monitor();
        let audit = e.db().recent_audit(10).unwrap();
        let results: Vec<&str> = audit
            .iter()
            .filter(|a| a.action == "RescanDevices")
            .map(|a| a.result.as_str())
            .collect();
        assert_eq!(results.len(), 3, "{audit:?}");
        assert!(
            results.contains(&"ok") && results.contains(&"PermissionDenied"),
            "{results:?}"
        );
    }
}
