//! scripts/record-machine-tree.sh records exactly the files the HAL reads: re-recording
//! a fixture reproduces it, and a recording of this machine probes like the machine.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use kiln_hal::{BudgetPolicy, Hal};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/record-machine-tree.sh")
}

fn record(args: &[&str], dest: &Path) {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .arg(dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "recorder failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file (content) and symlink (target) below `root`, by relative path.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", fs::read_link(e.path()).unwrap().display()),
                );
            } else if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.insert(rel, fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    out
}

#[test]
fn re_recording_a_fixture_reproduces_it() {
    for name in ["latitude-5450", "plain-desktop"] {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join(name);
        record(&["--from", fixture(name).to_str().unwrap()], &dest);
        assert_eq!(listing(&fixture(name)), listing(&dest), "{name}");
    }
}

#[test]
fn a_recording_of_this_machine_probes_like_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("here");
    record(&["--pid", &std::process::id().to_string()], &dest);
    let live = Hal::new("/", BudgetPolicy::default()).unwrap().probe();
    let tree = hal(&dest).probe();
    assert_eq!(tree.cpus.count, live.cpus.count);
    assert_eq!(tree.cpu_sets(), live.cpu_sets());
    assert_eq!(
        tree.cpus.cpus_with(|i| i.avx2 && i.fma),
        live.cpus.cpus_with(|i| i.avx2 && i.fma)
    );
    assert_eq!(tree.memory.total_bytes, live.memory.total_bytes);
    assert_eq!(
        tree.memory.budget.conservative_bytes,
        live.memory.budget.conservative_bytes
    );
    let (tc, lc) = (
        tree.memory.cgroup.clone().unwrap(),
        live.memory.cgroup.clone().unwrap(),
    );
    assert_eq!(
        (tc.version, &tc.path, tc.limit_bytes),
        (lc.version, &lc.path, lc.limit_bytes)
    );
    let ids =
        |inv: &kiln_hal::Inventory| inv.devices().into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(ids(&tree), ids(&live));
    assert_eq!(tree.power.source, live.power.source);
    assert_eq!(tree.thermal.zones.len(), live.thermal.zones.len());
    assert!(tree.cpus.problems.is_empty() && tree.memory.problems.is_empty());
}

#[test]
fn recorder_refuses_bad_arguments_clearly() {
    let run = |args: &[&str]| {
        Command::new("bash")
            .arg(script())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing DEST"));
    let out = run(&["--from", "/nonexistent-tree", "/tmp/x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("f"), "x").unwrap();
    let out = run(&[tmp.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}
