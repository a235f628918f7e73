//! `kilnctl devices`: the daemon's device inventory as a table or JSON, and
//! `--watch` to follow hotplug and health events as JSON lines.

use crate::client::{Failure, connect};
use kiln_api::kiln::v1::devices_client::DevicesClient;
use kiln_api::kiln::v1::{
    Device, DeviceEvent, ListDevicesRequest, RescanDevicesRequest, WatchDevicesRequest,
};
use serde_json::json;
use std::io::Write;
use std::path::Path;

fn event_json(e: &DeviceEvent) -> serde_json::Value {
    let device = e
        .device
        .as_ref()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(&d.json).ok());
    json!({"event": e.event, "id": e.id, "device": device})
}

pub fn table(devices: &[Device]) -> String {
    let mut out = format!(
        "{:<22} {:<6} {:<10} {:<10} {:<6} {}\n",
        "DEVICE", "KIND", "ID", "HEALTH", "BUSY", "NAME"
    );
    for d in devices {
        let busy = if d.busy_percent < 0.0 {
            "-".to_string()
        } else {
            format!("{:.0}%", d.busy_percent)
        };
        let name = if d.health_detail.is_empty() {
            d.name.clone()
        } else {
            format!("{} — {}", d.name, d.health_detail)
        };
        out.push_str(&format!(
            "{:<22} {:<6} {:<10} {:<10} {:<6} {}\n",
            d.id, d.kind, d.hw_id, d.health, busy, name
        ));
    }
    out
}

pub async fn run(
    socket: &Path,
    as_json: bool,
    watch: bool,
    rescan: bool,
) -> Result<String, Failure> {
    let mut c = DevicesClient::new(connect(socket).await?);
    if watch {
        let mut stream = c.watch(WatchDevicesRequest {}).await?.into_inner();
        while let Some(e) = stream.message().await? {
            let line = if as_json {
                event_json(&e).to_string()
            } else {
                format!("{:<8} {}", e.event, e.id)
            };
            let mut out = std::io::stdout().lock();
            // A closed stdout (e.g. `| head`) ends the watch quietly.
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                break;
            }
        }
        return Ok(String::new());
    }
    if rescan {
        c.rescan(RescanDevicesRequest {}).await?;
    }
    let r = c.list(ListDevicesRequest {}).await?.into_inner();
    if as_json {
        let v: serde_json::Value =
            serde_json::from_str(&r.inventory_json).unwrap_or(serde_json::Value::Null);
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(table(&r.devices))
}
