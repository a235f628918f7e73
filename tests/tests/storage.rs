//! Storage through the real kilnd and kilnctl, on a real zfs-fuse pool and on the dir
//! backend (the same behaviour test runs on both): status with requested/effective
//! properties and fallback reasons, model import → snapshot, rollback restoring exact
//! bytes, pruning by the retention grid, bad input, a missing pool, D-Bus and metrics.
//! Needs root and /dev/fuse (zfs-fuse from Debian); kiln-testkit gives each zfs test a daemon
//! of its own, one at a time, under a deadline, and destroys every pool it creates.

use kiln_tests::{Kilnd, PrivateBus, Start};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use kiln_testkit::bytes;
use kiln_testkit::zfs::{TestPool as Pool, ZfsFuse};

// ---------- a kilnd on one backend ----------

enum Backend {
    Dir,
    Zfs(Pool),
}

struct Env {
    k: Kilnd,
    backend: Backend,
    /// Sources for imports, outside the storage.
    scratch: tempfile::TempDir,
    _conf_dir: tempfile::TempDir,
}

const RETENTION: &str = "[storage.retention]\nkeep_last = 1\nhourly = 0\ndaily = 3\nweekly = 0\n";

fn storage_config(backend: &Backend, root: &Path) -> String {
    let mut s = String::from("[auth]\nbackend = \"group\"\n[storage]\n");
    match backend {
        Backend::Dir => s.push_str(&format!(
            "backend = \"dir\"\nroot = \"{}\"\n",
            root.display()
        )),
        Backend::Zfs(p) => s.push_str(&format!("backend = \"zfs\"\npool = \"{}\"\n", p.name)),
    }
    s.push_str(RETENTION);
    s
}

impl Env {
    fn start(zfs: bool, extra: &str, bus: Option<String>) -> Env {
        let backend = if zfs {
            Backend::Zfs(Pool::new())
        } else {
            Backend::Dir
        };
        let conf_dir = tempfile::tempdir().unwrap();
        let conf = conf_dir.path().join("kiln.toml");
        let body = storage_config(&backend, &conf_dir.path().join("data")) + extra;
        std::fs::write(&conf, body).unwrap();
        let k = Kilnd::start(Start {
            config: Some(conf),
            bus,
            ..Default::default()
        });
        Env {
            k,
            backend,
            scratch: tempfile::tempdir().unwrap(),
            _conf_dir: conf_dir,
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.k.kilnctl(args);
        assert!(
            out.status.success(),
            "kilnctl {args:?} failed: {}\nkilnd stderr:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.k.stderr()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("kilnctl --json prints JSON")
    }

    fn status(&self) -> Value {
        self.json(&["storage", "status"])
    }

    fn mountpoint(&self, ds: &str) -> PathBuf {
        let st = self.status();
        let d = st["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["dataset"] == ds)
            .unwrap_or_else(|| panic!("no dataset {ds} in {st}"));
        PathBuf::from(d["mountpoint"].as_str().unwrap())
    }

    /// Pretend a kiln-made snapshot was taken at `t` (what `snapshot_at` stamps).
    fn age(&self, ds: &str, snap: &str, t: i64) {
        match &self.backend {
            Backend::Zfs(p) => {
                p.zfs(&[
                    "set",
                    &format!("org.kiln:created={t}"),
                    &format!("{}/kiln/{ds}@{snap}", p.name),
                ]);
            }
            Backend::Dir => {
                let base = self
                    .mountpoint(ds)
                    .parent()
                    .unwrap()
                    .join(".snapshots")
                    .join(ds);
                let m = base.join(format!("{snap}.json"));
                let mut v: Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
                v["created"] = t.into();
                std::fs::write(&m, serde_json::to_vec(&v).unwrap()).unwrap();
            }
        }
    }

    /// A snapshot kiln did not make (an operator's).
    fn foreign_snapshot(&self, ds: &str, snap: &str) {
        match &self.backend {
            Backend::Zfs(p) => {
                p.zfs(&["snapshot", &format!("{}/kiln/{ds}@{snap}", p.name)]);
            }
            Backend::Dir => {
                let base = self
                    .mountpoint(ds)
                    .parent()
                    .unwrap()
                    .join(".snapshots")
                    .join(ds);
                std::fs::create_dir_all(base.join(snap)).unwrap();
            }
        }
    }
}

fn fails(out: &Output, code_words: &str, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected a refused call: {err}");
    assert!(err.contains(code_words), "expected `{code_words}`: {err}");
    assert!(err.contains(needle), "expected `{needle}`: {err}");
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x["name"].as_str().or(x.as_str()).unwrap().to_string())
        .collect();
    n.sort();
    n
}

// ---------- the shared behaviour test ----------

fn behaviour(zfs: bool) {
    let e = Env::start(zfs, "", None);
    let st = e.status();
    assert_eq!(st["backend"], if zfs { "zfs" } else { "dir" });
    let ds: Vec<&str> = st["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dataset"].as_str().unwrap())
        .collect();
    assert_eq!(ds, ["models", "embeddings", "checkpoints", "logs"]);

    // Import a model directory twice: versions 1 and 2, each a keep-marked snapshot.
    let src = e.scratch.path().join("resnet");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let v1_xml = bytes(1, 3 << 20);
    std::fs::write(src.join("model.xml"), &v1_xml).unwrap();
    std::fs::write(src.join("sub/weights.bin"), bytes(2, 70_000)).unwrap();
    let r = e.json(&[
        "models",
        "import",
        src.to_str().unwrap(),
        "--name",
        "resnet",
    ]);
    assert_eq!(
        (r["version"].as_u64(), r["snapshot"].as_str()),
        (Some(1), Some("resnet-v1")),
        "{r}"
    );
    assert_eq!(r["files"], 2);
    std::fs::write(src.join("model.xml"), bytes(3, 1 << 20)).unwrap();
    let r = e.json(&[
        "models",
        "import",
        src.to_str().unwrap(),
        "--name",
        "resnet",
    ]);
    assert_eq!(r["version"], 2, "{r}");
    let snaps = e.json(&["storage", "snapshots", "models"]);
    let v1 = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "resnet-v1")
        .expect("resnet-v1 listed");
    assert_eq!(
        (v1["dataset"].as_str(), v1["keep"].as_bool()),
        (Some("models"), Some(true))
    );
    let models = e.mountpoint("models");
    assert_eq!(
        std::fs::read(models.join("resnet/1/model.xml")).unwrap(),
        v1_xml
    );

    // Break version 1 in the live tree, then roll the model back to it: exact bytes.
    std::fs::write(models.join("resnet/1/model.xml"), b"corrupted").unwrap();
    let r = e.json(&["models", "rollback", "resnet", "1"]);
    assert_eq!(r["versions"], serde_json::json!([1]), "{r}");
    assert_eq!(r["removed_versions"], serde_json::json!([2]), "{r}");
    assert_eq!(
        std::fs::read(models.join("resnet/1/model.xml")).unwrap(),
        v1_xml
    );
    assert_eq!(
        std::fs::read(models.join("resnet/1/sub/weights.bin")).unwrap(),
        bytes(2, 70_000)
    );
    assert!(!models.join("resnet/2").exists());
    fails(
        &e.k.kilnctl(&["models", "rollback", "resnet", "9"]),
        "not found",
        "known versions",
    );

    // Whole-dataset rollback restores exact bytes; newer snapshots block it unless asked.
    let logs = e.mountpoint("logs");
    let original = bytes(4, 200_000);
    std::fs::write(logs.join("app.log"), &original).unwrap();
    e.ok(&["storage", "snapshot", "logs", "before"]);
    std::fs::write(logs.join("app.log"), b"overwritten").unwrap();
    std::fs::write(logs.join("new.log"), b"x").unwrap();
    // The dir backend orders snapshots by their whole-second stamp (then by name), so two
    // snapshots within one second may not count as "newer"; keep them a second apart.
    std::thread::sleep(Duration::from_millis(1100));
    e.ok(&["storage", "snapshot", "logs", "after"]);
    fails(
        &e.k.kilnctl(&["storage", "rollback", "logs", "before"]),
        "failed precondition",
        "--destroy-newer",
    );
    let r = e.json(&["storage", "rollback", "logs", "before", "--destroy-newer"]);
    assert_eq!(r["destroyed"], serde_json::json!(["after"]), "{r}");
    assert_eq!(std::fs::read(logs.join("app.log")).unwrap(), original);
    assert!(!logs.join("new.log").exists());
    fails(
        &e.k.kilnctl(&["storage", "snapshot", "logs", "before"]),
        "already exists",
        "before",
    );

    // Retention: keep_last 1, daily 3 (UTC days, the current one counted).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let day0 = now - now.rem_euclid(86_400);
    let plan: [(&str, i64); 5] = [
        ("ck-a", now - 10 * 86_400),        // outside the grid: removed
        ("ck-c", day0 - 2 * 86_400 + 60),   // same day as ck-b, older: removed
        ("ck-b", day0 - 2 * 86_400 + 7200), // newest of two days ago: kept
        ("ck-d", day0 - 86_400 + 100),      // yesterday: kept
        ("ck-e", now),                      // newest: kept (last 1, daily)
    ];
    for (n, _) in &plan {
        e.ok(&["storage", "snapshot", "checkpoints", n]);
    }
    for (n, t) in &plan[..4] {
        e.age("checkpoints", n, *t);
    }
    e.ok(&["storage", "snapshot", "checkpoints", "pinned", "--keep"]);
    e.age("checkpoints", "pinned", now - 30 * 86_400);
    e.foreign_snapshot("checkpoints", "operator");
    let r = e.json(&["storage", "prune", "checkpoints"]);
    let rep = &r[0];
    assert_eq!(names(&rep["removed"]), ["ck-a", "ck-c"], "{r}");
    assert_eq!(names(&rep["kept"]), ["ck-b", "ck-d", "ck-e"], "{r}");
    assert_eq!(names(&rep["protected"]), ["operator", "pinned"], "{r}");
    let kept_e = rep["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ck-e")
        .unwrap();
    assert!(kept_e["reasons"].to_string().contains("last 1"), "{r}");
    let left = names(&e.json(&["storage", "snapshots", "checkpoints"]));
    assert_eq!(left, ["ck-b", "ck-d", "ck-e", "operator", "pinned"]);

    // Bad input: INVALID_ARGUMENT naming the problem; nothing changes.
    fails(
        &e.k.kilnctl(&["storage", "snapshot", "modelz", "x"]),
        "invalid argument",
        "one of models",
    );
    fails(
        &e.k.kilnctl(&["storage", "snapshot", "logs", "bad name"]),
        "invalid argument",
        "snapshot name",
    );
    fails(
        &e.k.kilnctl(&["storage", "snapshots", "nope"]),
        "invalid argument",
        "one of models",
    );
    fails(
        &e.k.kilnctl(&["storage", "prune", "nope"]),
        "invalid argument",
        "one of models",
    );
    fails(
        &e.k.kilnctl(&[
            "models",
            "import",
            src.to_str().unwrap(),
            "--name",
            "../evil",
        ]),
        "invalid argument",
        "model name",
    );
    fails(
        &e.k.kilnctl(&["storage", "rollback", "logs", "nosuch"]),
        "not found",
        "nosuch",
    );
    let missing =
        e.k.kilnctl(&["models", "import", "/nonexistent/model.xml", "--name", "m"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));

    // Every mutation left an audit row.
    let db = rusqlite::Connection::open(e.k.state_dir.join("state.db")).unwrap();
    let count = |action: &str| -> i64 {
        db.query_row(
            "SELECT count(*) FROM audit WHERE action = ?1",
            [action],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(count("ImportModel"), 3);
    assert_eq!(count("RollbackModel"), 2);
    assert!(count("StorageSnapshot") >= 8);
    assert_eq!(count("StoragePrune"), 2);
}

#[test]
fn dir_backend_behaviour() {
    behaviour(false);
}

#[test]
fn zfs_backend_behaviour() {
    behaviour(true);
}

// ---------- ZFS-only acceptance ----------

#[test]
fn zfs_status_lists_requested_effective_and_fallback_reasons() {
    let e = Env::start(true, "", None);
    let st = e.status();
    let Backend::Zfs(pool) = &e.backend else {
        unreachable!()
    };
    assert_eq!(st["location"], pool.name.as_str());
    let prop = |ds: &str, p: &str| -> Value {
        let d = st["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["dataset"] == ds)
            .unwrap()
            .clone();
        assert_eq!(d["name"], format!("{}/kiln/{ds}", pool.name), "{d}");
        assert_eq!(d["present"], true);
        d["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["property"] == p)
            .unwrap_or_else(|| panic!("{ds} has no {p}: {d}"))
            .clone()
    };
    // zfs-fuse has no zstd or lz4 and caps recordsize at 128K.
    for (ds, p, req, eff, why) in [
        ("models", "compression", "zstd-3", "gzip-3", "not supported"),
        ("models", "recordsize", "1M", "128K", "128K"),
        ("embeddings", "compression", "lz4", "lzjb", "not supported"),
        (
            "checkpoints",
            "compression",
            "zstd-3",
            "gzip-3",
            "not supported",
        ),
        ("logs", "compression", "zstd-9", "gzip-9", "not supported"),
    ] {
        let x = prop(ds, p);
        assert_eq!(
            (x["requested"].as_str(), x["effective"].as_str()),
            (Some(req), Some(eff)),
            "{ds}.{p}: {x}"
        );
        assert!(
            x["reason"].as_str().is_some_and(|r| r.contains(why)),
            "{ds}.{p}: {x}"
        );
    }
    let q = prop("checkpoints", "quota");
    assert_eq!(
        q["effective"].as_str().map(|s| s.to_uppercase()),
        Some("500G".into()),
        "{q}"
    );
    assert!(q["reason"].is_null(), "{q}");
    assert_eq!(prop("logs", "recordsize")["effective"], "4K");
    assert_eq!(st["pool"]["health"], "ONLINE");
    assert!(
        !st["last_ensure"]["fallbacks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The real properties agree with what status says.
    let comp = pool.zfs(&[
        "get",
        "-H",
        "-p",
        "-o",
        "value",
        "compression",
        &format!("{}/kiln/models", pool.name),
    ]);
    assert_eq!(comp.trim(), "gzip-3");
    // The table form names the fallback too.
    let table = e.ok(&["storage", "status"]);
    assert!(
        table.contains("zstd-3") && table.contains("gzip-3"),
        "{table}"
    );
}

#[test]
fn missing_pool_leaves_kilnd_running_with_storage_degraded() {
    let _zfs = ZfsFuse::start();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("kiln.toml");
    let pool = format!("kiln-missing-{}", std::process::id());
    std::fs::write(
        &conf,
        format!("[auth]\nbackend = \"group\"\n[storage]\nbackend = \"zfs\"\npool = \"{pool}\"\n"),
    )
    .unwrap();
    let k = Kilnd::start(Start {
        config: Some(conf),
        ..Default::default()
    });
    let st = k.status_json();
    let c = st["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "storage")
        .unwrap()
        .clone();
    assert_eq!(c["state"], "degraded", "{c}");
    assert!(c["detail"].as_str().unwrap().contains(&pool), "{c}");
    for args in [
        &["storage", "status"][..],
        &["storage", "snapshots"][..],
        &["storage", "snapshot", "logs", "x"][..],
        &["storage", "prune"][..],
    ] {
        let out = k.kilnctl(args);
        fails(&out, "unavailable", &format!("zpool import {pool}"));
    }
    // Everything else still works.
    assert!(k.kilnctl(&["status"]).status.success());
}

// ---------- D-Bus and metrics (zfs backend: command statistics) ----------

#[test]
fn dbus_storage_object_and_metrics() {
    let bus = PrivateBus::start();
    let msock = tempfile::tempdir().unwrap();
    let msock = msock.path().join("m.sock");
    let e = Env::start(
        true,
        &format!("[metrics]\nlisten = \"unix:{}\"\n", msock.display()),
        Some(bus.address.clone()),
    );
    let rt = kiln_tests::runtime();
    rt.block_on(async {
        let p = bus
            .kiln_proxy("/org/kiln/Kiln1/storage", "org.kiln.Kiln1.Storage")
            .await;
        let st: String = p.call("Status", &()).await.unwrap();
        let st: Value = serde_json::from_str(&st).unwrap();
        assert_eq!(st["backend"], "zfs");
        assert_eq!(st["datasets"].as_array().unwrap().len(), 4);
        let s: String = p
            .call("Snapshot", &("embeddings", "viabus", true))
            .await
            .unwrap();
        let s: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            (s["name"].as_str(), s["keep"].as_bool()),
            (Some("viabus"), Some(true))
        );
        let l: String = p.call("ListSnapshots", &("embeddings",)).await.unwrap();
        assert_eq!(
            names(&serde_json::from_str::<Value>(&l).unwrap()),
            ["viabus"]
        );
        let err = p
            .call::<_, _, String>("Snapshot", &("nope", "x", false))
            .await
            .unwrap_err();
        match err {
            zbus::Error::MethodError(name, msg, _) => {
                assert_eq!(name.as_str(), "org.kiln.Kiln1.Error.InvalidArgument");
                assert!(msg.unwrap_or_default().contains("one of models"));
            }
            other => panic!("expected a method error, got {other:?}"),
        }
        let src = e.scratch.path().join("tiny.onnx");
        std::fs::write(&src, bytes(9, 4096)).unwrap();
        let r: String = p
            .call("ImportModel", &(src.to_str().unwrap(), "tiny", false))
            .await
            .unwrap();
        let r: Value = serde_json::from_str(&r).unwrap();
        assert_eq!(
            (r["import"]["version"].as_u64(), r["load"].is_null()),
            (Some(1), true),
            "{r}"
        );
        let r: String = p.call("Prune", &("embeddings",)).await.unwrap();
        let r: Value = serde_json::from_str(&r).unwrap();
        assert_eq!(names(&r[0]["protected"]), ["viabus"]);
    });
    // zfs/zpool call statistics are exported with the daemon's metrics.
    let body = kiln_tests::scrape(&msock);
    assert!(
        body.contains(r#"kiln_storage_commands_total{command="zfs snapshot"}"#),
        "{body}"
    );
    assert!(
        body.contains("kiln_storage_command_duration_seconds_bucket"),
        "{body}"
    );
    assert!(body.contains(r#"method="Storage.Snapshot""#), "{body}");
}

#[test]
fn large_import_shows_progress_and_keeps_bytes() {
    let e = Env::start(false, "", None);
    let src = e.scratch.path().join("big.bin");
    let data = bytes(7, 40 << 20);
    std::fs::write(&src, &data).unwrap();
    let out =
        e.k.kilnctl(&["models", "import", src.to_str().unwrap(), "--name", "big"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("importing: 100%"), "progress on stderr: {err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("imported big version 1"), "{stdout}");
    assert_eq!(
        std::fs::read(e.mountpoint("models").join("big/1/big.bin")).unwrap(),
        data
    );
}

#[test]
fn quota_full_import_is_refused_and_keeps_existing_versions() {
    let e = Env::start(true, "[storage.profiles.models]\nquota = \"3M\"\n", None);
    let small = e.scratch.path().join("small.bin");
    std::fs::write(&small, bytes(5, 100_000)).unwrap();
    e.ok(&["models", "import", small.to_str().unwrap(), "--name", "m"]);
    let big = e.scratch.path().join("big.bin");
    // Incompressible, so gzip cannot squeeze it under the quota.
    std::fs::write(&big, bytes(6, 8 << 20)).unwrap();
    let out =
        e.k.kilnctl(&["models", "import", big.to_str().unwrap(), "--name", "m"]);
    fails(&out, "resource exhausted", "quota");
    let dir = e.mountpoint("models").join("m");
    // Nothing left behind either: at a full quota with a snapshot present even an unlink
    // fails (EDQUOT) until the staging files are emptied.
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["1"],
        "only the earlier version remains, no staging dir"
    );
    assert_eq!(
        std::fs::read(dir.join("1/small.bin")).unwrap(),
        bytes(5, 100_000)
    );
    let snaps = names(&e.json(&["storage", "snapshots", "models"]));
    assert_eq!(snaps, ["m-v1"]);
}
