//! Test harness: temp dirs for the dir backend, and real zfs-fuse pools for the ZFS backend
//! (starts `zfs-fuse --no-daemon` if it is not running, creates a file-backed pool with a
//! unique name in a temp dir, destroys pool and dir on Drop, also when a test panics).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kiln_storage::{BackendKind, Storage, StorageConfig};

fn zpool_ok() -> bool {
    Command::new("zpool")
        .args(["list", "-H"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Make sure a zfs-fuse daemon answers; start one if needed.
pub fn ensure_zfs_fuse() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let r = READY.get_or_init(|| {
        if zpool_ok() {
            return Ok(());
        }
        let child = Command::new("zfs-fuse")
            .arg("--no-daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = child {
            return Err(format!(
                "cannot start zfs-fuse ({e}); install it with `apt-get install zfs-fuse` \
                 (needs /dev/fuse and root)"
            ));
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if zpool_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("zfs-fuse started but `zpool list` never answered within 15 s".into())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// A file-backed zfs-fuse pool that is destroyed on Drop.
pub struct TestPool {
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl TestPool {
    pub fn new() -> TestPool {
        ensure_zfs_fuse();
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kt{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix("kiln-zpool-")
            .tempdir()
            .unwrap();
        let vdev = dir.path().join("vdev");
        let f = std::fs::File::create(&vdev).unwrap();
        f.set_len(256 << 20).unwrap();
        let mnt = dir.path().join("mnt");
        let out = Command::new("zpool")
            .args(["create", "-o", "cachefile=none", "-O", "canmount=off"])
            .arg("-m")
            .arg(&mnt)
            .arg(&name)
            .arg(&vdev)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "zpool create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestPool { name, dir }
    }

    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// Run `zfs` directly (to simulate an operator or drift); returns stdout.
    pub fn zfs(&self, args: &[&str]) -> String {
        let out = Command::new("zfs").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "zfs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        for _ in 0..40 {
            let ok = Command::new("zpool")
                .args(["destroy", "-f", &self.name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            let _ = Command::new("zfs")
                .args(["unmount", "-f", &self.name])
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("warning: could not destroy test pool {}", self.name);
    }
}

/// A backend under test plus whatever keeps its storage alive.
pub struct Env {
    pub storage: Box<dyn Storage>,
    pub config: StorageConfig,
    pub pool: Option<TestPool>,
    pub dir: Option<tempfile::TempDir>,
}

impl Env {
    pub fn new(kind: BackendKind, tweak: impl FnOnce(&mut StorageConfig)) -> Env {
        let mut config = StorageConfig {
            backend: kind,
            ..StorageConfig::default()
        };
        let (pool, dir) = match kind {
            BackendKind::Dir => {
                let d = tempfile::tempdir().unwrap();
                config.root = d.path().to_path_buf();
                config.proc_root = d.path().to_path_buf();
                (None, Some(d))
            }
            BackendKind::Zfs => {
                let p = TestPool::new();
                config.pool = p.name.clone();
                config.proc_root = p.dir.path().to_path_buf();
                (Some(p), None)
            }
        };
        tweak(&mut config);
        let storage = kiln_storage::open(&config).unwrap();
        Env {
            storage,
            config,
            pool,
            dir,
        }
    }

    /// A scratch directory outside the storage (sources for imports).
    pub fn scratch(&self) -> PathBuf {
        let base = match (&self.pool, &self.dir) {
            (Some(p), _) => p.dir.path().join("scratch"),
            (_, Some(d)) => d.path().join("scratch"),
            _ => unreachable!(),
        };
        std::fs::create_dir_all(&base).unwrap();
        base
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn write(p: &Path, data: &[u8]) {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(p, data).unwrap();
}
