//! Missing, truncated, garbled and vanished files degrade the right device, name the
//! path, and never panic.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use kiln_hal::{Health, Inventory};

fn problem_paths(h: &Health) -> Vec<String> {
    h.problems().iter().map(|p| p.path.clone()).collect()
}

#[test]
fn garbage_npu_vendor_degrades_the_npu_with_its_path() {
    let (_d, root) = scratch("latitude-5450");
    write(&root, &format!("{NPU_DIR}/vendor"), "zzz-not-hex\n");
    let inv = hal(&root).probe();
    let n = &inv.npus[0];
    let p = &n.health.problems()[0];
    assert!(p.path.ends_with("accel0/device/vendor"), "{p:?}");
    assert!(p.reason.contains("zzz-not-hex"), "{p:?}");
    // The rest of the machine is unaffected.
    assert_eq!(inv.gpus[0].health, Health::Ok);
    assert_eq!(n.pci.device_id.as_deref(), Some("7d1d"));
}

#[test]
fn truncated_cpuinfo_is_reported_and_cpus_still_listed() {
    let (_d, root) = scratch("latitude-5450");
    let text = fs::read_to_string(root.join("proc/cpuinfo")).unwrap();
    fs::write(root.join("proc/cpuinfo"), &text[..text.len() / 2]).unwrap();
    let inv = hal(&root).probe();
    assert_eq!(inv.cpus.count, 22);
    let problems = &inv.cpus.problems;
    assert!(!problems.is_empty());
    assert!(
        problems.iter().all(|p| p.path.ends_with("proc/cpuinfo")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.reason.contains("CPU 21")),
        "{problems:?}"
    );
    assert!(inv.cpus.list[21].isa.is_none());
    assert!(inv.cpus.list[0].isa.unwrap().avx512f);
    let dev = &inv.devices()[0];
    assert!(matches!(dev.health, Health::Degraded { .. }));
}

#[test]
fn empty_ncs2_product_id_degrades_that_stick() {
    let (_d, root) = scratch("latitude-5450");
    write(&root, &format!("{XHCI}/usb4/4-2/idProduct"), "");
    let inv = hal(&root).probe();
    let s = inv.ncs2.iter().find(|s| s.port == "4-2").unwrap();
    let p = &s.health.problems()[0];
    assert!(
        p.path.ends_with("4-2/idProduct") && p.reason.contains("empty"),
        "{p:?}"
    );
    assert!(!s.booted);
    assert_eq!(
        inv.ncs2.iter().filter(|s| s.health == Health::Ok).count(),
        2
    );
}

#[test]
fn garbage_gpu_frequency_and_missing_driver() {
    let (_d, root) = scratch("latitude-5450");
    write(&root, &format!("{GPU_GT}/rps_act_freq_mhz"), "fast\n");
    fs::remove_file(root.join("sys/devices/pci0000:00/0000:00:02.0/driver")).unwrap();
    let inv = hal(&root).probe();
    let paths = problem_paths(&inv.gpus[0].health);
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert!(paths[0].ends_with("card0/device/driver"), "{paths:?}");
    assert!(inv.gpus[0].health.problems()[0].reason.contains("modprobe"));
    assert!(
        inv.gpus[0].freq.is_none(),
        "no driver, so no driver files are read"
    );

    let (_d, root) = scratch("latitude-5450");
    write(&root, &format!("{GPU_GT}/rps_act_freq_mhz"), "fast\n");
    let g = &hal(&root).probe().gpus[0];
    assert!(problem_paths(&g.health)[0].ends_with("rps_act_freq_mhz"));
    assert_eq!(g.freq.as_ref().unwrap().max_mhz, Some(2250));
}

#[test]
fn missing_meminfo_and_garbage_psi_are_memory_problems() {
    let (_d, root) = scratch("latitude-5450");
    fs::remove_file(root.join("proc/meminfo")).unwrap();
    write(&root, "proc/pressure/memory", "some avg10=lots\n");
    let m = hal(&root).probe().memory;
    assert_eq!(m.total_bytes, 0);
    assert_eq!(m.budget_bytes, 0);
    assert!(m.psi.is_none());
    let paths: Vec<&str> = m.problems.iter().map(|p| p.path.as_str()).collect();
    assert!(
        paths.iter().any(|p| p.ends_with("proc/meminfo")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.ends_with("proc/pressure/memory")),
        "{paths:?}"
    );
}

#[test]
fn binary_garbage_in_a_thermal_zone() {
    let (_d, root) = scratch("latitude-5450");
    fs::write(
        root.join("sys/devices/virtual/thermal/thermal_zone2/temp"),
        b"\xff\xfe\x00\x01",
    )
    .unwrap();
    let t = hal(&root).probe().thermal;
    assert!(t.zones[2].temp_millicelsius.is_none());
    let p = &t.zones[2].health.problems()[0];
    assert!(
        p.path.ends_with("thermal_zone2/temp") && p.reason.contains("UTF-8"),
        "{p:?}"
    );
    assert_eq!(t.max_millicelsius, Some(45_000));
}

#[test]
fn a_device_that_vanishes_mid_read_is_gone() {
    let (_d, root) = scratch("latitude-5450");
    // The class entry is still listed but its device directory is gone.
    fs::remove_dir_all(root.join(NPU_DIR)).unwrap();
    let inv = hal(&root).probe();
    assert_eq!(inv.npus.len(), 1);
    match &inv.npus[0].health {
        Health::Gone { path } => assert!(path.contains("accel0/device"), "{path}"),
        h => panic!("expected gone, got {h:?}"),
    }
    assert_eq!(inv.devices()[3].health, inv.npus[0].health);
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn snapshot(root: &Path) -> (Inventory, String) {
    let mut h = hal(root);
    let t0 = std::time::Instant::now();
    let inv = h.sample_at(t0);
    let json =
        serde_json::to_string(&inv).unwrap() + &serde_json::to_string(&inv.devices()).unwrap();
    (inv, json)
}

/// Every file of both trees, removed, emptied or garbled in turn: no panic, and (for
/// empty/garbage) the inventory changes, i.e. every recorded file is one the HAL reads.
#[test]
fn every_file_mutated_never_panics_and_matters() {
    // Files whose content is only read in a second sample (proc/stat), only tested for
    // existence (cgroup.controllers), or read just to skip a non-NCS2 USB device.
    let content_irrelevant = [
        "proc/stat",
        "sys/fs/cgroup/cgroup.controllers",
        "usb3/3-3/idVendor",
        "usb3/3-6/idVendor",
        "usb1/1-2/idVendor",
    ];
    for name in ["latitude-5450", "plain-desktop"] {
        let (_d, root) = scratch(name);
        let (_, baseline) = snapshot(&root);
        let mut unchanged = Vec::new();
        for file in files(&root) {
            let original = fs::read(&file).unwrap();
            let rel = file.strip_prefix(&root).unwrap().display().to_string();
            for (mode, content) in [
                ("empty", &b""[..]),
                ("garbage", &b"\x01garbage -1 0x\xff\n"[..]),
            ] {
                fs::write(&file, content).unwrap();
                let (_, json) = snapshot(&root);
                if json == baseline {
                    unchanged.push(format!("{mode} {rel}"));
                }
            }
            fs::remove_file(&file).unwrap();
            let _ = snapshot(&root);
            fs::write(&file, &original).unwrap();
        }
        let unexpected: Vec<&String> = unchanged
            .iter()
            .filter(|u| !content_irrelevant.iter().any(|c| u.ends_with(c)))
            .collect();
        assert!(
            unexpected.is_empty(),
            "{name}: mutations the HAL did not notice: {unexpected:#?}"
        );
        assert_eq!(snapshot(&root).1, baseline, "{name}: restore failed");
    }
}

#[test]
fn a_missing_device_link_is_degraded_not_gone() {
    let (_d, root) = scratch("latitude-5450");
    fs::remove_file(root.join(format!("{NPU_DIR}/accel/accel0/device"))).unwrap();
    let n = &hal(&root).probe().npus[0];
    let p = &n.health.problems()[0];
    assert!(
        p.path.ends_with("accel0/device") && p.reason.contains("device link"),
        "{p:?}"
    );
}

#[test]
fn filtered_entries_are_not_devices() {
    let (_d, root) = scratch("latitude-5450");
    // Connectors, render nodes, USB interfaces, root hubs and cooling devices.
    symlink(
        &root,
        "sys/class/drm/card0-eDP-1",
        "../../devices/pci0000:00/0000:00:02.0/drm/card0/card0-eDP-1",
    );
    symlink(
        &root,
        "sys/class/drm/renderD128",
        "../../devices/pci0000:00/0000:00:02.0/drm/renderD128",
    );
    symlink(
        &root,
        "sys/bus/usb/devices/3-1:1.0",
        "../../../devices/pci0000:00/0000:00:14.0/usb3/3-1/3-1:1.0",
    );
    write(&root, &format!("{XHCI}/usb3/idVendor"), "1d6b\n");
    symlink(
        &root,
        "sys/bus/usb/devices/usb3",
        "../../../devices/pci0000:00/0000:00:14.0/usb3",
    );
    write(
        &root,
        "sys/class/thermal/cooling_device0/type",
        "Processor\n",
    );
    // Another Movidius product is not a stick.
    write(&root, &format!("{XHCI}/usb3/3-9/idVendor"), "03e7\n");
    write(&root, &format!("{XHCI}/usb3/3-9/idProduct"), "2150\n");
    symlink(
        &root,
        "sys/bus/usb/devices/3-9",
        "../../../devices/pci0000:00/0000:00:14.0/usb3/3-9",
    );
    let inv = hal(&root).probe();
    assert_eq!(inv.gpus.len(), 1);
    assert_eq!(inv.ncs2.len(), 3);
    assert_eq!(inv.thermal.zones.len(), 3);
    assert_eq!(inv.devices().len(), 8);
}
