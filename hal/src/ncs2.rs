//! Intel Neural Compute Stick 2 (Movidius Myriad X) sticks on USB.
//!
//! Reads `sys/bus/usb/devices/<port>/{idVendor,idProduct,serial,product,busnum,devnum,speed}`
//! below the root. A stick shows `03e7:2485` until its firmware is booted by the
//! OpenVINO MYRIAD plugin, then re-enumerates as `03e7:f63b` on the same port, so the
//! port path is its stable id.

use serde::Serialize;

use crate::device::Health;
use crate::tree::{Fault, Tree};

pub const MOVIDIUS_VENDOR: &str = "03e7";
pub const NCS2_UNBOOTED: &str = "2485";
pub const NCS2_BOOTED: &str = "f63b";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ncs2 {
    /// `ncs2-usb-<port>`, e.g. `ncs2-usb-3-2`.
    pub id: String,
    /// USB port path, e.g. `3-2` or `1-4.1`.
    pub port: String,
    pub product_id: Option<String>,
    /// Firmware loaded (`f63b`).
    pub booted: bool,
    pub serial: Option<String>,
    pub product: Option<String>,
    pub busnum: Option<u64>,
    pub devnum: Option<u64>,
    /// Link speed in Mbit/s as the kernel reports it (`480`, `5000`).
    pub speed_mbps: Option<String>,
    pub health: Health,
}

pub(crate) fn probe(tree: &Tree) -> Vec<Ncs2> {
    let names = tree.list("sys/bus/usb/devices").unwrap_or_default();
    let mut out = Vec::new();
    for port in names {
        // Interfaces (`3-2:1.0`) and root hubs (`usb3`) are not devices we want.
        if port.contains(':') || port.starts_with("usb") {
            continue;
        }
        let node = tree.node(format!("sys/bus/usb/devices/{port}"));
        // Only sticks are reported, so a device whose vendor cannot be read is skipped.
        if node.hex_id("idVendor").ok().as_deref() != Some(MOVIDIUS_VENDOR) {
            continue;
        }
        let mut faults = Vec::new();
        let product_id = node.hex_id("idProduct").map_err(|f| faults.push(f)).ok();
        match product_id.as_deref() {
            Some(NCS2_UNBOOTED | NCS2_BOOTED) | None => {}
            Some(_) => continue, // another Movidius product
        }
        let mut opt = |f: &str| node.opt_text(f).map_err(|e| faults.push(e)).ok().flatten();
        let serial = opt("serial");
        let product = opt("product");
        let speed_mbps = opt("speed");
        let busnum = node
            .opt_u64("busnum")
            .map_err(|e| faults.push(e))
            .ok()
            .flatten();
        let devnum = node
            .opt_u64("devnum")
            .map_err(|e| faults.push(e))
            .ok()
            .flatten();
        if !node.dir().exists() {
            faults.push(Fault::Gone(node.dir().display().to_string()));
        }
        out.push(Ncs2 {
            id: format!("ncs2-usb-{port}"),
            booted: product_id.as_deref() == Some(NCS2_BOOTED),
            port,
            product_id,
            serial,
            product,
            busnum,
            devnum,
            speed_mbps,
            health: Health::from_faults(faults),
        });
    }
    out
}
