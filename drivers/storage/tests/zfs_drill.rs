//! The wedge drill: zfs-fuse stops answering in the middle of a test (the harness freezes it
//! with SIGSTOP, as a wedge would). The test must end within its deadline with a report of
//! the daemon's state, not hang, and leave no daemon or mount behind. A binary of its own, so
//! no other ZFS test waits on the machine-wide zfs-fuse lock while the drill times itself.

use std::process::Command;
use std::time::{Duration, Instant};

use kiln_storage::{BackendKind, Dataset, StorageConfig};
use kiln_testkit::zfs::{TestPool, ZfsFuse};

const DEADLINE: Duration = Duration::from_secs(5);

#[test]
#[ignore = "a drill, run in a child process by a_wedged_zfs_fuse_ends_in_a_report_within_its_deadline"]
fn drill_zfs_fuse_frozen_mid_test() {
    let pool = TestPool::on(ZfsFuse::start_with_deadline(DEADLINE));
    let cfg = StorageConfig {
        backend: BackendKind::Zfs,
        pool: pool.name.clone(),
        proc_root: pool.dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let storage = kiln_storage::open(&cfg).expect("open the pool before the freeze");
    storage.snapshot(Dataset::Logs, "before", false).unwrap();
    eprintln!("drill: pool {} ready; freezing zfs-fuse", pool.name);
    pool.daemon().freeze();
    // Blocks inside zfs-fuse until the deadline kills the daemon; then fails fast.
    let after = storage.snapshot(Dataset::Logs, "after", false);
    eprintln!("drill: snapshot after the freeze returned {after:?}");
}

#[test]
fn a_wedged_zfs_fuse_ends_in_a_report_within_its_deadline() {
    let start = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "drill_zfs_fuse_frozen_mid_test",
            "--nocapture",
        ])
        .output()
        .expect("run the drill");
    let took = start.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("drill ended in {:.1} s:\n{text}", took.as_secs_f64());
    assert!(
        text.contains("freezing zfs-fuse"),
        "the drill never froze the daemon: {text}"
    );
    assert!(
        !out.status.success(),
        "a wedged daemon must fail the test: {text}"
    );
    // Deadline, plus starting the daemon and the pool, well below the 30 s abort grace.
    assert!(
        took < DEADLINE + Duration::from_secs(20),
        "the drill took {took:?}"
    );
    for needle in [
        "zfs-fuse deadline of 5 s passed in test `drill_zfs_fuse_frozen_mid_test`",
        " threads, state T",
        "zfs/zpool commands in flight: [pid",
        "last harness command: zpool create",
        "zfs-fuse mounts: kt",
        "The daemon was killed and its mounts unmounted",
    ] {
        assert!(text.contains(needle), "report lacks {needle:?}: {text}");
    }
    // Nothing left: the daemon is gone and none of its mounts remain.
    let pid: u32 = text
        .split("zfs-fuse pid ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse().ok())
        .expect("report names the daemon's pid");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "zfs-fuse {pid} still runs"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.lines().any(|l| l.contains("kiln-zpool-")),
        "mounts left behind:\n{mounts}"
    );
}
