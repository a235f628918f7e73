//! Layout variants a recorded tree can have: xe instead of i915, cgroup v1 and hybrid
//! with limits, an unbooted-only stick set, a U-part GPU.

mod common;

use std::fs;

use common::*;
use kiln_hal::{CgroupVersion, Health};

const GPU: &str = "sys/devices/pci0000:00/0000:00:02.0";

#[test]
fn xe_driver_frequencies_and_idle_residency() {
    let (_d, root) = scratch("latitude-5450");
    fs::remove_file(root.join(format!("{GPU}/driver"))).unwrap();
    symlink(
        &root,
        &format!("{GPU}/driver"),
        "../../../bus/pci/drivers/xe",
    );
    fs::remove_dir_all(root.join(format!("{GPU}/drm/card0/gt"))).unwrap();
    write(&root, &format!("{GPU}/device"), "0x7d45\n");
    for (k, v) in [
        ("min", 100),
        ("max", 1950),
        ("cur", 800),
        ("act", 750),
        ("rp0", 1950),
    ] {
        write(
            &root,
            &format!("{GPU}/tile0/gt0/freq0/{k}_freq"),
            &format!("{v}\n"),
        );
    }
    let idle = format!("{GPU}/tile0/gt0/gtidle/idle_residency_ms");
    write(&root, &idle, "1000\n");
    let mut h = hal(&root);
    let t0 = std::time::Instant::now();
    let g = h.sample_at(t0).gpus[0].clone();
    assert_eq!(g.pci.driver.as_deref(), Some("xe"));
    assert_eq!(g.name, "Intel Graphics (Meteor Lake-U)");
    assert_eq!(g.openvino_device.as_deref(), Some("GPU.0"));
    let f = g.freq.unwrap();
    assert_eq!((f.max_mhz, f.act_mhz), (Some(1950), Some(750)));
    assert_eq!(g.health, Health::Ok);
    write(&root, &idle, "1900\n");
    let u = h.sample_at(t0 + std::time::Duration::from_secs(1)).gpus[0]
        .utilisation
        .clone()
        .unwrap();
    assert_eq!(u.busy_percent, Some(10.0));
    assert_eq!(u.freq_mhz, Some(750));
}

#[test]
fn cgroup_v1_limit_shapes_the_budget() {
    let (_d, root) = scratch("latitude-5450");
    fs::remove_dir_all(root.join("sys/fs/cgroup")).unwrap();
    write(
        &root,
        "proc/self/cgroup",
        "5:memory:/system.slice/kilnd.service\n3:cpu,cpuacct:/system.slice/kilnd.service\n",
    );
    write(
        &root,
        "sys/fs/cgroup/memory/memory.limit_in_bytes",
        "9223372036854771712\n",
    );
    write(
        &root,
        "sys/fs/cgroup/memory/system.slice/memory.limit_in_bytes",
        &format!("{}\n", 16 * GIB),
    );
    write(
        &root,
        "sys/fs/cgroup/memory/system.slice/kilnd.service/memory.limit_in_bytes",
        "9223372036854771712\n",
    );
    write(
        &root,
        "sys/fs/cgroup/memory/system.slice/kilnd.service/memory.usage_in_bytes",
        "1048576\n",
    );
    let m = hal(&root).probe().memory;
    let cg = m.cgroup.unwrap();
    assert_eq!(cg.version, CgroupVersion::V1);
    assert_eq!(
        cg.limit_bytes,
        Some(16 * GIB),
        "the parent slice's limit applies"
    );
    assert_eq!(cg.usage_bytes, Some(1_048_576));
    assert_eq!(m.budget.base_bytes, 16 * GIB);
    assert_eq!(m.budget_bytes, 12 * GIB + GIB / 4);
    assert!(m.problems.is_empty(), "{:?}", m.problems);
}

#[test]
fn cgroup_hybrid_reads_pressure_from_the_unified_tree() {
    let (_d, root) = scratch("plain-desktop");
    fs::remove_dir_all(root.join("sys/fs/cgroup")).unwrap();
    write(&root, "proc/self/cgroup", "4:memory:/kiln\n0::/kiln\n");
    write(
        &root,
        "sys/fs/cgroup/memory/kiln/memory.limit_in_bytes",
        &format!("{}\n", 8 * GIB),
    );
    write(
        &root,
        "sys/fs/cgroup/memory/kiln/memory.usage_in_bytes",
        "4096\n",
    );
    write(
        &root,
        "sys/fs/cgroup/unified/kiln/memory.pressure",
        "some avg10=3.00 avg60=1.00 avg300=0.50 total=99\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=7\n",
    );
    let cg = hal(&root).probe().memory.cgroup.unwrap();
    assert_eq!(cg.version, CgroupVersion::Hybrid);
    assert_eq!(cg.limit_bytes, Some(8 * GIB));
    assert_eq!(cg.pressure.unwrap().some.avg10, 3.0);
}

#[test]
fn v2_garbage_limit_is_a_problem_not_a_budget() {
    let (_d, root) = scratch("plain-desktop");
    write(
        &root,
        "sys/fs/cgroup/system.slice/kilnd.service/memory.max",
        "lots\n",
    );
    let m = hal(&root).probe().memory;
    assert!(
        m.problems[0].path.ends_with("kilnd.service/memory.max"),
        "{:?}",
        m.problems
    );
    assert!(m.problems[0].reason.contains("\"max\""));
    // The bad limit is ignored: the budget falls back to MemTotal.
    assert_eq!(m.budget.base_bytes, m.total_bytes);
}
