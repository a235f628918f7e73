//! ZFS-only behaviour on a real zfs-fuse pool: probed fallbacks in status, drift
//! correction, faults (pool missing, zfs missing, property rejected, quota full), foreign
//! datasets and snapshots left alone, pool health, scrubs and command metrics.

mod common;

use std::fs;

use common::{Env, TestPool, bytes, write};
use kiln_storage::{BackendKind, Dataset, StorageConfig, StorageError, StoragePolicy};

fn zfs_env() -> Env {
    Env::new(BackendKind::Zfs, |_| {})
}

#[test]
fn status_shows_requested_effective_and_fallback_reasons() {
    let env = zfs_env();
    let st = env.storage.status().unwrap();
    let pool = env.pool.as_ref().unwrap();
    let prop = |ds: Dataset, p: &str| {
        st.datasets
            .iter()
            .find(|d| d.dataset == ds)
            .unwrap()
            .properties
            .iter()
            .find(|x| x.property == p)
            .unwrap()
            .clone()
    };
    // zfs-fuse has no zstd or lz4 and caps recordsize at 128K.
    let c = prop(Dataset::Models, "compression");
    assert_eq!(
        (c.requested.as_str(), c.effective.as_str()),
        ("zstd-3", "gzip-3")
    );
    assert!(
        c.reason.as_deref().unwrap().contains("not supported"),
        "{c:?}"
    );
    let r = prop(Dataset::Models, "recordsize");
    assert_eq!((r.requested.as_str(), r.effective.as_str()), ("1M", "128K"));
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("largest recordsize 128K"),
        "{r:?}"
    );
    let e = prop(Dataset::Embeddings, "compression");
    assert_eq!(
        (e.requested.as_str(), e.effective.as_str()),
        ("lz4", "lzjb")
    );
    assert!(prop(Dataset::Embeddings, "recordsize").reason.is_none());
    let l = prop(Dataset::Logs, "compression");
    assert_eq!(
        (
            l.effective.as_str(),
            prop(Dataset::Logs, "recordsize").effective.as_str()
        ),
        ("gzip-9", "4K")
    );
    let q = prop(Dataset::Checkpoints, "quota");
    assert_eq!(
        (q.requested.as_str(), q.effective.as_str()),
        ("500G", "500G")
    );
    assert_eq!(prop(Dataset::Models, "atime").effective, "off");
    for d in &st.datasets {
        assert_eq!(d.name, format!("{}/kiln/{}", pool.name, d.dataset.name()));
        assert!(d.created_by_kiln);
        assert!(d.mountpoint.starts_with(pool.mnt()));
    }
    // Fallbacks are also in the ensure report, one per changed property.
    assert_eq!(
        st.last_ensure.fallbacks.len(),
        5,
        "{:?}",
        st.last_ensure.fallbacks
    );
    let f = st.features.as_ref().unwrap();
    assert_eq!(f.max_recordsize, 128 << 10);
    assert!(!f.json);
    let p = st.pool.as_ref().unwrap();
    assert_eq!(
        (p.name.as_str(), p.health.as_str()),
        (pool.name.as_str(), "ONLINE")
    );
    assert!(p.size_bytes > 200 << 20 && p.free_bytes > 0);
    assert_eq!(p.scrub.state, "none");
    let json = serde_json::to_string(&st).unwrap();
    assert!(
        json.contains("\"reason\":\"compression zstd-3 is not supported"),
        "{json}"
    );
}

#[test]
fn drift_is_corrected_and_reported_and_foreign_things_survive() {
    let env = zfs_env();
    let pool = env.pool.as_ref().unwrap();
    let logs = format!("{}/kiln/logs", pool.name);
    pool.zfs(&["set", "compression=off", &logs]);
    pool.zfs(&["set", "atime=on", &logs]);
    let foreign = format!("{}/kiln/userdata", pool.name);
    pool.zfs(&[
        "create",
        "-o",
        &format!("mountpoint={}", pool.dir.path().join("user").display()),
        &foreign,
    ]);
    pool.zfs(&["snapshot", &format!("{logs}@operator")]);

    let st = env.storage.status().unwrap();
    let c = st.datasets[3].properties[0].clone();
    assert_eq!(c.effective, "off");
    assert!(c.reason.unwrap().contains("drifted"));

    let rep = env.storage.ensure().unwrap();
    assert!(rep.created.is_empty(), "{rep:?}");
    assert!(
        rep.corrections
            .contains(&format!("{logs}: compression was off, set to gzip-9")),
        "{rep:?}"
    );
    assert!(
        rep.corrections
            .contains(&format!("{logs}: atime was on, set to off")),
        "{rep:?}"
    );
    assert_eq!(rep.corrections.len(), 2);
    let v = pool.zfs(&["get", "-H", "-p", "compression", &logs]);
    assert!(v.contains("gzip-9"), "{v}");

    // The operator's snapshot is listed, never pruned or destroyed; the dataset stays.
    let snaps = env.storage.list_snapshots(Some(Dataset::Logs)).unwrap();
    assert_eq!(snaps.len(), 1);
    assert!(!snaps[0].managed);
    let r = env
        .storage
        .prune(Dataset::Logs, kiln_storage::now_unix())
        .unwrap();
    assert!(r.removed.is_empty());
    assert_eq!(
        r.protected,
        [kiln_storage::SkippedSnapshot {
            name: "operator".into(),
            reason: "not created by kiln".into()
        }]
    );
    assert!(matches!(
        env.storage
            .destroy_snapshot(Dataset::Logs, "operator")
            .unwrap_err(),
        StorageError::SnapshotProtected { .. }
    ));
    pool.zfs(&["get", "-H", "type", &format!("{logs}@operator")]);
    pool.zfs(&["get", "-H", "type", &foreign]);
}

#[test]
fn pool_missing_is_a_clear_typed_error() {
    let _zfs = common::ZfsFuse::start();
    let cfg = StorageConfig {
        backend: BackendKind::Zfs,
        pool: format!("nopool{}", std::process::id()),
        ..StorageConfig::default()
    };
    let e = kiln_storage::open(&cfg).err().expect("must fail");
    match &e {
        StorageError::PoolMissing {
            pool,
            command,
            stderr,
        } => {
            assert_eq!(pool, &cfg.pool);
            assert!(command.contains("zfs get"), "{command}");
            assert!(stderr.contains("does not exist"), "{stderr}");
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("zpool import"), "{e}");
}

#[test]
fn zfs_not_installed_is_a_clear_typed_error() {
    let cfg = StorageConfig {
        backend: BackendKind::Zfs,
        zfs_command: "/nonexistent/sbin/zfs".into(),
        ..StorageConfig::default()
    };
    let e = kiln_storage::open(&cfg).err().expect("must fail");
    assert!(
        matches!(e, StorageError::ZfsNotInstalled { ref binary, .. } if binary == "/nonexistent/sbin/zfs"),
        "{e}"
    );
    assert!(e.to_string().contains("backend = \"dir\""), "{e}");
}

#[test]
fn rejected_property_is_typed_and_leaves_data_untouched() {
    let env = zfs_env();
    let sc = env.scratch();
    write(&sc.join("w.bin"), &bytes(3, 2 << 20));
    env.storage
        .import_model(&sc.join("w.bin"), "m", &mut |_, _| {})
        .unwrap();
    drop(env.storage);
    // A quota below what the dataset already uses is refused by ZFS.
    let mut cfg = env.config.clone();
    cfg.profiles.models.quota = Some("64K".into());
    let e = kiln_storage::open(&cfg).err().expect("must fail");
    match &e {
        StorageError::PropertyRejected {
            property,
            value,
            target,
            stderr,
            ..
        } => {
            assert_eq!((property.as_str(), value.as_str()), ("quota", "64K"));
            assert!(target.ends_with("/kiln/models"), "{target}");
            assert!(!stderr.is_empty());
        }
        other => panic!("{other}"),
    }
    let again = kiln_storage::open(&env.config).unwrap();
    let p = again.dataset_path(Dataset::Models).join("m/1/w.bin");
    assert_eq!(fs::read(p).unwrap(), bytes(3, 2 << 20));
    assert_eq!(
        again.list_snapshots(Some(Dataset::Models)).unwrap().len(),
        1
    );
}

#[test]
fn quota_full_gives_writer_a_clear_error_and_keeps_older_versions() {
    let env = Env::new(BackendKind::Zfs, |c| {
        c.profiles.models.quota = Some("4M".into())
    });
    let s = &env.storage;
    let sc = env.scratch();
    write(&sc.join("small.bin"), &bytes(4, 512 << 10));
    s.import_model(&sc.join("small.bin"), "m", &mut |_, _| {})
        .unwrap();
    write(&sc.join("big.bin"), &bytes(5, 16 << 20));
    let e = s
        .import_model(&sc.join("big.bin"), "m", &mut |_, _| {})
        .unwrap_err();
    assert!(e.is_quota_full(), "{e}");
    assert!(e.to_string().contains("raise the dataset quota"), "{e}");
    let models = s.dataset_path(Dataset::Models);
    assert_eq!(s.model_versions("m").unwrap(), [1]);
    assert_eq!(
        fs::read(models.join("m/1/small.bin")).unwrap(),
        bytes(4, 512 << 10)
    );
    let left: Vec<_> = fs::read_dir(models.join("m"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "staging removed: {left:?}");
    assert_eq!(s.list_snapshots(Some(Dataset::Models)).unwrap().len(), 1);
}

#[test]
fn rollback_model_cleans_up_its_restore_clone() {
    let env = zfs_env();
    let pool = env.pool.as_ref().unwrap();
    let sc = env.scratch();
    write(&sc.join("a/x"), b"one");
    env.storage
        .import_model(&sc.join("a"), "m", &mut |_, _| {})
        .unwrap();
    fs::write(
        env.storage.dataset_path(Dataset::Models).join("m/1/x"),
        b"bad",
    )
    .unwrap();
    env.storage.rollback_model("m", 1).unwrap();
    assert_eq!(
        fs::read(env.storage.dataset_path(Dataset::Models).join("m/1/x")).unwrap(),
        b"one"
    );
    let list = pool.zfs(&["list", "-H", "-o", "name", "-r", &pool.name]);
    assert!(!list.contains("restore-"), "{list}");
}

#[test]
fn scrub_runs_and_the_schedule_honours_the_interval() {
    let env = Env::new(BackendKind::Zfs, |c| c.scrub.interval_days = 7);
    let now = kiln_storage::now_unix();
    assert!(
        env.storage.scrub_if_due(now).unwrap(),
        "never scrubbed: due"
    );
    let mut state = String::new();
    for _ in 0..50 {
        let p = env.storage.status().unwrap().pool.unwrap();
        state = p.scrub.state.clone();
        if state == "finished" {
            assert_eq!(p.scrub.errors, Some(0));
            assert!(p.scrub.finished_at.is_some());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(state, "finished");
    assert!(
        !env.storage.scrub_if_due(now + 86_400).unwrap(),
        "scrubbed a day ago: not due"
    );
    assert!(
        env.storage.scrub_if_due(now + 8 * 86_400).unwrap(),
        "8 days later: due"
    );
}

#[test]
fn every_call_is_counted_and_arc_figures_come_from_the_root() {
    let env = zfs_env();
    let m = env.storage.command_metrics();
    let get = m
        .iter()
        .find(|s| s.command == "zfs get")
        .expect("zfs get counted");
    assert!(get.calls >= 5 && get.total_seconds > 0.0, "{get:?}");
    assert!(
        m.iter().any(|s| s.command == "zfs create" && s.calls == 5),
        "{m:?}"
    );
    assert!(env.storage.status().unwrap().arc.is_none());
    let pool = env.pool.as_ref().unwrap();
    let kstat = pool.dir.path().join("proc/spl/kstat/zfs");
    fs::create_dir_all(&kstat).unwrap();
    fs::write(kstat.join("arcstats"), "9 1 0x01 3 144 0 0\nname type data\nhits 4 90\nmisses 4 10\nsize 4 4096\nc 4 8192\nc_max 4 16384\n").unwrap();
    let arc = env.storage.status().unwrap().arc.unwrap();
    assert_eq!((arc.size_bytes, arc.max_bytes), (4096, 16384));
    assert!((arc.hit_ratio - 0.9).abs() < 1e-9);
}

#[test]
fn test_pool_is_destroyed_on_drop() {
    let name = {
        let p = TestPool::new();
        p.zfs(&["get", "-H", "type", &p.name]);
        p.name.clone()
    };
    let out = std::process::Command::new("zpool")
        .args(["list", "-H", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == name)
    );
}

#[test]
fn busy_dataset_is_a_typed_error_from_real_zfs() {
    let env = zfs_env();
    let pool = env.pool.as_ref().unwrap();
    env.storage
        .snapshot(Dataset::Checkpoints, "c1", false)
        .unwrap();
    let full = format!("{}/kiln/checkpoints@c1", pool.name);
    pool.zfs(&["hold", "job-9", &full]);
    // Straight through the wrapper, bypassing the backend's own protection check.
    let cmd = kiln_storage::ZfsCmd::new("zfs", "zpool");
    let e = cmd
        .run(kiln_storage::zfscmd::Tool::Zfs, &["destroy", &full])
        .unwrap_err();
    match &e {
        StorageError::Busy {
            target,
            command,
            stderr,
        } => {
            assert_eq!(target, &full);
            assert!(command.starts_with("zfs destroy"), "{command}");
            assert!(stderr.contains("busy"), "{stderr}");
        }
        other => panic!("{other}"),
    }
    // Through the backend the hold is seen first and reported as such.
    let e = env
        .storage
        .destroy_snapshot(Dataset::Checkpoints, "c1")
        .unwrap_err();
    assert!(
        matches!(e, StorageError::SnapshotProtected { ref reason, .. } if reason.contains("held")),
        "{e}"
    );
    env.storage
        .release(Dataset::Checkpoints, "c1", "job-9")
        .unwrap();
    env.storage
        .destroy_snapshot(Dataset::Checkpoints, "c1")
        .unwrap();
}

#[test]
fn refuses_to_nest_a_dataset_inside_a_zfs_fuse_mount() {
    let pool = TestPool::new();
    // A recorded mount table saying the pool root is mounted through zfs-fuse.
    let proc_dir = pool.dir.path().join("rec/proc");
    fs::create_dir_all(&proc_dir).unwrap();
    fs::write(
        proc_dir.join("mounts"),
        format!("{} {} fuse.zfs rw 0 0\n", pool.name, pool.mnt().display()),
    )
    .unwrap();
    let cfg = StorageConfig {
        backend: BackendKind::Zfs,
        pool: pool.name.clone(),
        proc_root: pool.dir.path().join("rec"),
        ..StorageConfig::default()
    };
    let e = kiln_storage::open(&cfg).err().expect("must refuse");
    match &e {
        StorageError::NestedFuseMount {
            dataset,
            mountpoint,
            parent_mount,
        } => {
            assert_eq!(dataset, &format!("{}/kiln/models", pool.name));
            assert_eq!(mountpoint, &pool.mnt().join("kiln/models"));
            assert_eq!(parent_mount, &pool.mnt());
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("canmount=off"), "{e}");
    let list = pool.zfs(&["list", "-H", "-o", "name", "-r", &pool.name]);
    assert!(!list.contains("kiln/models"), "{list}");
}

#[test]
fn unmounted_dataset_is_remounted_and_unmountable_one_is_refused() {
    let env = zfs_env();
    let pool = env.pool.as_ref().unwrap();
    let emb = format!("{}/kiln/embeddings", pool.name);
    write(
        &env.storage.dataset_path(Dataset::Embeddings).join("c.vec"),
        b"vectors",
    );
    pool.zfs(&["unmount", &emb]);
    assert!(
        !env.storage
            .dataset_path(Dataset::Embeddings)
            .join("c.vec")
            .exists()
    );
    env.storage.ensure().unwrap();
    let p = env.storage.dataset_path(Dataset::Embeddings).join("c.vec");
    assert_eq!(fs::read(p).unwrap(), b"vectors");

    pool.zfs(&["set", "mountpoint=none", &emb]);
    match env.storage.ensure().unwrap_err() {
        StorageError::NotMounted { dataset, detail } => {
            assert_eq!(dataset, emb);
            assert!(detail.contains("none"), "{detail}");
        }
        other => panic!("{other}"),
    }
    // Nothing was lost: put the mountpoint back and the data is there.
    pool.zfs(&["inherit", "mountpoint", &emb]);
    env.storage.ensure().unwrap();
    let p = env.storage.dataset_path(Dataset::Embeddings).join("c.vec");
    assert_eq!(fs::read(p).unwrap(), b"vectors");
}
