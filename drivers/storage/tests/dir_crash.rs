//! Crash drill for the directory backend: a child process rolls a dataset back again and
//! again and is killed with SIGKILL at a random moment; after each kill the dataset must be
//! whole (all of the snapshot's files or all of the tree before, never a mix or nothing),
//! and opening the backend clears what the kill left. Rounds: `KILN_CRASH_ROUNDS` (20).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kiln_storage::{BackendKind, Dataset, DirBackend, Storage, StorageConfig};

const CHILD: &str = "KILN_CRASH_DRILL_ROOT";
const TEST: &str = "a_rollback_killed_at_any_moment_leaves_the_dataset_whole";

fn backend(root: &Path) -> DirBackend {
    let config = StorageConfig {
        backend: BackendKind::Dir,
        root: root.to_path_buf(),
        ..StorageConfig::default()
    };
    let b = DirBackend::new(config);
    b.ensure().unwrap();
    b
}

fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    // A missing dataset reads as empty (and fails the check below).
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            fs::read(e.path()).unwrap(),
        );
    }
    out
}

fn fill(dir: &Path, tag: u8) {
    for i in 0..40 {
        fs::write(dir.join(format!("f{i:03}")), vec![tag; 4096]).unwrap();
    }
}

/// Seeded kill delays (reproducible runs).
fn delays(n: usize) -> Vec<u64> {
    let mut r = kiln_testkit::Rng::new(7);
    (0..n).map(|_| 10 + r.next_u64() % 400).collect()
}

#[test]
fn a_rollback_killed_at_any_moment_leaves_the_dataset_whole() {
    if let Ok(root) = std::env::var(CHILD) {
        // The child: roll back until killed.
        let b = backend(Path::new(&root));
        loop {
            b.rollback(Dataset::Logs, "a", false).unwrap();
        }
    }
    let t = tempfile::tempdir().unwrap();
    let root: PathBuf = t.path().to_path_buf();
    let b = backend(&root);
    let live = b.dataset_path(Dataset::Logs);
    fill(&live, b'a');
    b.snapshot(Dataset::Logs, "a", false).unwrap();
    let at_a = contents(&live);
    fill(&live, b'b');
    let at_b = contents(&live);
    let rounds: usize = std::env::var("KILN_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut saw_a = 0;
    for (round, ms) in delays(rounds).into_iter().enumerate() {
        fill(&live, b'b');
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, &root)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let now = contents(&live);
        assert!(
            now == at_a || now == at_b,
            "round {round} (killed after {ms} ms): the dataset is neither the snapshot nor the \
             tree before ({} files)",
            now.len()
        );
        if now == at_a {
            saw_a += 1;
        }
        let report = backend(&root).ensure().unwrap();
        let left: Vec<String> = fs::read_dir(root.join("kiln"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".rollback-"))
            .collect();
        assert!(
            left.is_empty(),
            "round {round}: {left:?} left after {report:?}"
        );
    }
    assert!(
        saw_a > 0,
        "no rollback completed in {rounds} rounds: the drill kills too early"
    );
}
