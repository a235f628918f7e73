//! Helpers shared by the kiln-hal integration tests: fixture paths and tree copies.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use kiln_hal::{BudgetPolicy, Hal};

pub const GIB: u64 = 1 << 30;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// Copies a tree, keeping symlinks as symlinks (they are relative, so they stay inside).
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &to).unwrap();
        } else if ft.is_dir() {
            copy_tree(&from, &to);
        } else {
            fs::copy(&from, &to).unwrap();
        }
    }
}

/// A private copy of a fixture that a test may modify.
pub fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(name);
    copy_tree(&fixture(name), &root);
    (dir, root)
}

pub fn hal(root: &Path) -> Hal {
    Hal::new(root, BudgetPolicy::default()).unwrap()
}

pub fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

pub fn symlink(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

pub const NPU_DIR: &str = "sys/devices/pci0000:00/0000:00:0b.0";
pub const GPU_GT: &str = "sys/devices/pci0000:00/0000:00:02.0/drm/card0/gt/gt0";
pub const XHCI: &str = "sys/devices/pci0000:00/0000:00:14.0";

/// Plugs an NCS2 into `port` of the 5450 tree's USB 3 root hub.
pub fn plug_ncs2(root: &Path, port: &str, product: &str, serial: &str) {
    let dev = format!("{XHCI}/usb3/{port}");
    write(root, &format!("{dev}/idVendor"), "03e7\n");
    write(root, &format!("{dev}/idProduct"), &format!("{product}\n"));
    write(root, &format!("{dev}/serial"), &format!("{serial}\n"));
    symlink(
        root,
        &format!("sys/bus/usb/devices/{port}"),
        &format!("../../../devices/pci0000:00/0000:00:14.0/usb3/{port}"),
    );
}
