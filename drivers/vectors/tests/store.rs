//! Collections end to end on a temporary directory: lifecycle, persistence across reopen,
//! every bad input (with the collection unchanged afterwards), corruption and locking.

use std::path::{Path, PathBuf};

use kiln_vectors::bench::gaussian;
use kiln_vectors::{Hit, Metric, Quantisation, StoreOptions, VectorError, VectorStore};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("kiln-vec-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const DIM: usize = 16;

fn filled(dir: &Path, metric: Metric, quant: Quantisation) -> VectorStore {
    let s = VectorStore::open(dir).unwrap();
    s.create("docs", DIM, metric, quant).unwrap();
    let ids: Vec<u64> = (100..300).collect();
    let v = gaussian(ids.len(), DIM, 3);
    let meta: Vec<String> = ids.iter().map(|i| format!("doc-{i}")).collect();
    assert_eq!(s.add("docs", &ids, &v, Some(meta)).unwrap(), 200);
    s
}

fn snapshot(s: &VectorStore) -> (usize, Vec<Vec<Hit>>) {
    let q = gaussian(3, DIM, 77);
    (
        s.stats("docs").unwrap().count,
        s.search("docs", &q, 5).unwrap(),
    )
}

#[test]
fn lifecycle_and_persistence_across_reopen() {
    let dir = TempDir::new("life");
    for (metric, quant) in [
        (Metric::InnerProduct, Quantisation::None),
        (Metric::Cosine, Quantisation::Int8),
        (Metric::L2, Quantisation::Int8),
    ] {
        let _ = std::fs::remove_dir_all(dir.path());
        let s = filled(dir.path(), metric, quant);
        // A stored vector finds itself first, with its metadata.
        let v = gaussian(200, DIM, 3);
        let hits = s.search("docs", &v[5 * DIM..6 * DIM], 3).unwrap();
        assert_eq!(hits[0][0].id, 105, "{metric:?} {quant:?}");
        assert_eq!(hits[0][0].metadata.as_deref(), Some("doc-105"));
        match metric {
            Metric::L2 => {
                assert!(hits[0][0].score.abs() < 1e-4 && hits[0][1].score > hits[0][0].score)
            }
            Metric::Cosine => assert!((hits[0][0].score - 1.0).abs() < 1e-5),
            Metric::InnerProduct => assert!(hits[0][0].score >= hits[0][1].score),
        }
        assert_eq!(s.delete("docs", &[105, 106]).unwrap(), 198);
        let hits = s.search("docs", &v[5 * DIM..6 * DIM], 3).unwrap();
        assert!(hits[0].iter().all(|h| h.id != 105));
        let fresh = gaussian(1, DIM, 4242);
        s.add("docs", &[5000], &fresh, None).unwrap();
        let before = snapshot(&s);
        let info = s.stats("docs").unwrap();
        assert_eq!(
            (info.count, info.dim, info.metric, info.quantisation),
            (199, DIM, metric, quant)
        );
        assert!(info.memory_bytes >= 199 * DIM * 4);
        assert_eq!(s.memory_bytes("docs").unwrap(), info.memory_bytes);
        let per = if quant == Quantisation::Int8 {
            DIM * 4 + 64 + 4
        } else {
            DIM * 4
        };
        let est = s.estimate_add_bytes("docs", 1000, 5000).unwrap();
        assert!(
            est >= 1000 * per + 5000 && est <= 1000 * (per + 64) + 5000,
            "{est}"
        );
        assert_eq!(info.segments, 3);
        drop(s);

        let s = VectorStore::open(dir.path()).unwrap();
        assert!(s.load_problems().is_empty(), "{:?}", s.load_problems());
        assert_eq!(
            snapshot(&s),
            before,
            "{metric:?} {quant:?} changed across reopen"
        );
        assert!(!s.contains("docs", 105).unwrap());
        assert!(s.contains("docs", 5000).unwrap());
        let hits = s.search("docs", &fresh, 1).unwrap();
        assert_eq!((hits[0][0].id, hits[0][0].metadata.clone()), (5000, None));

        // Compaction keeps the same content in one segment, also across reopen.
        let info = s.compact("docs").unwrap();
        assert_eq!(info.segments, 1);
        assert_eq!(snapshot(&s), before);
        drop(s);
        let s = VectorStore::open(dir.path()).unwrap();
        assert_eq!(snapshot(&s), before);
        let files = std::fs::read_dir(dir.path().join("docs")).unwrap().count();
        assert_eq!(files, 2, "old segments not removed after compaction");

        s.drop_collection("docs").unwrap();
        assert!(matches!(
            s.stats("docs"),
            Err(VectorError::UnknownCollection(_))
        ));
        assert!(!dir.path().join("docs").exists());
        drop(s);
        let s = VectorStore::open(dir.path()).unwrap();
        assert!(s.list().is_empty());
    }
}

#[test]
fn k_larger_than_collection_returns_everything() {
    let dir = TempDir::new("bigk");
    let s = VectorStore::open(dir.path()).unwrap();
    s.create("small", 3, Metric::L2, Quantisation::Int8)
        .unwrap();
    s.add(
        "small",
        &[1, 2, 3],
        &[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 5.0, 0.0, 0.0],
        None,
    )
    .unwrap();
    let hits = s.search("small", &[0.0, 0.0, 0.0], 1000).unwrap();
    let ids: Vec<u64> = hits[0].iter().map(|h| h.id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(hits[0][2].score, 25.0);
    s.create("empty", 3, Metric::Cosine, Quantisation::None)
        .unwrap();
    assert_eq!(
        s.search("empty", &[1.0, 0.0, 0.0], 5).unwrap(),
        vec![vec![]]
    );
}

#[test]
fn bad_input_is_rejected_and_leaves_the_collection_unchanged() {
    let dir = TempDir::new("bad");
    let s = filled(dir.path(), Metric::Cosine, Quantisation::Int8);
    let before = snapshot(&s);
    let files_before = std::fs::read_dir(dir.path().join("docs")).unwrap().count();
    let one = gaussian(1, DIM, 9);
    let two = gaussian(2, DIM, 9);
    let mut nan = one.clone();
    nan[3] = f32::NAN;
    let mut inf = two.clone();
    inf[DIM + 1] = f32::INFINITY;

    let cases: Vec<(&str, VectorError)> = vec![
        (
            "wrong dimension",
            s.add("docs", &[1], &one[..DIM - 1], None).unwrap_err(),
        ),
        (
            "count mismatch",
            s.add("docs", &[1, 2, 3], &two, None).unwrap_err(),
        ),
        (
            "duplicate existing id",
            s.add("docs", &[1, 150], &two, None).unwrap_err(),
        ),
        (
            "duplicate in request",
            s.add("docs", &[1, 1], &two, None).unwrap_err(),
        ),
        ("NaN", s.add("docs", &[1], &nan, None).unwrap_err()),
        ("infinity", s.add("docs", &[1, 2], &inf, None).unwrap_err()),
        (
            "zero vector (cosine)",
            s.add("docs", &[1], &[0.0; DIM], None).unwrap_err(),
        ),
        (
            "metadata count",
            s.add("docs", &[1, 2], &two, Some(vec!["a".into()]))
                .unwrap_err(),
        ),
        ("empty add", s.add("docs", &[], &[], None).unwrap_err()),
        (
            "unknown collection add",
            s.add("nope", &[1], &one, None).unwrap_err(),
        ),
        (
            "unknown id delete",
            s.delete("docs", &[150, 99_999]).unwrap_err(),
        ),
        (
            "duplicate id delete",
            s.delete("docs", &[150, 150]).unwrap_err(),
        ),
        (
            "unknown collection delete",
            s.delete("nope", &[1]).unwrap_err(),
        ),
        ("k = 0", s.search("docs", &one, 0).unwrap_err()),
        ("k < 0", s.search("docs", &one, -3).unwrap_err()),
        (
            "query dimension",
            s.search("docs", &one[..5], 3).unwrap_err(),
        ),
        ("query NaN", s.search("docs", &nan, 3).unwrap_err()),
        (
            "unknown collection search",
            s.search("nope", &one, 3).unwrap_err(),
        ),
        ("unknown collection stats", s.stats("nope").unwrap_err()),
        (
            "unknown collection drop",
            s.drop_collection("nope").unwrap_err(),
        ),
        (
            "existing collection",
            s.create("docs", DIM, Metric::L2, Quantisation::None)
                .unwrap_err(),
        ),
        (
            "bad name",
            s.create("../etc", DIM, Metric::L2, Quantisation::None)
                .unwrap_err(),
        ),
        (
            "hidden name",
            s.create(".x", DIM, Metric::L2, Quantisation::None)
                .unwrap_err(),
        ),
        (
            "zero dimension",
            s.create("z", 0, Metric::L2, Quantisation::None)
                .unwrap_err(),
        ),
        (
            "huge dimension",
            s.create("z", 1 << 20, Metric::L2, Quantisation::None)
                .unwrap_err(),
        ),
    ];
    let expect = [
        "wrong dimension",
        "count mismatch",
        "already exists",
        "duplicate id 1 in the request",
        "non-finite",
        "non-finite",
        "all zeros",
        "metadata entries count mismatch",
        "empty request",
        "unknown collection `nope`",
        "unknown id 99999",
        "duplicate id 150",
        "unknown collection",
        "k must be at least 1 (got 0)",
        "got -3",
        "wrong dimension",
        "non-finite",
        "unknown collection",
        "unknown collection",
        "unknown collection",
        "already exists",
        "invalid collection name",
        "invalid collection name",
        "invalid dimension 0",
        "invalid dimension",
    ];
    assert_eq!(cases.len(), expect.len());
    for ((what, err), want) in cases.iter().zip(expect) {
        let msg = err.to_string();
        assert!(msg.contains(want), "{what}: `{msg}` lacks `{want}`");
    }
    assert!(matches!(cases[2].1, VectorError::DuplicateId(150)));
    assert!(matches!(
        cases[4].1,
        VectorError::NonFinite {
            index: 0,
            position: 3
        }
    ));
    assert!(matches!(
        cases[5].1,
        VectorError::NonFinite {
            index: 1,
            position: 1
        }
    ));

    assert_eq!(
        snapshot(&s),
        before,
        "a rejected request changed the collection"
    );
    let files_after = std::fs::read_dir(dir.path().join("docs")).unwrap().count();
    assert_eq!(
        files_before, files_after,
        "a rejected request left files behind"
    );
    assert_eq!(s.list().len(), 1);
    drop(s);
    let s = VectorStore::open(dir.path()).unwrap();
    assert_eq!(snapshot(&s), before, "a rejected request reached the disk");
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = TempDir::new("lock");
    let s = VectorStore::open(dir.path()).unwrap();
    let err = VectorStore::open(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    drop(s);
    VectorStore::open(dir.path()).unwrap();
}

#[test]
fn corrupt_segment_is_reported_and_other_collections_load() {
    let dir = TempDir::new("corrupt");
    let s = filled(dir.path(), Metric::InnerProduct, Quantisation::None);
    s.create("other", 4, Metric::L2, Quantisation::None)
        .unwrap();
    s.add("other", &[1], &[1.0, 2.0, 3.0, 4.0], None).unwrap();
    drop(s);
    let seg = std::fs::read_dir(dir.path().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "add"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let s = VectorStore::open(dir.path()).unwrap();
    assert_eq!(s.load_problems().len(), 1);
    assert!(
        s.load_problems()[0].contains("checksum"),
        "{:?}",
        s.load_problems()
    );
    assert!(s.stats("docs").is_err());
    assert_eq!(s.stats("other").unwrap().count, 1);
    // Files of the broken collection are left for the operator.
    assert!(seg.exists());
}

#[test]
fn interrupted_create_drop_and_orphans_are_cleaned_at_open() {
    let dir = TempDir::new("orphans");
    let s = filled(dir.path(), Metric::L2, Quantisation::None);
    let before = snapshot(&s);
    drop(s);
    let docs = dir.path().join("docs");
    // A segment whose manifest never committed, and a half-written manifest.
    std::fs::write(docs.join("seg-00000099.add"), b"partial").unwrap();
    std::fs::write(docs.join("manifest.json.tmp"), b"{").unwrap();
    std::fs::create_dir(dir.path().join(".creating-x-1")).unwrap();
    std::fs::create_dir(dir.path().join(".dropped-y-1")).unwrap();
    let s = VectorStore::open(dir.path()).unwrap();
    assert_eq!(snapshot(&s), before);
    assert!(!docs.join("seg-00000099.add").exists());
    assert!(!docs.join("manifest.json.tmp").exists());
    assert!(!dir.path().join(".creating-x-1").exists());
    assert!(!dir.path().join(".dropped-y-1").exists());
}

#[test]
fn many_small_adds_compact_automatically() {
    let dir = TempDir::new("compact");
    let opts = StoreOptions {
        compact_after_segments: 4,
        ..Default::default()
    };
    let s = VectorStore::open_with(dir.path(), opts.clone()).unwrap();
    s.create("c", 2, Metric::InnerProduct, Quantisation::None)
        .unwrap();
    for i in 0..20u64 {
        s.add("c", &[i], &[i as f32, 1.0], Some(vec![format!("m{i}")]))
            .unwrap();
        if i % 3 == 0 {
            s.delete("c", &[i]).unwrap();
        }
    }
    let info = s.stats("c").unwrap();
    assert!(info.segments <= 5, "{info:?}");
    assert_eq!(info.count, 13);
    let before = s.search("c", &[1.0, 0.0], 100).unwrap();
    drop(s);
    let s = VectorStore::open_with(dir.path(), opts).unwrap();
    assert_eq!(s.search("c", &[1.0, 0.0], 100).unwrap(), before);
    assert_eq!(before[0][0].id, 19);
    assert_eq!(before[0][0].metadata.as_deref(), Some("m19"));
}

#[test]
fn searches_with_several_threads_match_one_thread() {
    for quant in [Quantisation::None, Quantisation::Int8] {
        let dir1 = TempDir::new("t1");
        let dir2 = TempDir::new("t2");
        let s1 = filled(dir1.path(), Metric::InnerProduct, quant);
        let s2 = VectorStore::open_with(
            dir2.path(),
            StoreOptions {
                pool: kiln_vectors::PoolConfig::threads(3),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s2.pool().threads(), 3);
        s2.create("docs", DIM, Metric::InnerProduct, quant).unwrap();
        let ids: Vec<u64> = (100..300).collect();
        s2.add("docs", &ids, &gaussian(200, DIM, 3), None).unwrap();
        let q = gaussian(20, DIM, 1);
        // 1 and 20 queries: single-query and blocked paths.
        for nq in [1, 20] {
            let a = s1.search("docs", &q[..nq * DIM], 7).unwrap();
            let b = s2.search("docs", &q[..nq * DIM], 7).unwrap();
            for (x, y) in a.iter().zip(&b) {
                let xi: Vec<(u64, f32)> = x.iter().map(|h| (h.id, h.score)).collect();
                let yi: Vec<(u64, f32)> = y.iter().map(|h| (h.id, h.score)).collect();
                assert_eq!(xi, yi, "{quant:?} nq={nq}");
            }
        }
    }
}

#[test]
fn store_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<VectorStore>();
    let dir = TempDir::new("threads");
    let s = std::sync::Arc::new(filled(dir.path(), Metric::L2, Quantisation::Int8));
    let q = gaussian(2, DIM, 5);
    let want = s.search("docs", &q, 4).unwrap();
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let s = s.clone();
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..20u64 {
                    s.add(
                        "docs",
                        &[10_000 + t * 100 + i],
                        &gaussian(1, DIM, 1000 + t * 100 + i),
                        None,
                    )
                    .unwrap();
                    s.search("docs", &q, 4).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(s.stats("docs").unwrap().count, 280);
    // The original neighbours are still found when nothing closer was added.
    let got = s.search("docs", &q, 4).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!(g[0].score <= w[0].score);
    }
}
