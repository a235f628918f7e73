//! The recorded trees and the live machine give the inventories they should.

mod common;

use common::*;
use kiln_hal::{
    BudgetMode, BudgetPolicy, CgroupVersion, CpuKind, Hal, Health, PowerSource, Source,
};

#[test]
fn latitude_5450_cpus() {
    let inv = hal(&fixture("latitude-5450")).probe();
    let c = &inv.cpus;
    assert_eq!(c.count, 22);
    assert!(c.hybrid);
    assert_eq!(c.kind_source, Source::Sysfs);
    assert_eq!(
        c.model_name.as_deref(),
        Some("Intel(R) Core(TM) Ultra 7 165H")
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let sets = inv.cpu_sets();
    assert_eq!(sets.performance, (0..12).collect::<Vec<_>>());
    assert_eq!(sets.efficiency, (12..20).collect::<Vec<_>>());
    assert_eq!(sets.low_power, vec![20, 21]);
    assert_eq!(c.cpus_with(|i| i.avx512()), (0..12).collect::<Vec<_>>());
    assert_eq!(c.cpus_with(|i| i.avx512f).len(), 12);
    assert_eq!(c.cpus_with(|i| !i.avx512f).len(), 10);
    assert_eq!(c.cpus_with(|i| i.avx2 && i.fma && i.avx_vnni).len(), 22);
    assert!(c.cpus_with(|i| i.amx_tile).is_empty());
    assert!(c.list.iter().all(|x| x.isa_source == Source::Cpuinfo));
    assert_eq!(c.list[1].siblings, vec![0, 1]);
    assert_eq!(c.list[20].kind, CpuKind::LowPower);
}

#[test]
fn latitude_5450_accelerators() {
    let inv = hal(&fixture("latitude-5450")).probe();
    assert_eq!(inv.npus.len(), 1);
    let n = &inv.npus[0];
    assert_eq!(n.id, "npu0");
    assert_eq!(n.pci.vendor_id.as_deref(), Some("8086"));
    assert_eq!(n.pci.device_id.as_deref(), Some("7d1d"));
    assert_eq!(n.pci.driver.as_deref(), Some("intel_vpu"));
    assert_eq!(n.pci.address.as_deref(), Some("0000:00:0b.0"));
    assert_eq!(n.openvino_device.as_deref(), Some("NPU"));
    assert_eq!(n.health, Health::Ok);

    assert_eq!(inv.gpus.len(), 1);
    let g = &inv.gpus[0];
    assert_eq!(g.id, "gpu0");
    assert_eq!(g.pci.driver.as_deref(), Some("i915"));
    assert_eq!(g.pci.device_id.as_deref(), Some("7d55"));
    assert!(g.integrated);
    assert_eq!(g.openvino_device.as_deref(), Some("GPU.0"));
    let f = g.freq.as_ref().unwrap();
    assert_eq!(
        (f.min_mhz, f.max_mhz, f.act_mhz, f.rp0_mhz),
        (Some(100), Some(2250), Some(650), Some(2250))
    );
    assert_eq!(g.health, Health::Ok);

    let ids: Vec<&str> = inv.ncs2.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["ncs2-usb-3-1", "ncs2-usb-3-3.1", "ncs2-usb-4-2"]);
    let booted: Vec<&str> = inv
        .ncs2
        .iter()
        .filter(|s| s.booted)
        .map(|s| s.port.as_str())
        .collect();
    assert_eq!(booted, ["4-2"]);
    assert_eq!(inv.ncs2[2].serial.as_deref(), Some("14281160C2E5C51600"));
    assert_eq!(inv.ncs2[2].speed_mbps.as_deref(), Some("5000"));
    assert!(inv.ncs2.iter().all(|s| s.health == Health::Ok));

    let devices: Vec<String> = inv.devices().into_iter().map(|d| d.id).collect();
    assert_eq!(
        devices,
        [
            "cpu-performance",
            "cpu-efficiency",
            "cpu-low-power",
            "npu0",
            "gpu0",
            "ncs2-usb-3-1",
            "ncs2-usb-3-3.1",
            "ncs2-usb-4-2"
        ]
    );
    let d = inv.devices();
    assert!(d[0].capabilities.contains(&"avx512f".to_string()));
    assert!(!d[1].capabilities.contains(&"avx512f".to_string()));
    assert_eq!(d[7].identity.product_id.as_deref(), Some("f63b"));
    assert!(d[7].capabilities.contains(&"firmware_booted".to_string()));
}

#[test]
fn latitude_5450_memory_power_thermal() {
    let inv = hal(&fixture("latitude-5450")).probe();
    let m = &inv.memory;
    assert_eq!(m.total_bytes, 65_284_668 * 1024);
    assert_eq!(m.available_bytes, 58_720_256 * 1024);
    assert_eq!(m.budget_bytes, 48 * GIB);
    assert_eq!(m.budget.conservative_bytes, 48 * GIB);
    assert_eq!(m.budget.aggressive_bytes, 52 * GIB);
    assert_eq!(m.psi.unwrap().some.avg10, 0.12);
    let cg = m.cgroup.as_ref().unwrap();
    assert_eq!(cg.version, CgroupVersion::V2);
    assert_eq!(cg.path, "/system.slice/kilnd.service");
    assert_eq!(cg.limit_bytes, None);
    assert_eq!(cg.usage_bytes, Some(734_003_200));
    assert!(m.problems.is_empty(), "{:?}", m.problems);

    assert_eq!(inv.power.source, PowerSource::Ac);
    assert_eq!(inv.power.ac_online, Some(true));
    assert_eq!(inv.power.batteries.len(), 1);
    assert_eq!(inv.power.batteries[0].capacity_percent, Some(87));

    let zones: Vec<(&str, Option<i64>)> = inv
        .thermal
        .zones
        .iter()
        .map(|z| (z.kind.as_deref().unwrap(), z.critical_millicelsius))
        .collect();
    assert_eq!(
        zones,
        [
            ("acpitz", Some(110_000)),
            ("INT3400 Thermal", None),
            ("x86_pkg_temp", Some(105_000))
        ]
    );
    assert_eq!(inv.thermal.max_millicelsius, Some(52_000));

    let aggressive = BudgetPolicy {
        mode: BudgetMode::Aggressive,
        ..BudgetPolicy::default()
    };
    let inv = Hal::new(fixture("latitude-5450"), aggressive)
        .unwrap()
        .probe();
    assert_eq!(inv.memory.budget_bytes, 52 * GIB);
}

#[test]
fn latitude_5450_on_battery() {
    let (_d, root) = scratch("latitude-5450");
    let ps = "sys/devices/LNXSYSTM:00/LNXSYBUS:00";
    write(
        &root,
        &format!("{ps}/ACPI0003:00/power_supply/AC/online"),
        "0\n",
    );
    write(
        &root,
        &format!("{ps}/PNP0C0A:00/power_supply/BAT0/status"),
        "Discharging\n",
    );
    let p = hal(&root).probe().power;
    assert_eq!(p.source, PowerSource::Battery);
    assert_eq!(p.ac_online, Some(false));
    assert_eq!(p.batteries[0].status.as_deref(), Some("Discharging"));
}

/// The top-level keys and the memory/power members the issue requires.
fn assert_common_shape(v: &serde_json::Value) {
    for key in [
        "root", "cpus", "cpu_info", "npus", "gpus", "ncs2", "memory", "power", "thermal",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    for key in ["cpus", "npus", "gpus", "ncs2"] {
        assert!(v[key].is_array(), "{key} is not an array: {}", v[key]);
    }
    for key in ["total_bytes", "available_bytes", "budget_bytes"] {
        assert!(
            v["memory"][key].as_u64().is_some_and(|b| b > 0),
            "memory.{key}"
        );
    }
    for key in ["psi", "cgroup", "budget", "problems"] {
        assert!(v["memory"].get(key).is_some(), "missing memory.{key}");
    }
    for key in [
        "count",
        "vendor",
        "model_name",
        "hybrid",
        "kind_source",
        "hwloc_kinds",
        "problems",
    ] {
        assert!(v["cpu_info"].get(key).is_some(), "missing cpu_info.{key}");
    }
    let cpus = v["cpus"].as_array().unwrap();
    assert_eq!(v["cpu_info"]["count"], cpus.len());
    for (i, c) in cpus.iter().enumerate() {
        assert_eq!(c["id"], i, "{c}");
        assert!(
            ["performance", "efficiency", "low-power"].contains(&c["kind"].as_str().unwrap()),
            "{c}"
        );
        let isa: Vec<&str> = c["isa"]
            .as_array()
            .unwrap_or_else(|| panic!("isa is not an array: {c}"))
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        let mut sorted = isa.clone();
        sorted.sort_unstable();
        assert_eq!(isa, sorted, "isa not sorted: {c}");
        for key in ["core_id", "siblings", "isa_source", "busy_percent"] {
            assert!(c.get(key).is_some(), "missing cpus[{i}].{key}");
        }
    }
}

#[test]
fn inventory_json_has_the_issue_shape() {
    let inv = hal(&fixture("latitude-5450")).probe();
    let v = serde_json::to_value(&inv).unwrap();
    assert_common_shape(&v);

    let cpus = v["cpus"].as_array().unwrap();
    assert_eq!(cpus.len(), 22);
    let kind = |k: &str| cpus.iter().filter(|c| c["kind"] == k).count();
    assert_eq!(
        (kind("performance"), kind("efficiency"), kind("low-power")),
        (12, 8, 2)
    );
    assert_eq!(cpus[20]["kind"], "low-power");
    let has = |c: &serde_json::Value, f: &str| c["isa"].as_array().unwrap().iter().any(|x| x == f);
    for c in cpus {
        let p = c["kind"] == "performance";
        assert_eq!(has(c, "avx512f"), p, "{c}");
        assert!(has(c, "avx2") && has(c, "fma"), "{c}");
    }
    assert_eq!(
        cpus[0]["isa"],
        serde_json::json!([
            "avx2",
            "avx512_bf16",
            "avx512_vnni",
            "avx512bw",
            "avx512f",
            "avx512vl",
            "avx_vnni",
            "fma"
        ])
    );
    assert_eq!(v["cpu_info"]["hybrid"], true);
    assert_eq!(v["cpu_info"]["kind_source"], "sysfs");
    assert_eq!(v["cpu_info"]["vendor"], "GenuineIntel");

    let npus = v["npus"].as_array().unwrap();
    assert_eq!(npus.len(), 1);
    assert_eq!(npus[0]["pci_id"], "8086:7d1d");
    assert_eq!(npus[0]["driver"], "intel_vpu");
    assert_eq!(npus[0]["pci"]["address"], "0000:00:0b.0");
    assert_eq!(npus[0]["openvino_device"], "NPU");
    assert_eq!(npus[0]["health"]["state"], "ok");
    let gpus = v["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 1);
    assert_eq!(gpus[0]["pci_id"], "8086:7d55");
    assert_eq!(gpus[0]["driver"], "i915");
    assert_eq!(gpus[0]["pci"]["device_id"], "7d55");
    assert_eq!(gpus[0]["integrated"], true);

    let sticks = v["ncs2"].as_array().unwrap();
    assert_eq!(sticks.len(), 3);
    let booted: Vec<&serde_json::Value> =
        sticks.iter().filter(|s| s["state"] == "booted").collect();
    assert_eq!(booted.len(), 1, "{sticks:?}");
    assert_eq!(booted[0]["usb_id"], "03e7:f63b");
    assert_eq!(booted[0]["port"], "4-2");
    for s in sticks.iter().filter(|s| s["state"] != "booted") {
        assert_eq!(s["state"], "unbooted");
        assert_eq!(s["usb_id"], "03e7:2485");
        assert_eq!(s["booted"], false);
    }

    assert_eq!(v["power"]["source"], "ac");
    assert_eq!(v["memory"]["budget_bytes"], 48 * GIB);
    assert!(
        v["thermal"]["zones"]
            .as_array()
            .is_some_and(|z| z.len() == 3)
    );

    // The uniform device list is unchanged by the inventory's JSON form.
    let d = serde_json::to_value(inv.devices()).unwrap();
    assert_eq!(d[2]["id"], "cpu-low-power");
    assert_eq!(d[3]["id"], "npu0");
    assert_eq!(d[3]["kind"], "npu");
    for key in [
        "id",
        "kind",
        "identity",
        "capabilities",
        "health",
        "utilisation",
    ] {
        assert!(d[3].get(key).is_some(), "missing device.{key}");
    }
}

#[test]
fn plain_desktop_json_has_the_issue_shape() {
    let inv = hal(&fixture("plain-desktop")).probe();
    let v = serde_json::to_value(&inv).unwrap();
    assert_common_shape(&v);
    let cpus = v["cpus"].as_array().unwrap();
    assert_eq!(cpus.len(), 16);
    for c in cpus {
        assert_eq!(c["kind"], "performance");
        assert_eq!(c["isa"], serde_json::json!(["avx2", "fma"]), "{c}");
    }
    assert_eq!(v["cpu_info"]["hybrid"], false);
    assert_eq!(v["cpu_info"]["kind_source"], "uniform");
    assert_eq!(v["npus"], serde_json::json!([]));
    assert_eq!(v["gpus"], serde_json::json!([]));
    assert_eq!(v["ncs2"], serde_json::json!([]));
    assert_eq!(v["memory"]["budget_bytes"], 18 * GIB + GIB / 2);
    assert_eq!(v["power"]["source"], "ac");
}

#[test]
fn plain_desktop_has_no_accelerators() {
    let inv = hal(&fixture("plain-desktop")).probe();
    assert_eq!(inv.cpus.count, 16);
    assert!(!inv.cpus.hybrid);
    assert_eq!(inv.cpus.kind_source, Source::Uniform);
    let sets = inv.cpu_sets();
    assert_eq!(sets.performance, (0..16).collect::<Vec<_>>());
    assert!(sets.efficiency.is_empty() && sets.low_power.is_empty());
    assert_eq!(inv.cpus.cpus_with(|i| i.avx2 && i.fma).len(), 16);
    assert!(inv.cpus.cpus_with(|i| i.avx512f).is_empty());
    assert!(inv.npus.is_empty() && inv.gpus.is_empty() && inv.ncs2.is_empty());
    let ids: Vec<String> = inv.devices().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["cpu-performance"]);
    // The service cgroup's 24 GiB limit is the budget base.
    let m = &inv.memory;
    assert_eq!(m.cgroup.as_ref().unwrap().limit_bytes, Some(24 * GIB));
    assert_eq!(m.budget.base_bytes, 24 * GIB);
    assert_eq!(m.budget.conservative_bytes, 18 * GIB + GIB / 2);
    assert_eq!(m.budget.aggressive_bytes, 20 * GIB);
    assert_eq!(inv.power.source, PowerSource::Ac);
    assert_eq!(inv.power.ac_online, None);
    assert!(inv.thermal.zones.is_empty());
    assert!(inv.cpus.problems.is_empty() && m.problems.is_empty() && inv.power.problems.is_empty());
}

#[test]
fn live_machine_probe_matches_the_kernel() {
    let hal = Hal::new("/", BudgetPolicy::default()).unwrap();
    assert!(hal.is_live());
    let inv = hal.probe();
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as usize;
    assert_eq!(inv.cpus.count, online);
    assert!(inv.cpus.problems.is_empty(), "{:?}", inv.cpus.problems);
    #[cfg(target_arch = "x86_64")]
    for c in &inv.cpus.list {
        let isa = c.isa.expect("every live CPU has an ISA");
        if c.isa_source == Source::Cpuid {
            assert_eq!(isa.avx2, std::arch::is_x86_feature_detected!("avx2"));
            assert_eq!(isa.fma, std::arch::is_x86_feature_detected!("fma"));
            assert_eq!(isa.avx512f, std::arch::is_x86_feature_detected!("avx512f"));
        }
    }
    // sysinfo's totalram is MemTotal.
    // SAFETY: sysinfo fills a plain struct.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::sysinfo(&mut si) }, 0);
    assert_eq!(
        inv.memory.total_bytes,
        si.totalram as u64 * si.mem_unit as u64
    );
    assert!(inv.memory.budget_bytes > 0 && inv.memory.budget_bytes < inv.memory.total_bytes);
    assert!(inv.memory.problems.is_empty(), "{:?}", inv.memory.problems);
    let cg = inv.memory.cgroup.as_ref().expect("a cgroup");
    let expected = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        CgroupVersion::V2
    } else if std::path::Path::new("/sys/fs/cgroup/unified").exists() {
        CgroupVersion::Hybrid
    } else {
        CgroupVersion::V1
    };
    assert_eq!(cg.version, expected);
    let count = |dir: &str, prefix: &str| {
        std::fs::read_dir(dir)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.strip_prefix(prefix)
                            .is_some_and(|i| i.parse::<u32>().is_ok())
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(inv.npus.len(), count("/sys/class/accel", "accel"));
    assert_eq!(inv.gpus.len(), count("/sys/class/drm", "card"));
    // The JSON prints.
    assert!(
        serde_json::to_string(&inv)
            .unwrap()
            .contains("\"root\":\"/\"")
    );
}

#[test]
fn bad_roots_and_policies_are_refused_clearly() {
    let e = Hal::new("/nonexistent/kiln-tree", BudgetPolicy::default()).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/kiln-tree"), "{e}");
    let bad = BudgetPolicy {
        aggressive_fraction: 0.0,
        ..BudgetPolicy::default()
    };
    let e = Hal::new(fixture("plain-desktop"), bad).unwrap_err();
    assert!(e.to_string().contains("aggressive_fraction"), "{e}");
    let file = fixture("plain-desktop").join("proc/meminfo");
    let e = Hal::new(file, BudgetPolicy::default()).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
}
