//! The storage hub on directory storage (the real driver, no ZFS) with a fake inference
//! backend: model import as versions with snapshots, import-and-load, rollback, dataset
//! snapshots and pruning, bad input, and storage that cannot open.

use crate::ErrorKind;
use crate::auth::Caller;
use crate::engine::ComponentState;
use crate::testing::{Layout, TestEngine, engine_with};
use kiln_hal::ports::Dtype;
use kiln_testkit::fakes::{FakeBackend, write_model};

fn on_storage_repo() -> TestEngine {
    engine_with(
        FakeBackend::default(),
        "[budget]\nconservative_bytes = 268435456\ngranularity_bytes = 4096\n",
        Layout {
            repository: false,
            dir_storage: true,
        },
    )
}

fn root() -> Caller {
    Caller::internal()
}

#[tokio::test]
async fn imports_become_versions_that_load_and_roll_back() {
    let t = on_storage_repo();
    let e = &t.engine;
    let src = t.dir.path().join("src");
    write_model(&src, "m", 1, &[("x", Dtype::F32, &[1, 2])], 100);
    let v1 = src.join("m/1");
    let first = e
        .import_model(&root(), &v1, "m", true, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (first.import.version, first.import.snapshot.as_str()),
        (1, "m-v1")
    );
    let load = first.load.expect("a load was asked for");
    assert!(load.ok && load.detail.contains("v1 on CPU"), "{load:?}");
    assert!(e.model_ready("m", "1"));

    let second = e
        .import_model(&root(), &v1, "m", false, |_, _| {})
        .await
        .unwrap();
    assert_eq!(second.import.version, 2);
    assert!(second.load.is_none());
    let snaps = e.list_snapshots(Some("models")).await.unwrap();
    let names: Vec<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["m-v1", "m-v2"]);
    assert!(
        snaps.iter().all(|s| s.keep),
        "model versions are never pruned"
    );

    let rb = e.rollback_model(&root(), "m", 1).await.unwrap();
    assert_eq!((rb.versions, rb.removed_versions), (vec![1], vec![2]));
    let audit = e.db().recent_audit(10).unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    for want in ["ImportModel", "LoadModel", "RollbackModel"] {
        assert!(actions.contains(&want), "{want} audited: {actions:?}");
    }
}

#[tokio::test]
async fn bad_imports_name_the_problem_and_keep_nothing() {
    let t = on_storage_repo();
    let e = &t.engine;
    let err = e
        .import_model(
            &root(),
            std::path::Path::new("rel/m"),
            "m",
            false,
            |_, _| {},
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err:?}");
    assert!(err.message.contains("absolute"), "{}", err.message);
    let missing = t.dir.path().join("nowhere");
    let err = e
        .import_model(&root(), &missing, "m", false, |_, _| {})
        .await
        .unwrap_err();
    assert!(err.message.contains("nowhere"), "{}", err.message);
    let src = t.dir.path().join("src");
    write_model(&src, "m", 1, &[("x", Dtype::F32, &[1, 2])], 10);
    let err = e
        .import_model(&root(), &src.join("m/1"), "../evil", false, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err:?}");
    assert!(e.list_snapshots(Some("models")).await.unwrap().is_empty());
    let audit = e.db().recent_audit(10).unwrap();
    assert!(
        audit
            .iter()
            .filter(|a| a.action == "ImportModel")
            .all(|a| a.result != "ok"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn dataset_snapshots_prune_by_the_grid_and_bad_names_are_refused() {
    let t = on_storage_repo();
    let e = &t.engine;
    e.snapshot(&root(), "logs", "a", false).await.unwrap();
    e.snapshot(&root(), "logs", "b", true).await.unwrap();
    let reports = e.prune(&root(), Some("logs")).await.unwrap();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert!(
        r.protected
            .iter()
            .any(|p| p.name == "b" && p.reason == "marked keep"),
        "{r:?}"
    );
    let err = e.snapshot(&root(), "log", "c", false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err:?}");
    assert!(
        err.message
            .contains("models, embeddings, checkpoints, logs"),
        "{}",
        err.message
    );
    let err = e.list_snapshots(Some("nope")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err:?}");
}

#[tokio::test]
async fn storage_that_cannot_open_leaves_kilnd_running_and_says_why() {
    let t = engine_with(
        FakeBackend::default(),
        "[storage]\nbackend = \"zfs\"\npool = \"tank\"\nzfs_command = \"/nonexistent/zfs\"\nzpool_command = \"/nonexistent/zpool\"\n",
        Layout {
            repository: true,
            dir_storage: false,
        },
    );
    let e = &t.engine;
    let c = e
        .status()
        .components
        .into_iter()
        .find(|c| c.name == "storage")
        .unwrap();
    assert_eq!(c.state, ComponentState::Degraded, "{c:?}");
    assert!(c.detail.contains("zfs"), "{c:?}");
    let err = e.storage_status().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
    let err = e.snapshot(&root(), "logs", "a", false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
}

#[tokio::test]
async fn an_import_never_follows_a_link_out_of_its_tree() {
    let t = on_storage_repo();
    let e = &t.engine;
    let src = t.dir.path().join("src");
    write_model(&src, "m", 1, &[("x", Dtype::F32, &[1, 2])], 10);
    let v1 = src.join("m/1");
    std::os::unix::fs::symlink("/etc/shadow", v1.join("shadow")).unwrap();
    let err = e
        .import_model(&root(), &v1, "m", false, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err:?}");
    assert!(
        err.message.contains("shadow") && err.message.contains("leads out of the tree"),
        "{}",
        err.message
    );
    assert!(e.list_snapshots(Some("models")).await.unwrap().is_empty());
    // A link that stays inside is imported as a link.
    std::fs::remove_file(v1.join("shadow")).unwrap();
    std::os::unix::fs::symlink("fake-model.txt", v1.join("alias.txt")).unwrap();
    let ok = e
        .import_model(&root(), &v1, "m", false, |_, _| {})
        .await
        .unwrap();
    let alias = ok.import.path.join("alias.txt");
    assert_eq!(
        std::fs::read_link(&alias).unwrap(),
        std::path::Path::new("fake-model.txt")
    );
}

#[tokio::test]
async fn a_member_imports_only_what_they_could_read_anywhere_in_the_tree() {
    use std::os::unix::fs::PermissionsExt;
    let t = on_storage_repo();
    let e = &t.engine;
    // A member of the managing group (gid 0) who is not root.
    let member = Caller {
        transport: crate::auth::Transport::Grpc,
        uid: Some(60001),
        gid: Some(0),
        pid: Some(1),
        bus_name: None,
    };
    let src = t.dir.path().join("src");
    write_model(&src, "m", 1, &[("x", Dtype::F32, &[1, 2])], 10);
    let v1 = src.join("m/1");
    std::fs::create_dir_all(v1.join("deep")).unwrap();
    let secret = v1.join("deep/secret.bin");
    std::fs::write(&secret, b"root only").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    for p in [
        t.dir.path().to_path_buf(),
        src.clone(),
        src.join("m"),
        v1.clone(),
        v1.join("deep"),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        v1.join("fake-model.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = e
        .import_model(&member, &v1, "m", false, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err:?}");
    assert!(err.message.contains("deep/secret.bin"), "{}", err.message);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let ok = e
        .import_model(&member, &v1, "m", false, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        ok.import.version, 1,
        "group-readable is readable for a gid-0 member"
    );
}
