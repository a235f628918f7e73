//! Utilisation from counter deltas: NPU busy time (read at most once a second), GPU
//! RC6 residency, CPU jiffies.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kiln_hal::Health;

const S: Duration = Duration::from_secs(1);

#[test]
fn npu_utilisation_from_two_busy_time_samples() {
    let (_d, root) = scratch("latitude-5450");
    let busy = format!("{NPU_DIR}/npu_busy_time_us");
    let mut h = hal(&root);
    // A plain probe does not touch the counters.
    assert!(h.probe().npus[0].utilisation.is_none());

    let t0 = Instant::now();
    write(&root, &busy, "1000000\n");
    let u = h.sample_at(t0).npus[0].utilisation.clone().unwrap();
    assert_eq!(u.busy_percent, None, "one sample is not a rate");
    assert_eq!(u.memory_used_bytes, Some(268_435_456));

    write(&root, &busy, "1500000\n");
    let u = h.sample_at(t0 + S).npus[0].utilisation.clone().unwrap();
    assert_eq!(u.busy_percent, Some(50.0));

    // Fully busy for two seconds.
    write(&root, &busy, "3500000\n");
    let inv = h.sample_at(t0 + 3 * S);
    assert_eq!(
        inv.npus[0].utilisation.as_ref().unwrap().busy_percent,
        Some(100.0)
    );
    assert_eq!(
        inv.devices()[3].utilisation.as_ref().unwrap().busy_percent,
        Some(100.0)
    );
}

#[test]
fn npu_busy_time_is_read_at_most_once_a_second() {
    let (_d, root) = scratch("latitude-5450");
    let busy = format!("{NPU_DIR}/npu_busy_time_us");
    let mut h = hal(&root);
    let t0 = Instant::now();
    write(&root, &busy, "0\n");
    h.sample_at(t0);
    write(&root, &busy, "250000\n");
    assert_eq!(
        h.sample_at(t0 + S).npus[0]
            .utilisation
            .as_ref()
            .unwrap()
            .busy_percent,
        Some(25.0)
    );
    // Within the second the file is not read: garbage there goes unnoticed and the
    // previous figure is repeated.
    write(&root, &busy, "garbage\n");
    let n = h.sample_at(t0 + S + S / 2).npus[0].clone();
    assert_eq!(n.health, Health::Ok);
    assert_eq!(n.utilisation.unwrap().busy_percent, Some(25.0));
    // A second later it is read again, and the garbage is reported with its path.
    let n = h.sample_at(t0 + 2 * S).npus[0].clone();
    let p = &n.health.problems()[0];
    assert!(
        p.path.ends_with("npu_busy_time_us") && p.reason.contains("garbage"),
        "{p:?}"
    );
    assert!(n.utilisation.is_none());
    // A counter that went backwards (driver reload) gives no figure rather than a wrong one.
    write(&root, &busy, "900000\n");
    h.sample_at(t0 + 3 * S);
    write(&root, &busy, "100\n");
    assert_eq!(
        h.sample_at(t0 + 4 * S).npus[0]
            .utilisation
            .as_ref()
            .unwrap()
            .busy_percent,
        None
    );
}

#[test]
fn gpu_utilisation_from_rc6_residency() {
    let (_d, root) = scratch("latitude-5450");
    let rc6 = format!("{GPU_GT}/rc6_residency_ms");
    let mut h = hal(&root);
    let t0 = Instant::now();
    write(&root, &rc6, "10000\n");
    let u = h.sample_at(t0).gpus[0].utilisation.clone().unwrap();
    assert_eq!((u.busy_percent, u.freq_mhz), (None, Some(650)));
    // 250 ms of RC6 (idle) in one second: 75 % busy.
    write(&root, &rc6, "10250\n");
    let u = h.sample_at(t0 + S).gpus[0].utilisation.clone().unwrap();
    assert_eq!(u.busy_percent, Some(75.0));
    write(&root, &rc6, "12250\n");
    assert_eq!(
        h.sample_at(t0 + 3 * S).gpus[0]
            .utilisation
            .as_ref()
            .unwrap()
            .busy_percent,
        Some(0.0)
    );
}

#[test]
fn cpu_utilisation_from_proc_stat_per_kind() {
    let (_d, root) = scratch("latitude-5450");
    let line = |i: usize, busy: u64, idle: u64| format!("cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0\n");
    let stat = |busy0: u64, idle0: u64| {
        let mut s = String::from("cpu  0 0 0 0 0 0 0 0 0 0\n");
        for i in 0..22 {
            s += &if i == 0 {
                line(i, busy0, idle0)
            } else {
                line(i, 100, 100)
            };
        }
        s
    };
    let mut h = hal(&root);
    let t0 = Instant::now();
    write(&root, "proc/stat", &stat(100, 100));
    h.sample_at(t0);
    write(&root, "proc/stat", &stat(160, 140));
    let inv = h.sample_at(t0 + S);
    assert_eq!(inv.cpus.list[0].busy_percent, Some(60.0));
    assert_eq!(inv.cpus.list[1].busy_percent, None, "no ticks elapsed");
    let d = &inv.devices()[0];
    assert_eq!(d.id, "cpu-performance");
    assert_eq!(d.utilisation.as_ref().unwrap().busy_percent, Some(60.0));
}
