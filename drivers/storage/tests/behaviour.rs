//! The same behaviour suite against both backends: the dir backend on a temp dir and the
//! ZFS backend on a real zfs-fuse pool.

mod common;

use std::fs;

use common::{Env, bytes, write};
use kiln_storage::{BackendKind, Dataset, RetentionConfig, Storage, StorageError, StoragePolicy};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
// 2026-11-16 00:00:00 UTC, a Monday.
const MON: i64 = 1_794_787_200;

/// Restored trees stay writable for the daemon's user (permission bits, not root's bypass).
fn assert_owner_writable(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let md = fs::symlink_metadata(p).unwrap();
    assert!(
        md.permissions().mode() & 0o200 != 0,
        "{} is not writable",
        p.display()
    );
    if md.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            assert_owner_writable(&e.unwrap().path());
        }
    }
}

fn status_lists_four_datasets(env: Env) {
    let st = env.storage.status().unwrap();
    assert_eq!(st.backend, env.config.backend);
    assert_eq!(st.datasets.len(), 4);
    let names: Vec<_> = st.datasets.iter().map(|d| d.dataset.name()).collect();
    assert_eq!(names, ["models", "embeddings", "checkpoints", "logs"]);
    for d in &st.datasets {
        assert!(d.present, "{d:?}");
        assert!(d.mountpoint.is_dir(), "{d:?}");
        assert_eq!(d.mountpoint, env.storage.dataset_path(d.dataset));
        let props: Vec<_> = d.properties.iter().map(|p| p.property.as_str()).collect();
        assert_eq!(props, ["compression", "recordsize", "atime", "quota"]);
        let prof = env.config.profiles.resolve(d.dataset);
        assert_eq!(d.properties[0].requested, prof.compression);
        assert_eq!(d.properties[1].requested, prof.recordsize);
        assert!(d.available_bytes > 0, "{d:?}");
    }
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["backend"], env.config.backend.as_str());
    assert_eq!(json["datasets"][0]["properties"][0]["requested"], "zstd-3");
    assert!(json["datasets"][0]["properties"][0]["effective"].is_string());
    assert!(
        st.description
            .starts_with(&format!("{} backend", env.config.backend.as_str()))
    );
}

fn import_creates_versions_and_snapshots(env: Env) {
    let s = &env.storage;
    let src = env.scratch().join("resnet");
    write(&src.join("model.xml"), b"<net/>");
    write(&src.join("weights/model.bin"), &bytes(1, 3 << 20));
    let mut seen = Vec::new();
    let imp = s
        .import_model(&src, "resnet", &mut |c, t| seen.push((c, t)))
        .unwrap();
    assert_eq!((imp.version, imp.snapshot.as_str()), (1, "resnet-v1"));
    assert_eq!(imp.files, 2);
    assert_eq!(imp.bytes, (3 << 20) + 6);
    assert_eq!(seen.last(), Some(&(imp.bytes, imp.bytes)));
    let models = s.dataset_path(Dataset::Models);
    assert_eq!(imp.path, models.join("resnet/1"));
    assert_eq!(
        fs::read(models.join("resnet/1/weights/model.bin")).unwrap(),
        bytes(1, 3 << 20)
    );

    let file = env.scratch().join("real.onnx");
    write(&file, &bytes(2, 1000));
    let link = env.scratch().join("model.onnx");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let imp2 = s.import_model(&link, "resnet", &mut |_, _| {}).unwrap();
    assert_eq!(imp2.version, 2);
    assert_eq!(
        fs::read(models.join("resnet/2/model.onnx")).unwrap(),
        bytes(2, 1000)
    );
    assert_eq!(s.model_versions("resnet").unwrap(), [1, 2]);

    let snaps = s.list_snapshots(Some(Dataset::Models)).unwrap();
    let names: Vec<_> = snaps.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["resnet-v1", "resnet-v2"]);
    assert!(
        snaps
            .iter()
            .all(|x| x.keep && x.managed && x.dataset == Dataset::Models)
    );
    // No staging leftovers.
    let left: Vec<_> = fs::read_dir(models.join("resnet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

fn rollback_model_restores_exact_bytes(env: Env) {
    let s = &env.storage;
    let sc = env.scratch();
    let (a, b) = (bytes(10, 2 << 20), bytes(11, 2 << 20));
    write(&sc.join("v1/w.bin"), &a);
    write(&sc.join("v2/w.bin"), &b);
    write(&sc.join("other/o.bin"), b"other-1");
    s.import_model(&sc.join("v1"), "bert", &mut |_, _| {})
        .unwrap();
    s.import_model(&sc.join("v2"), "bert", &mut |_, _| {})
        .unwrap();
    s.import_model(&sc.join("other"), "other", &mut |_, _| {})
        .unwrap();
    let models = s.dataset_path(Dataset::Models);
    // Damage version 1 in place and change the other model after its snapshot.
    let mut damaged = a.clone();
    damaged[12345] ^= 0xff;
    fs::write(models.join("bert/1/w.bin"), &damaged).unwrap();
    fs::write(models.join("other/1/o.bin"), b"other-edited").unwrap();

    let rb = s.rollback_model("bert", 1).unwrap();
    assert_eq!((rb.version, rb.snapshot.as_str()), (1, "bert-v1"));
    assert_eq!(rb.versions, [1]);
    assert_eq!(rb.removed_versions, [2]);
    assert_eq!(fs::read(models.join("bert/1/w.bin")).unwrap(), a);
    assert!(!models.join("bert/2").exists());
    assert_owner_writable(&models.join("bert"));
    assert_eq!(
        fs::read(models.join("other/1/o.bin")).unwrap(),
        b"other-edited"
    );

    // Roll forward again from version 2's snapshot.
    let rb = s.rollback_model("bert", 2).unwrap();
    assert_eq!(rb.versions, [1, 2]);
    assert_eq!(fs::read(models.join("bert/2/w.bin")).unwrap(), b);
    assert_eq!(fs::read(models.join("bert/1/w.bin")).unwrap(), a);

    match s.rollback_model("bert", 7).unwrap_err() {
        StorageError::ModelVersionNotFound { known, .. } => assert_eq!(known, [1, 2]),
        e => panic!("{e}"),
    }
    // A new import continues after the highest version ever made.
    let imp = s
        .import_model(&sc.join("v1"), "bert", &mut |_, _| {})
        .unwrap();
    assert_eq!(imp.version, 3);
    let _ = s.rollback_model("bert", 1).unwrap();
    let imp = s
        .import_model(&sc.join("v1"), "bert", &mut |_, _| {})
        .unwrap();
    assert_eq!(imp.version, 4, "versions are never reused");
}

fn dataset_rollback_and_newer_snapshots(env: Env) {
    let s = &env.storage;
    let ck = s.dataset_path(Dataset::Checkpoints);
    write(&ck.join("job1/state.pt"), b"step-100");
    s.snapshot_at(Dataset::Checkpoints, "job1-100", false, MON)
        .unwrap();
    write(&ck.join("job1/state.pt"), b"step-200");
    s.snapshot_at(Dataset::Checkpoints, "job1-200", false, MON + 60)
        .unwrap();
    write(&ck.join("job1/state.pt"), b"step-300-unsaved");

    match s
        .rollback(Dataset::Checkpoints, "job1-100", false)
        .unwrap_err()
    {
        StorageError::NewerSnapshots { newer, .. } => assert_eq!(newer, ["job1-200"]),
        e => panic!("{e}"),
    }
    assert_eq!(
        fs::read(ck.join("job1/state.pt")).unwrap(),
        b"step-300-unsaved"
    );

    let r = s.rollback(Dataset::Checkpoints, "job1-200", false).unwrap();
    assert!(r.destroyed.is_empty());
    assert_eq!(fs::read(ck.join("job1/state.pt")).unwrap(), b"step-200");
    assert_owner_writable(&ck);

    // A keep-marked newer snapshot blocks destroy_newer.
    s.snapshot_at(Dataset::Checkpoints, "job1-keep", true, MON + 120)
        .unwrap();
    match s
        .rollback(Dataset::Checkpoints, "job1-100", true)
        .unwrap_err()
    {
        StorageError::SnapshotProtected { name, .. } => assert_eq!(name, "job1-keep"),
        e => panic!("{e}"),
    }
    assert_eq!(fs::read(ck.join("job1/state.pt")).unwrap(), b"step-200");

    let s2 = Env::new(env.config.backend, |_| {});
    let c2 = s2.storage.dataset_path(Dataset::Checkpoints);
    write(&c2.join("f"), b"one");
    s2.storage
        .snapshot_at(Dataset::Checkpoints, "a", false, MON)
        .unwrap();
    write(&c2.join("f"), b"two");
    s2.storage
        .snapshot_at(Dataset::Checkpoints, "b", false, MON + 1)
        .unwrap();
    let r = s2
        .storage
        .rollback(Dataset::Checkpoints, "a", true)
        .unwrap();
    assert_eq!(r.destroyed, ["b"]);
    assert_eq!(fs::read(c2.join("f")).unwrap(), b"one");
    let names: Vec<_> = s2
        .storage
        .list_snapshots(Some(Dataset::Checkpoints))
        .unwrap()
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert_eq!(names, ["a"]);

    // Same second, names that sort against their order: creation order still decides.
    for (n, body) in [("z-first", "1"), ("m-second", "2"), ("a-third", "3")] {
        write(&c2.join("f"), body.as_bytes());
        s2.storage
            .snapshot_at(Dataset::Checkpoints, n, false, MON + 7)
            .unwrap();
    }
    let names: Vec<_> = s2
        .storage
        .list_snapshots(Some(Dataset::Checkpoints))
        .unwrap()
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert_eq!(names, ["a", "z-first", "m-second", "a-third"]);
    match s2
        .storage
        .rollback(Dataset::Checkpoints, "z-first", false)
        .unwrap_err()
    {
        StorageError::NewerSnapshots { newer, .. } => assert_eq!(newer, ["m-second", "a-third"]),
        e => panic!("{e}"),
    }
    let r = s2
        .storage
        .rollback(Dataset::Checkpoints, "m-second", true)
        .unwrap();
    assert_eq!(r.destroyed, ["a-third"]);
    assert_eq!(fs::read(c2.join("f")).unwrap(), b"2");
}

fn prune_keeps_what_the_grid_says(env: Env) {
    let s = &env.storage;
    let ck = s.dataset_path(Dataset::Checkpoints);
    // Snapshots at: 5 days ago noon, 2 days ago noon, yesterday 10:00 and 11:00, today
    // 08:10, 08:40, 09:05; now is today 09:30.
    let today = MON + 4 * DAY;
    let times = [
        ("d-5", today - 5 * DAY + 12 * HOUR),
        ("d-2", today - 2 * DAY + 12 * HOUR),
        ("y10", today - DAY + 10 * HOUR),
        ("y11", today - DAY + 11 * HOUR),
        ("t0810", today + 8 * HOUR + 600),
        ("t0840", today + 8 * HOUR + 2400),
        ("t0905", today + 9 * HOUR + 300),
    ];
    for (i, (n, t)) in times.iter().enumerate() {
        write(&ck.join("state"), format!("{i}").as_bytes());
        s.snapshot_at(Dataset::Checkpoints, n, false, *t).unwrap();
    }
    let now = today + 9 * HOUR + 1800;
    let r = s.prune(Dataset::Checkpoints, now).unwrap();
    // keep_last 1 -> t0905; hourly 2 -> t0905 (09h), t0840 (08h);
    // daily 2 -> t0905 (today), y11 (yesterday).
    let mut kept: Vec<_> = r.kept.iter().map(|k| k.name.as_str()).collect();
    kept.sort();
    assert_eq!(kept, ["t0840", "t0905", "y11"]);
    let mut removed: Vec<_> = r.removed.iter().map(String::as_str).collect();
    removed.sort();
    assert_eq!(removed, ["d-2", "d-5", "t0810", "y10"]);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let mut left: Vec<_> = s
        .list_snapshots(Some(Dataset::Checkpoints))
        .unwrap()
        .into_iter()
        .map(|x| x.name)
        .collect();
    left.sort();
    assert_eq!(left, ["t0840", "t0905", "y11"]);
    let why = &r.kept.iter().find(|k| k.name == "y11").unwrap().reasons;
    assert!(why.iter().any(|w| w.starts_with("daily")), "{why:?}");
}

fn held_and_keep_survive_prune(env: Env) {
    let s = &env.storage;
    let lg = s.dataset_path(Dataset::Logs);
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        write(&lg.join("log"), n.as_bytes());
        s.snapshot_at(Dataset::Logs, n, *n == "b", MON + i as i64)
            .unwrap();
    }
    s.hold(Dataset::Logs, "c", "job-42").unwrap();
    let info = s.list_snapshots(Some(Dataset::Logs)).unwrap();
    assert!(info.iter().find(|x| x.name == "c").unwrap().held);
    assert!(info.iter().find(|x| x.name == "b").unwrap().keep);

    match s.destroy_snapshot(Dataset::Logs, "c").unwrap_err() {
        StorageError::SnapshotProtected { reason, .. } => {
            assert!(reason.contains("held"), "{reason}")
        }
        e => panic!("{e}"),
    }
    let r = s.prune(Dataset::Logs, MON + DAY * 30).unwrap();
    let mut removed = r.removed.clone();
    removed.sort();
    assert_eq!(removed, ["a", "d"]);
    let prot: Vec<_> = r.protected.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(prot, ["b", "c"]);

    s.release(Dataset::Logs, "c", "job-42").unwrap();
    assert!(matches!(
        s.release(Dataset::Logs, "c", "job-42").unwrap_err(),
        StorageError::HoldNotFound { .. }
    ));
    let r = s.prune(Dataset::Logs, MON + DAY * 30).unwrap();
    assert_eq!(r.removed, ["c"]);
    let left: Vec<_> = s
        .list_snapshots(Some(Dataset::Logs))
        .unwrap()
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert_eq!(left, ["b"]);
}

fn bad_input_gives_clear_errors_and_keeps_data(env: Env) {
    let s = &env.storage;
    let m = s.dataset_path(Dataset::Models);
    write(&m.join("keepme.txt"), b"precious");
    s.snapshot(Dataset::Models, "manual-1", false).unwrap();
    assert!(matches!(
        s.snapshot(Dataset::Models, "manual-1", false).unwrap_err(),
        StorageError::SnapshotExists { .. }
    ));
    let e = s.snapshot(Dataset::Models, "bad name", false).unwrap_err();
    assert!(e.to_string().contains("snapshot name"), "{e}");
    assert!(matches!(
        s.rollback(Dataset::Models, "nope", false).unwrap_err(),
        StorageError::SnapshotNotFound { .. }
    ));
    let e = s
        .import_model(&env.scratch().join("missing"), "m", &mut |_, _| {})
        .unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    let e = s.import_model(&m, "loop", &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("outside the models dataset"), "{e}");
    let ck = s.dataset_path(Dataset::Checkpoints);
    write(&ck.join("job7/state"), b"s");
    let c = s.checkpoint("job7", "step-10").unwrap();
    assert_eq!(
        (c.dataset, c.name.as_str(), c.keep),
        (Dataset::Checkpoints, "job7-step-10", false)
    );
    assert!(s.checkpoint("job 7", "x").is_err());
    let e = s
        .import_model(&env.scratch(), "../evil", &mut |_, _| {})
        .unwrap_err();
    assert!(e.to_string().contains("model name"), "{e}");
    assert!(!m.join("m").exists());
    assert_eq!(fs::read(m.join("keepme.txt")).unwrap(), b"precious");
    // Ensure again: nothing created, nothing removed.
    let rep = s.ensure().unwrap();
    assert!(rep.created.is_empty(), "{rep:?}");
    assert_eq!(fs::read(m.join("keepme.txt")).unwrap(), b"precious");
    assert_eq!(s.list_snapshots(None).unwrap().len(), 2);
}

fn concurrent_imports_get_distinct_versions(env: Env) {
    let s = &env.storage;
    let sc = env.scratch();
    for i in 0..3u64 {
        write(&sc.join(format!("src{i}/w.bin")), &bytes(20 + i, 256 << 10));
    }
    let mut got: Vec<(u32, u64)> = std::thread::scope(|t| {
        let hs: Vec<_> = (0..3u64)
            .map(|i| {
                let src = sc.join(format!("src{i}"));
                t.spawn(move || {
                    (
                        s.import_model(&src, "shared", &mut |_, _| {})
                            .unwrap()
                            .version,
                        i,
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    got.sort();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 2, 3]);
    let models = s.dataset_path(Dataset::Models);
    for (v, i) in got {
        assert_eq!(
            fs::read(models.join(format!("shared/{v}/w.bin"))).unwrap(),
            bytes(20 + i, 256 << 10)
        );
    }
    assert_eq!(s.list_snapshots(Some(Dataset::Models)).unwrap().len(), 3);
}

macro_rules! behaviour_suite {
    ($m:ident, $kind:expr) => {
        mod $m {
            use super::*;

            fn env() -> Env {
                Env::new($kind, |_| {})
            }

            #[test]
            fn status_lists_four_datasets() {
                super::status_lists_four_datasets(env())
            }
            #[test]
            fn import_creates_versions_and_snapshots() {
                super::import_creates_versions_and_snapshots(env())
            }
            #[test]
            fn rollback_model_restores_exact_bytes() {
                super::rollback_model_restores_exact_bytes(env())
            }
            #[test]
            fn dataset_rollback_and_newer_snapshots() {
                super::dataset_rollback_and_newer_snapshots(env())
            }
            #[test]
            fn prune_keeps_what_the_grid_says() {
                super::prune_keeps_what_the_grid_says(Env::new($kind, |c| {
                    c.retention = RetentionConfig {
                        keep_last: 1,
                        hourly: 2,
                        daily: 2,
                        weekly: 0,
                    };
                }))
            }
            #[test]
            fn held_and_keep_survive_prune() {
                super::held_and_keep_survive_prune(Env::new($kind, |c| {
                    c.retention = RetentionConfig {
                        keep_last: 0,
                        hourly: 0,
                        daily: 0,
                        weekly: 0,
                    };
                }))
            }
            #[test]
            fn concurrent_imports_get_distinct_versions() {
                super::concurrent_imports_get_distinct_versions(env())
            }
            #[test]
            fn bad_input_gives_clear_errors_and_keeps_data() {
                super::bad_input_gives_clear_errors_and_keeps_data(env())
            }
        }
    };
}

behaviour_suite!(dir, BackendKind::Dir);
behaviour_suite!(zfs, BackendKind::Zfs);

#[allow(dead_code)]
fn _assert_object_safe(_: &dyn Storage) {}
