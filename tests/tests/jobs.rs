//! Jobs through the real kilnd and kilnctl: pinning and memory limit as asked, budget
//! exhaustion queues a job until memory is freed, kill -9 of kilnd and restart re-adopts
//! a running job with its checkpoint snapshots, cancel, and each bad spec refused.

use kiln_tests::{Kilnd, Start, test_config};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const BUDGET_1G: &str = "[budget]\nconservative_bytes = 1073741824\n[jobs]\ngrace_ms = 500\n";

fn start(dir: &Path, extra: &str) -> Kilnd {
    let conf = dir.join("kiln.toml");
    if !conf.exists() {
        std::fs::write(&conf, test_config(dir, extra)).unwrap();
    }
    Kilnd::start(Start {
        config: Some(conf),
        state_dir: Some(dir.join("state")),
        socket: Some(dir.join("kiln.sock")),
        ..Default::default()
    })
}

fn submit(k: &Kilnd, args: &[&str]) -> Value {
    let mut a = vec!["jobs", "submit", "--json"];
    a.extend_from_slice(args);
    let out = k.kilnctl(&a);
    assert!(
        out.status.success(),
        "submit failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        k.stderr()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn show(k: &Kilnd, id: u64) -> Value {
    let out = k.kilnctl(&["jobs", "show", &id.to_string(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wait_for(k: &Kilnd, id: u64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let j = show(k, id);
        if pred(&j) {
            return j;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "job {id} never got {what}: {j:#}\n{}",
            k.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(j: &Value) -> &str {
    j["state"].as_str().unwrap_or("")
}

fn logs(k: &Kilnd, id: u64) -> String {
    let out = k.kilnctl(&["jobs", "logs", &id.to_string()]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_job_shows_the_affinity_and_memory_limit_it_asked_for() {
    let t = tempfile::tempdir().unwrap();
    let k = start(t.path(), BUDGET_1G);
    let script = r#"grep Cpus_allowed_list /proc/self/status
echo "rlimit_as_kib=$(ulimit -v)"
for l in $(cat /proc/self/cgroup); do
  ctl=$(echo "$l" | cut -d: -f2); path=$(echo "$l" | cut -d: -f3)
  case "$ctl" in
    memory) echo "cgroup_limit=$(cat /sys/fs/cgroup/memory$path/memory.limit_in_bytes)";;
    "") [ -f /sys/fs/cgroup$path/memory.max ] && echo "cgroup_limit=$(cat /sys/fs/cgroup$path/memory.max)";;
  esac
done
true"#;
    let j = submit(
        &k,
        &[
            "--memory", "300M", "--cpus", "p:1", "--name", "probe", "--", "/bin/sh", "-c", script,
        ],
    );
    let id = j["id"].as_u64().unwrap();
    let j = wait_for(&k, id, "an end", |j| {
        state(j) == "succeeded" || state(j) == "failed"
    });
    assert_eq!(state(&j), "succeeded", "{j:#}");
    let cpus = j["cpus"].as_str().unwrap().to_string();
    assert!(
        !cpus.is_empty() && !cpus.contains(',') && !cpus.contains('-'),
        "one CPU pinned: {cpus}"
    );
    let out = logs(&k, id);
    assert!(
        out.contains(&format!("Cpus_allowed_list:\t{cpus}\n")),
        "{out}"
    );
    let limit = j["memory_limit"].as_str().unwrap();
    if limit.contains("cgroup") {
        assert!(
            out.contains(&format!("cgroup_limit={}", 300u64 << 20)),
            "{out}"
        );
    } else {
        assert!(
            out.contains(&format!("rlimit_as_kib={}", 300 * 1024)),
            "{out}"
        );
    }
}

#[test]
fn budget_exhaustion_queues_a_job_that_starts_when_memory_is_freed() {
    let t = tempfile::tempdir().unwrap();
    let k = start(t.path(), BUDGET_1G);
    let go = t.path().join("go");
    let wait_go = format!("while [ ! -f {} ]; do sleep 0.05; done", go.display());
    let a = submit(
        &k,
        &[
            "--memory", "768M", "--name", "big", "--", "/bin/sh", "-c", &wait_go,
        ],
    );
    assert_eq!(state(&a), "running", "{a:#}");
    let b = submit(
        &k,
        &["--memory", "512M", "--name", "second", "--", "/bin/true"],
    );
    let bid = b["id"].as_u64().unwrap();
    assert_eq!(state(&b), "queued", "{b:#}");
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("waiting for 0.50 GiB"),
        "{b:#}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        state(&show(&k, bid)),
        "queued",
        "still waiting while job 1 holds the memory"
    );
    std::fs::write(&go, "").unwrap();
    let b = wait_for(&k, bid, "success", |j| state(j) == "succeeded");
    let a = show(&k, a["id"].as_u64().unwrap());
    assert_eq!(state(&a), "succeeded");
    assert!(b["started_at"].as_str().unwrap() >= a["finished_at"].as_str().unwrap());
}

#[test]
fn kill_9_of_kilnd_then_restart_readopts_the_job_and_its_checkpoints() {
    let t = tempfile::tempdir().unwrap();
    let go = t.path().join("go");
    let script = format!(
        r#"echo one > "$KILN_CHECKPOINT_DIR/weights"; echo step-1 > "$KILN_CHECKPOINT_DIR/.checkpoint"
while [ ! -f {go} ]; do sleep 0.05; done
echo two > "$KILN_CHECKPOINT_DIR/weights"; echo step-2 > "$KILN_CHECKPOINT_DIR/.checkpoint"; sleep 0.5; echo finished"#,
        go = go.display()
    );
    let mut k = start(t.path(), BUDGET_1G);
    let j = submit(
        &k,
        &[
            "--memory", "256M", "--name", "train", "--", "/bin/sh", "-c", &script,
        ],
    );
    let id = j["id"].as_u64().unwrap();
    let j = wait_for(&k, id, "a checkpoint", |j| {
        j["checkpoints"].as_array().is_some_and(|c| !c.is_empty())
    });
    let pid = j["pid"].as_i64().unwrap();
    k.child.kill().unwrap(); // SIGKILL
    k.child.wait().unwrap();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the job outlives kilnd"
    );
    drop(k);

    let k = start(t.path(), BUDGET_1G);
    let j = show(&k, id);
    assert_eq!(state(&j), "running", "{j:#}");
    assert!(
        j["detail"].as_str().unwrap().contains("re-adopted"),
        "{j:#}"
    );
    // The re-adopted job holds its 256M again: 800M more does not fit the 1G budget.
    let extra = submit(&k, &["--memory", "800M", "--", "/bin/true"]);
    assert_eq!(state(&extra), "queued", "{extra:#}");
    std::fs::write(&go, "").unwrap();
    let j = wait_for(&k, id, "success", |j| state(j) == "succeeded");
    let snaps: Vec<&str> = j["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["snapshot"].as_str())
        .collect();
    assert_eq!(
        snaps,
        vec![format!("job-{id}-ckpt-1"), format!("job-{id}-ckpt-2")],
        "{j:#}"
    );
    assert!(logs(&k, id).contains("finished"));
    let extra_id = extra["id"].as_u64().unwrap();
    wait_for(&k, extra_id, "start after the job freed its memory", |j| {
        state(j) == "succeeded"
    });
    // The snapshots are on the checkpoints dataset, holds released after the end.
    let out = k.kilnctl(&["storage", "snapshots", "checkpoints", "--json"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&format!("job-{id}-ckpt-1"))
            && listed.contains(&format!("job-{id}-ckpt-2")),
        "{listed}"
    );
}

#[test]
fn cancel_running_and_queued_jobs() {
    let t = tempfile::tempdir().unwrap();
    let k = start(t.path(), BUDGET_1G);
    let a = submit(
        &k,
        &[
            "--memory",
            "768M",
            "--",
            "/bin/sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; while :; do sleep 0.05; done",
        ],
    );
    let aid = a["id"].as_u64().unwrap().to_string();
    let b = submit(&k, &["--memory", "768M", "--", "/bin/true"]);
    let bid = b["id"].as_u64().unwrap();
    assert_eq!(state(&b), "queued");
    let out = k.kilnctl(&["jobs", "cancel", &bid.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&show(&k, bid)), "cancelled");
    std::thread::sleep(Duration::from_millis(200));
    let out = k.kilnctl(&["jobs", "cancel", &aid]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = wait_for(&k, aid.parse().unwrap(), "cancelled", |j| {
        state(j) == "cancelled"
    });
    assert_eq!(a["exit_code"], 3, "{a:#}");
    assert!(logs(&k, aid.parse().unwrap()).contains("got-term"));
    let again = k.kilnctl(&["jobs", "cancel", &aid]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already ended"));
}

#[test]
fn each_bad_spec_is_refused_at_submit_with_its_reason() {
    let t = tempfile::tempdir().unwrap();
    let k = start(t.path(), BUDGET_1G);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--device", "tpu", "--", "/bin/true"],
            "unknown device \"tpu\"",
        ),
        (
            &["--memory", "2G", "--", "/bin/true"],
            "above the whole UMA budget of 1.00 GiB",
        ),
        (&["--"], "empty command"),
        (
            &["--workdir", "/nonexistent/kiln", "--", "/bin/true"],
            "/nonexistent/kiln does not exist",
        ),
        (
            &["--placement", "burst", "--", "/bin/true"],
            "bursting is not available yet",
        ),
        (&["--memory", "lots", "--", "/bin/true"], "bad memory size"),
    ];
    for (args, want) in cases {
        let mut a = vec!["jobs", "submit"];
        a.extend_from_slice(args);
        let out = k.kilnctl(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: want {want:?}, got {err}"
        );
    }
    let list = k.kilnctl(&["jobs", "list", "--json"]);
    let v: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 0, "nothing refused was stored");
}

#[test]
fn gpu_training_waits_on_battery_and_starts_on_mains() {
    let t = tempfile::tempdir().unwrap();
    // The 5450 tree unplugged: every supply offline, the battery discharging.
    let hal = kiln_tests::copy_fixture("latitude-5450", &t.path().join("hal"));
    let ps = hal.join("sys/class/power_supply");
    let set = |rel: &str, v: &str| std::fs::write(ps.join(rel), v).unwrap();
    set("AC/online", "0\n");
    set("ucsi-source-psy-USBC000:001/online", "0\n");
    set("BAT0/status", "Discharging\n");
    let k = start(
        t.path(),
        &format!(
            "{BUDGET_1G}poll_interval_ms = 100\n[hal]\nroot = \"{}\"\nsample_interval_ms = 100\n",
            hal.display()
        ),
    );
    let train = submit(
        &k,
        &[
            "--memory",
            "64M",
            "--device",
            "gpu",
            "--training",
            "--name",
            "lora",
            "--",
            "/bin/sh",
            "-c",
            "echo trained on $KILN_DEVICE",
        ],
    );
    let id = train["id"].as_u64().unwrap();
    let j = show(&k, id);
    assert_eq!(state(&j), "queued", "{j:#}");
    assert!(
        j["detail"]
            .as_str()
            .unwrap()
            .contains("GPU training waits while on battery"),
        "{j:#}"
    );
    // Other work is not held up: a CPU job and GPU inference-style work run.
    for args in [
        vec!["--memory", "64M", "--", "/bin/true"],
        vec!["--memory", "64M", "--device", "gpu", "--", "/bin/true"],
    ] {
        let other = submit(&k, &args)["id"].as_u64().unwrap();
        wait_for(&k, other, "success", |j| state(j) == "succeeded");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(&show(&k, id)), "queued", "still on battery");

    set("AC/online", "1\n");
    set("BAT0/status", "Charging\n");
    let j = wait_for(&k, id, "its run on mains", |j| state(j) == "succeeded");
    assert!(logs(&k, id).contains("trained on GPU"), "{j:#}");
}

#[test]
fn a_job_with_only_argv_gets_the_same_defaults_over_dbus_and_grpc() {
    use kiln_api::kiln::v1::jobs_client::JobsClient;
    use kiln_api::kiln::v1::{JobSpec, SubmitJobRequest};
    let bus = kiln_tests::PrivateBus::start();
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("kiln.toml");
    std::fs::write(&conf, test_config(t.path(), "")).unwrap();
    let k = Kilnd::start(Start::in_dir(t.path(), conf, Some(&bus)));
    let rt = kiln_tests::runtime();
    let argv = || vec!["sh".to_string(), "-c".into(), "echo defaults".into()];
    let (over_grpc, over_dbus): (Value, Value) = rt.block_on(async {
        let mut c = JobsClient::new(kilnctl::client::connect(&k.socket).await.unwrap());
        let g = c
            .submit(SubmitJobRequest {
                spec: Some(JobSpec {
                    argv: argv(),
                    ..Default::default()
                }),
            })
            .await
            .expect("gRPC submit with only argv")
            .into_inner();
        let p = bus
            .kiln_proxy("/org/kiln/Kiln1/jobs", "org.kiln.Kiln1.Jobs")
            .await;
        let request = serde_json::json!({ "argv": argv() }).to_string();
        let d: String = p
            .call("SubmitJob", &(request.as_str(),))
            .await
            .expect("D-Bus SubmitJob with only argv");
        // A request the engine cannot read is refused with the field and an example.
        let bad: Result<String, zbus::Error> = p
            .call("SubmitJob", &(r#"{"argv": ["true"], "memory": "8G"}"#,))
            .await;
        let bad = format!("{:?}", bad.unwrap_err());
        assert!(
            bad.contains("InvalidArgument") && bad.contains("memory") && bad.contains("argv"),
            "{bad}"
        );
        (
            serde_json::from_str(&g.json).unwrap(),
            serde_json::from_str(&d).unwrap(),
        )
    });
    assert_eq!(over_grpc["spec"], over_dbus["spec"], "same defaults");
    let spec = &over_dbus["spec"];
    assert_eq!(spec["name"], "sh", "{spec}");
    assert_eq!(spec["device"], "cpu", "{spec}");
    assert_eq!(spec["placement"], "local", "{spec}");
    // [jobs] default_memory_bytes.
    assert_eq!(
        (spec["memory_bytes"].as_u64(), spec["priority"].as_i64()),
        (Some(1 << 30), Some(0))
    );
    for j in [&over_grpc, &over_dbus] {
        let id = j["id"].as_u64().unwrap();
        let done = wait_for(&k, id, "succeeded", |j| state(j) == "succeeded");
        assert_eq!(
            done["cpus"],
            show(&k, over_grpc["id"].as_u64().unwrap())["cpus"]
        );
        assert!(logs(&k, id).contains("defaults"), "{}", logs(&k, id));
    }
}

#[test]
fn a_fresh_state_db_over_old_datasets_gives_new_jobs_fresh_logs_and_checkpoints() {
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("kiln.toml");
    std::fs::write(&conf, test_config(t.path(), BUDGET_1G)).unwrap();
    let run = |state: &str| {
        Kilnd::start(Start {
            config: Some(conf.clone()),
            state_dir: Some(t.path().join(state)),
            socket: Some(t.path().join("kiln.sock")),
            ..Default::default()
        })
    };
    let script = r#"echo "old job output"; echo old > "$KILN_CHECKPOINT_DIR/weights"; echo "$KILN_CHECKPOINT_DIR""#;
    let k = run("state-a");
    let old = submit(&k, &["--memory", "64M", "--", "/bin/sh", "-c", script]);
    let old_id = old["id"].as_u64().unwrap();
    let old = wait_for(&k, old_id, "success", |j| state(j) == "succeeded");
    drop(k);
    // Same datasets, a new state.db: the ids start again there, the files must not.
    let k = run("state-b");
    let new = submit(
        &k,
        &[
            "--memory",
            "64M",
            "--",
            "/bin/sh",
            "-c",
            "ls -A \"$KILN_CHECKPOINT_DIR\"; echo new-job",
        ],
    );
    let new_id = new["id"].as_u64().unwrap();
    let new = wait_for(&k, new_id, "success", |j| state(j) == "succeeded");
    assert!(
        new_id > old_id,
        "job id {new_id} reuses the old datasets' {old_id}"
    );
    assert_ne!(new["log_path"], old["log_path"]);
    assert_ne!(new["checkpoint_dir"], old["checkpoint_dir"]);
    let log = logs(&k, new_id);
    assert!(
        log.contains("new-job") && !log.contains("old job output"),
        "{log}"
    );
    assert!(
        !log.contains("weights"),
        "the new job was handed old checkpoints: {log}"
    );
}
