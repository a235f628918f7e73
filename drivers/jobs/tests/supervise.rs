//! Real job processes through the real shim binary: pinning and memory limits as asked,
//! cancel with grace escalation, max runtime, memory limit kills, start failures, and
//! re-adoption after the supervising parent is killed with SIGKILL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_jobs::launch::{STARTED_FILE, read_json};
use kiln_jobs::supervisor::prepare;
use kiln_jobs::{JobRecord, LaunchPlan, Readopt, ShimCommand, StartedInfo, readopt, spawn};

fn shim() -> ShimCommand {
    ShimCommand {
        program: env!("CARGO_BIN_EXE_kiln-job-shim").into(),
        args: vec![],
    }
}

fn plan(dir: &Path, id: u64, script: &str) -> LaunchPlan {
    let mut env = BTreeMap::new();
    env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
    env.insert(
        "KILN_CHECKPOINT_DIR".into(),
        dir.join(format!("ckpt/{id}")).to_string_lossy().into(),
    );
    LaunchPlan {
        job_id: id,
        name: format!("t{id}"),
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        workdir: dir.to_path_buf(),
        env,
        cpus: vec![],
        memory_bytes: 256 << 20,
        cpu_weight: 100,
        max_runtime_s: 0,
        grace_ms: 500,
        log_path: dir.join(format!("logs/{id}.log")),
        checkpoint_dir: dir.join(format!("ckpt/{id}")),
        run_dir: dir.join(format!("run/{id}")),
        cgroup: true,
        cgroup_root: "/sys/fs/cgroup".into(),
    }
}

fn log(p: &LaunchPlan) -> String {
    std::fs::read_to_string(&p.log_path).unwrap_or_default()
}

#[test]
fn job_shows_the_cpu_affinity_and_memory_limit_it_asked_for() {
    let t = tempfile::tempdir().unwrap();
    let ncpu = std::thread::available_parallelism().unwrap().get();
    let want_cpu = ncpu - 1;
    let mut p = plan(
        t.path(),
        1,
        r#"grep Cpus_allowed_list /proc/self/status
echo "rlimit_as_kib=$(ulimit -v)"
for l in $(cat /proc/self/cgroup); do
  ctl=$(echo "$l" | cut -d: -f2); path=$(echo "$l" | cut -d: -f3)
  case "$ctl" in
    memory) echo "cgroup_limit=$(cat /sys/fs/cgroup/memory$path/memory.limit_in_bytes)";;
    "") [ -f /sys/fs/cgroup$path/memory.max ] && echo "cgroup_limit=$(cat /sys/fs/cgroup$path/memory.max)";;
  esac
done
echo "oom_score_adj=$(cat /proc/self/oom_score_adj)"
true"#,
    );
    p.cpus = vec![want_cpu];
    p.memory_bytes = 300 << 20;
    let mut h = spawn(&shim(), &p).unwrap();
    let exit = h.wait_timeout(Duration::from_secs(10)).expect("job ends");
    let out = log(&p);
    assert!(exit.success(), "{exit:?}\n{out}");
    assert!(
        out.contains(&format!("Cpus_allowed_list:\t{want_cpu}\n")),
        "{out}"
    );
    assert_eq!(h.started.cpus, want_cpu.to_string());
    assert!(out.contains("oom_score_adj=1000"), "{out}");
    // Whatever mechanism this machine allows, the job sees exactly the bytes asked for.
    if let Some(cg) = &h.started.cgroup {
        assert!(
            out.contains(&format!("cgroup_limit={}", 300u64 << 20)),
            "{out}"
        );
        assert!(h.started.memory_limit.contains("cgroup"), "{:?}", h.started);
        assert!(!cg.exists(), "cgroup removed after exit");
    } else {
        assert!(
            out.contains(&format!("rlimit_as_kib={}", 300 * 1024)),
            "{out}"
        );
        assert!(h.started.cgroup_note.is_some());
    }
    println!(
        "applied: {} / {:?}",
        h.started.memory_limit, h.started.cgroup_note
    );
}

#[test]
fn a_job_over_its_memory_is_ended_by_its_own_limit() {
    let t = tempfile::tempdir().unwrap();
    let mut p = plan(t.path(), 2, "");
    p.argv = vec![
        "/usr/bin/python3".into(),
        "-c".into(),
        "b = bytearray(400 << 20); b[::4096] = b'x' * len(b[::4096]); print('survived')".into(),
    ];
    p.memory_bytes = 64 << 20;
    let mut h = spawn(&shim(), &p).unwrap();
    let exit = h.wait_timeout(Duration::from_secs(20)).expect("job ends");
    let out = log(&p);
    assert!(!out.contains("survived"), "{out}");
    assert!(!exit.success(), "{exit:?}");
    if h.started.cgroup.is_some() {
        assert_eq!(exit.reason, "memory-limit", "{exit:?}\n{out}");
        assert!(exit.detail.contains("own memory limit"), "{exit:?}");
    } else {
        assert!(out.contains("MemoryError"), "{out}");
    }
}

#[test]
fn cancel_terms_then_kills_after_grace() {
    let t = tempfile::tempdir().unwrap();
    let p = plan(
        t.path(),
        3,
        "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
    );
    let mut h = spawn(&shim(), &p).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    h.cancel().unwrap();
    let exit = h
        .wait_timeout(Duration::from_secs(5))
        .expect("ends on TERM");
    assert_eq!(exit.reason, "cancelled");
    assert_eq!(exit.code, Some(3), "{exit:?}");
    assert!(log(&p).contains("got-term"));
    assert!(h.cancel().is_err(), "cancel after the end is refused");

    // A job that ignores SIGTERM is killed after the grace period.
    let p = plan(t.path(), 4, "trap '' TERM; while :; do sleep 0.05; done");
    let mut h = spawn(&shim(), &p).unwrap();
    let t0 = Instant::now();
    h.cancel().unwrap();
    let exit = h.wait_timeout(Duration::from_secs(5)).expect("killed");
    assert_eq!(
        (exit.reason.as_str(), exit.signal),
        ("cancelled", Some(9)),
        "{exit:?}"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t0.elapsed()
    );
    // Nothing of the job is left.
    assert!(kiln_jobs::launch::proc_start(h.started.pid).is_none_or(|(_, z)| z));
}

#[test]
fn max_runtime_ends_the_job() {
    let t = tempfile::tempdir().unwrap();
    let mut p = plan(t.path(), 5, "sleep 30");
    p.max_runtime_s = 1;
    let t0 = Instant::now();
    let mut h = spawn(&shim(), &p).unwrap();
    let exit = h.wait_timeout(Duration::from_secs(5)).expect("ended");
    assert_eq!(exit.reason, "max-runtime", "{exit:?}");
    assert!(t0.elapsed() < Duration::from_secs(4));
    assert!(log(&p).contains("max runtime of 1 s"));
}

#[test]
fn start_failures_are_reported() {
    let t = tempfile::tempdir().unwrap();
    let mut p = plan(t.path(), 6, "");
    p.argv = vec!["/nonexistent/trainer".into()];
    let e = spawn(&shim(), &p).unwrap_err();
    assert!(
        e.message.contains("cannot start \"/nonexistent/trainer\""),
        "{e}"
    );
    let bad = ShimCommand {
        program: PathBuf::from("/nonexistent/shim"),
        args: vec![],
    };
    let e = spawn(&bad, &plan(t.path(), 7, "true")).unwrap_err();
    assert!(e.message.contains("job supervisor"), "{e}");
    // A CPU id beyond what an affinity mask holds is refused, not a crash of the shim.
    let mut p = plan(t.path(), 8, "true");
    p.cpus = vec![0, 5000];
    let e = spawn(&shim(), &p).unwrap_err();
    assert!(
        e.message.contains("CPU 5000 is beyond the 1024 CPUs"),
        "{e}"
    );
}

#[test]
fn readopt_after_the_parent_is_killed_tracks_the_job_to_completion() {
    let t = tempfile::tempdir().unwrap();
    let p = plan(
        t.path(),
        8,
        r#"mkdir -p "$KILN_CHECKPOINT_DIR"; echo w1 > "$KILN_CHECKPOINT_DIR/weights"; echo step-1 > "$KILN_CHECKPOINT_DIR/.checkpoint"; sleep 1.5; echo done; exit 7"#,
    );
    let launch = prepare(&p).unwrap();
    // A stand-in for kilnd: a parent process that starts the shim, then dies by SIGKILL.
    let mut parent = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "{} {} & wait",
            env!("CARGO_BIN_EXE_kiln-job-shim"),
            launch.display()
        ))
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let started: StartedInfo = loop {
        if let Some(s) = read_json(&p.run_dir.join(STARTED_FILE)).unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "shim never started");
        std::thread::sleep(Duration::from_millis(5));
    };
    parent.kill().unwrap();
    parent.wait().unwrap();
    let rec = JobRecord {
        job_id: 8,
        run_dir: p.run_dir.clone(),
        shim_pid: started.shim_pid,
        shim_start_ticks: started.shim_start_ticks,
        pid: started.pid,
        checkpoint_dir: p.checkpoint_dir.clone(),
        unit: None,
    };
    let Readopt::Running(mut h) = readopt(&rec) else {
        panic!("job should still be running")
    };
    let exit = h.wait_timeout(Duration::from_secs(10)).expect("completes");
    assert_eq!(
        (exit.reason.as_str(), exit.code),
        ("exited", Some(7)),
        "{exit:?}"
    );
    assert_eq!(h.take_checkpoint_request().as_deref(), Some("step-1"));
    assert_eq!(
        h.take_checkpoint_request(),
        None,
        "a marker is consumed once"
    );
    assert!(log(&p).contains("done"));
    // Once ended, a later readopt reads the recorded exit.
    match readopt(&rec) {
        Readopt::Finished(e) => assert_eq!(e.code, Some(7)),
        other => panic!("{other:?}"),
    }
    // A record whose shim vanished without an exit file is lost, with the reason.
    std::fs::remove_file(p.run_dir.join("exit.json")).unwrap();
    match readopt(&rec) {
        Readopt::Lost(why) => assert!(why.contains("recorded no exit status"), "{why}"),
        other => panic!("{other:?}"),
    }
}
