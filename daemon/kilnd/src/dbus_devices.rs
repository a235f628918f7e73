//! D-Bus device objects: one `org.kiln.Kiln1.Device` object per HAL device
//! under `/org/kiln/Kiln1/devices/<escaped id>`, added and removed as the
//! engine reports hotplug, with DeviceAdded/DeviceRemoved on the manager and
//! PropertiesChanged when health or utilisation changes. Reads the engine only.

use crate::dbus::{MANAGER_PATH, Manager};
use kiln_engine::Engine;
use kiln_engine::devices::DeviceEvent;
use kiln_engine::devices::{health_text, hw_id};
use kiln_engine::events::Event;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use zbus::{Connection, interface};
use zbus::{ObjectPath, OwnedObjectPath};

pub const DEVICES_PATH: &str = "/org/kiln/Kiln1/devices";

/// Object path of a device: its id with every byte outside [A-Za-z0-9]
/// written as `_xx` (hex), as systemd escapes bus labels.
pub fn device_path(id: &str) -> OwnedObjectPath {
    let mut label = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() {
            label.push(b as char);
        } else {
            label.push_str(&format!("_{b:02x}"));
        }
    }
    if label.is_empty() {
        label.push('_');
    }
    OwnedObjectPath::try_from(format!("{DEVICES_PATH}/{label}"))
        .expect("escaped label is a valid path element")
}

pub struct DeviceObject {
    engine: Engine,
    id: String,
}

impl DeviceObject {
    fn device(&self) -> zbus::fdo::Result<kiln_engine::devices::Device> {
        self.engine
            .device(&self.id)
            .map_err(|e| zbus::fdo::Error::UnknownObject(e.message))
    }
}

#[interface(name = "org.kiln.Kiln1.Device")]
impl DeviceObject {
    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> String {
        self.id.clone()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn kind(&self) -> zbus::fdo::Result<String> {
        let d = self.device()?;
        Ok(serde_json::to_value(d.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default())
    }

    #[zbus(property)]
    fn name(&self) -> zbus::fdo::Result<String> {
        Ok(self.device()?.identity.name)
    }

    /// vendor:product for PCI/USB devices.
    #[zbus(property)]
    fn hw_id(&self) -> zbus::fdo::Result<String> {
        Ok(hw_id(&self.device()?))
    }

    #[zbus(property)]
    fn driver(&self) -> zbus::fdo::Result<String> {
        Ok(self.device()?.identity.driver.unwrap_or_default())
    }

    /// ok, degraded or gone.
    #[zbus(property)]
    fn health(&self) -> zbus::fdo::Result<String> {
        Ok(health_text(&self.device()?.health).0.to_string())
    }

    #[zbus(property)]
    fn health_detail(&self) -> zbus::fdo::Result<String> {
        Ok(health_text(&self.device()?.health).1)
    }

    #[zbus(property)]
    fn capabilities(&self) -> zbus::fdo::Result<Vec<String>> {
        Ok(self.device()?.capabilities)
    }

    /// Busy share 0–100 since the previous sample; -1 when unknown.
    #[zbus(property)]
    fn busy_percent(&self) -> zbus::fdo::Result<f64> {
        Ok(self
            .device()?
            .utilisation
            .and_then(|u| u.busy_percent)
            .unwrap_or(-1.0))
    }

    /// The whole device as the HAL reports it, JSON.
    #[zbus(property)]
    fn json(&self) -> zbus::fdo::Result<String> {
        serde_json::to_string(&self.device()?).map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }
}

async fn export(conn: &Connection, engine: &Engine, id: &str) -> OwnedObjectPath {
    let path = device_path(id);
    let obj = DeviceObject {
        engine: engine.clone(),
        id: id.to_string(),
    };
    if let Err(e) = conn.object_server().at(path.as_ref(), obj).await {
        tracing::warn!(device = id, error = %e, "cannot export device object");
    }
    path
}

async fn emit_changed(conn: &Connection, path: &OwnedObjectPath, all: bool) {
    let Ok(iface) = conn
        .object_server()
        .interface::<_, DeviceObject>(path.as_ref())
        .await
    else {
        return;
    };
    let em = iface.signal_emitter();
    let obj = iface.get().await;
    if all {
        let _ = obj.health_changed(em).await;
        let _ = obj.health_detail_changed(em).await;
        let _ = obj.name_changed(em).await;
        let _ = obj.driver_changed(em).await;
        let _ = obj.capabilities_changed(em).await;
        let _ = obj.json_changed(em).await;
    }
    let _ = obj.busy_percent_changed(em).await;
}

/// Export the current devices and follow the engine's device events.
pub async fn serve(conn: &Connection, engine: Engine) -> Result<(), String> {
    // Subscribe before exporting, so no event falls between the two.
    let mut events = engine.events();
    let mut exported: HashSet<String> = HashSet::new();
    for d in engine.devices() {
        export(conn, &engine, &d.id).await;
        exported.insert(d.id);
    }
    let manager = conn
        .object_server()
        .interface::<_, Manager>(MANAGER_PATH)
        .await
        .map_err(|e| format!("manager object missing: {e}"))?;
    let conn2 = conn.clone();
    let engine2 = engine.clone();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            let changes = match e {
                Event::Device(e) => vec![*e],
                // Missed events: mirror the engine's list as it is now.
                Event::Missed { .. } => {
                    let now = engine2.devices();
                    let mut v: Vec<DeviceEvent> = exported
                        .iter()
                        .filter(|id| !now.iter().any(|d| &d.id == *id))
                        .map(|id| DeviceEvent::Removed(id.clone()))
                        .collect();
                    v.extend(now.into_iter().map(|d| {
                        if exported.contains(&d.id) {
                            DeviceEvent::Changed(d)
                        } else {
                            DeviceEvent::Added(d)
                        }
                    }));
                    v
                }
                _ => continue,
            };
            let em = manager.signal_emitter();
            for e in changes {
                match e {
                    DeviceEvent::Added(d) => {
                        let path = export(&conn2, &engine2, &d.id).await;
                        exported.insert(d.id.clone());
                        let _ = Manager::device_added(em, &d.id, ObjectPath::from(&path)).await;
                    }
                    DeviceEvent::Removed(id) => {
                        let path = device_path(&id);
                        let _ = conn2
                            .object_server()
                            .remove::<DeviceObject, _>(path.as_ref())
                            .await;
                        exported.remove(&id);
                        let _ = Manager::device_removed(em, &id, ObjectPath::from(&path)).await;
                    }
                    DeviceEvent::Changed(d) => {
                        emit_changed(&conn2, &device_path(&d.id), true).await
                    }
                }
            }
        }
    });
    // Utilisation: publish BusyPercent when it moves by a point or more.
    let conn3 = conn.clone();
    let every = Duration::from_millis(engine.config().hal.sample_interval_ms);
    tokio::spawn(async move {
        let mut last: HashMap<String, f64> = HashMap::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            for d in engine.devices() {
                let busy = d
                    .utilisation
                    .as_ref()
                    .and_then(|u| u.busy_percent)
                    .unwrap_or(-1.0);
                let prev = last.insert(d.id.clone(), busy);
                if prev.is_some_and(|p| (p - busy).abs() >= 1.0) {
                    emit_changed(&conn3, &device_path(&d.id), false).await;
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escape_everything_outside_alphanumerics() {
        assert_eq!(device_path("npu0").as_str(), "/org/kiln/Kiln1/devices/npu0");
        assert_eq!(
            device_path("ncs2-usb-3-3.1").as_str(),
            "/org/kiln/Kiln1/devices/ncs2_2dusb_2d3_2d3_2e1"
        );
        assert_ne!(device_path("a-b"), device_path("a_b"));
    }
}
