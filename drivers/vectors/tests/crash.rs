//! kill -9 during adds: the test re-executes its own binary as a child that adds batches
//! (and compacts often) in a loop, SIGKILLs it at varying moments, reopens the directory
//! and checks that every committed batch is whole and nothing else is there.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_vectors::{Metric, Quantisation, StoreOptions, VectorStore};

const CHILD_ENV: &str = "KILN_VECTORS_CRASH_CHILD_DIR";
const DIM: usize = 32;
const BATCH: u64 = 250;

/// The vector stored under `id`: a pure function of the id, so content can be checked.
fn vector(id: u64) -> Vec<f32> {
    (0..DIM)
        .map(|i| ((id * 31 + i as u64) % 97) as f32 - 48.0 + id as f32 * 1e-3)
        .collect()
}

fn options() -> StoreOptions {
    StoreOptions {
        compact_after_segments: 6, // compaction happens often, so kills land in it too
        ..Default::default()
    }
}

/// Child: add consecutive batches forever (until killed).
fn child(dir: &Path) {
    let s = VectorStore::open_with(dir, options()).unwrap();
    let mut next = s.stats("c").unwrap().count as u64;
    loop {
        let ids: Vec<u64> = (next..next + BATCH).collect();
        let v: Vec<f32> = ids.iter().flat_map(|&i| vector(i)).collect();
        let meta = ids.iter().map(|i| format!("m{i}")).collect();
        s.add("c", &ids, &v, Some(meta)).unwrap();
        next += BATCH;
        println!("committed {next}");
    }
}

fn check(dir: &Path) -> usize {
    let s = VectorStore::open_with(dir, options()).unwrap();
    assert!(s.load_problems().is_empty(), "{:?}", s.load_problems());
    let count = s.stats("c").unwrap().count;
    assert_eq!(
        count as u64 % BATCH,
        0,
        "a partial batch is visible: {count} vectors"
    );
    for id in 0..count as u64 + BATCH {
        assert_eq!(
            s.contains("c", id).unwrap(),
            id < count as u64,
            "id {id} with count {count}"
        );
    }
    // Content is intact: sampled vectors find themselves with their metadata.
    for id in (0..count as u64).step_by(97) {
        let hits = s.search("c", &vector(id), 1).unwrap();
        assert_eq!(hits[0][0].id, id);
        assert_eq!(hits[0][0].score, 0.0);
        assert_eq!(hits[0][0].metadata, Some(format!("m{id}")));
    }
    // No stray files: only the manifest and the segments it lists.
    for e in std::fs::read_dir(dir.join("c")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            !name.ends_with(".tmp"),
            "temp file {name} left after reopen"
        );
    }
    count
}

#[test]
fn kill_9_during_add_leaves_a_consistent_collection() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("kiln-vec-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let s = VectorStore::open(&dir).unwrap();
        s.create("c", DIM, Metric::L2, Quantisation::Int8).unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let mut last = 0;
    let mut grew = 0;
    for round in 0..8u64 {
        let mut child = Command::new(&exe)
            .args([
                "kill_9_during_add_leaves_a_consistent_collection",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until this child has committed a batch, then kill it at a varying moment.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("committed") {
                    let _ = tx.send(());
                }
            }
        });
        let started = rx.recv_timeout(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5 + round * 23));
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        let _ = reader.join();
        assert!(started.is_ok(), "child never committed a batch within 60 s");
        assert!(
            status.code().is_none(),
            "child exited by itself: {status:?}"
        );
        let count = check(&dir);
        assert!(
            count >= last,
            "committed batches disappeared: {count} < {last}"
        );
        if count > last {
            grew += 1;
        }
        last = count;
    }
    assert!(
        grew >= 2,
        "the child hardly committed anything ({last} vectors)"
    );
    println!("kill -9 rounds: 8, final count {last}");
    let _ = std::fs::remove_dir_all(&dir);
}
