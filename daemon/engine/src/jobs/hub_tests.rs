//! The jobs hub against a fake launcher: defaults, admission against the budget, start
//! failures, cancellation, ends and re-adoption, with no process started.

use super::*;
use crate::Engine;
use crate::testing::{TestEngine, engine};
use kiln_hal::ports::ErrorKind as PortKind;
use kiln_testkit::fakes::FakeBackend;

const CONFIG: &str = "[budget]\nconservative_bytes = 4294967296\ngranularity_bytes = 4096\n\n[jobs]\npoll_interval_ms = 10\ngrace_ms = 1234\n";

fn shim() -> ShimCommand {
    ShimCommand {
        program: "/nonexistent/kilnd".into(),
        args: vec!["job-shim".into()],
    }
}

async fn started(extra: &str) -> TestEngine {
    let t = engine(FakeBackend::default(), extra);
    t.engine.start_jobs(shim()).await;
    t
}

fn argv_only() -> JobRequest {
    JobRequest {
        argv: vec!["python3".into(), "train.py".into()],
        ..Default::default()
    }
}

/// Waits until job `id` is in `state` (the hub's loop polls every 10 ms).
async fn until(t: &TestEngine, id: u64, state: JobState) -> JobInfo {
    until_on(&t.engine, id, state).await
}

async fn until_on(e: &Engine, id: u64, state: JobState) -> JobInfo {
    for _ in 0..500 {
        let j = e.get_job(id).unwrap();
        if j.state == state {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never reached {state:?}: {:?}", e.get_job(id));
}

#[tokio::test]
async fn a_job_with_only_argv_runs_with_the_engine_defaults_and_returns_its_memory() {
    let t = started(CONFIG).await;
    let free = t.engine.budget().free_bytes();
    let j = t
        .engine
        .submit_job(&Caller::internal(), argv_only())
        .await
        .unwrap();
    assert_eq!(j.state, JobState::Running, "{j:?}");
    assert_eq!(j.spec.memory_bytes, 1 << 30, "[jobs] default_memory_bytes");
    assert_eq!(free - t.engine.budget().free_bytes(), 1 << 30);
    let plans = t.launcher.started();
    assert_eq!(plans.len(), 1);
    let p = &plans[0];
    assert_eq!(p.argv, ["python3", "train.py"]);
    assert_eq!(
        (p.memory_bytes, p.grace_ms, p.cpu_weight),
        (1 << 30, 1234, 100)
    );
    assert_eq!(p.env["KILN_JOB_ID"], j.id.to_string());
    assert_eq!(p.env["KILN_DEVICE"], "CPU");
    assert!(
        p.env["KILN_CHECKPOINT_DIR"].ends_with(&format!("job-{}", j.id)),
        "{p:?}"
    );
    assert!(!p.cpus.is_empty(), "`any` still gets an explicit mask");
    assert_eq!(j.memory_used_bytes, Some(4096), "the launcher reports use");

    t.launcher.finish(j.id, 0);
    let done = until(&t, j.id, JobState::Succeeded).await;
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(
        t.engine.budget().free_bytes(),
        free,
        "the reservation is back"
    );
}

#[tokio::test]
async fn a_failing_exit_and_a_cancel_end_in_their_states() {
    let t = started(CONFIG).await;
    let a = t
        .engine
        .submit_job(&Caller::internal(), argv_only())
        .await
        .unwrap();
    let b = t
        .engine
        .submit_job(&Caller::internal(), argv_only())
        .await
        .unwrap();
    t.launcher.finish(a.id, 3);
    let a = until(&t, a.id, JobState::Failed).await;
    assert_eq!(a.exit_code, Some(3));
    let cancelled = t
        .engine
        .cancel_job(&Caller::internal(), b.id)
        .await
        .unwrap();
    assert!(
        matches!(cancelled.state, JobState::Running | JobState::Cancelled),
        "{cancelled:?}"
    );
    let b = until(&t, b.id, JobState::Cancelled).await;
    assert_eq!(b.signal, Some(15));
    let st = t.launcher.calls.lock().unwrap().jobs[&b.id].clone();
    assert!(
        st.lock().unwrap().cancelled,
        "the cancel reached the launcher"
    );
    // A second cancel of an ended job is refused with the state.
    let e = t
        .engine
        .cancel_job(&Caller::internal(), b.id)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition, "{e:?}");
}

#[tokio::test]
async fn a_job_that_does_not_fit_waits_and_starts_when_memory_returns() {
    let t = started(CONFIG).await;
    let hog = t
        .engine
        .budget()
        .reserve("test", t.engine.budget().free_bytes() - (512 << 20))
        .unwrap();
    let j = t
        .engine
        .submit_job(&Caller::internal(), argv_only())
        .await
        .unwrap();
    assert_eq!(j.state, JobState::Queued, "{j:?}");
    assert!(j.detail.contains("waiting for 1.00 GiB"), "{}", j.detail);
    assert!(
        t.launcher.started().is_empty(),
        "nothing reached the launcher"
    );
    drop(hog);
    until(&t, j.id, JobState::Running).await;
    assert_eq!(t.launcher.started().len(), 1);
}

#[tokio::test]
async fn a_launcher_that_cannot_start_fails_the_job_and_keeps_nothing() {
    let t = started(CONFIG).await;
    *t.launcher.refuse.lock().unwrap() =
        Some((PortKind::Internal, "fork failed: out of pids".into()));
    let free = t.engine.budget().free_bytes();
    let j = t
        .engine
        .submit_job(&Caller::internal(), argv_only())
        .await
        .unwrap();
    assert_eq!(j.state, JobState::Failed, "{j:?}");
    assert!(j.detail.contains("out of pids"), "{}", j.detail);
    assert_eq!(t.engine.budget().free_bytes(), free);
    // Other jobs still start once the launcher works again.
    *t.launcher.refuse.lock().unwrap() = None;
    let k = t
        .engine
        .submit_job(&Caller::internal(), argv_only())
        .await
        .unwrap();
    assert_eq!(k.state, JobState::Running, "{k:?}");
}

#[tokio::test]
async fn a_job_without_a_launcher_is_refused_as_unavailable() {
    let t = engine(FakeBackend::default(), CONFIG);
    let e = t
        .engine
        .submit_job(&Caller::internal(), argv_only())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e:?}");
    assert!(e.message.contains("start_jobs"), "{}", e.message);
}

#[test]
fn jobs_a_previous_daemon_left_are_adopted_and_supervised() {
    // The first daemon's runtime ends with it, and with it the state database's lock.
    let first_rt = kiln_testkit::runtime();
    let t = engine(FakeBackend::default(), CONFIG);
    let (running, ending) = first_rt.block_on(async {
        t.engine.start_jobs(shim()).await;
        let a = t
            .engine
            .submit_job(&Caller::internal(), argv_only())
            .await
            .unwrap();
        let b = t
            .engine
            .submit_job(&Caller::internal(), argv_only())
            .await
            .unwrap();
        (a.id, b.id)
    });
    let TestEngine {
        engine: first,
        backend,
        index,
        config,
        dir,
        ..
    } = t;
    let state_dir = first.config().daemon.state_dir.clone();
    drop(first);
    drop(first_rt);

    let rt = kiln_testkit::runtime();
    rt.block_on(async {
        let sources = crate::config::ConfigSources::new(
            Some(config),
            crate::config::Overrides {
                state_dir: Some(state_dir.clone()),
                ..Default::default()
            },
        );
        let loaded = crate::config::load(&sources).unwrap();
        let db = crate::state::StateDb::open(&state_dir).unwrap();
        let launcher = Arc::new(kiln_testkit::fakes::FakeLauncher::default());
        let second = Engine::with_ports(
            loaded.clone(),
            sources,
            db,
            Box::new(crate::auth::GroupAuthority::new("root")),
            Box::new(crate::testing::NoLive),
            crate::wiring::Ports {
                storage: crate::wiring::Ports::from_config(&loaded.config).storage,
                inference: backend,
                jobs: Some(launcher.clone()),
                vectors: index.opener(),
            },
        )
        .unwrap();
        second.start_jobs(shim()).await;
        let adopted: Vec<u64> = launcher
            .calls
            .lock()
            .unwrap()
            .adopted
            .iter()
            .map(|r| r.job_id)
            .collect();
        assert_eq!(adopted, [running, ending]);
        let j = second.get_job(running).unwrap();
        assert_eq!(j.state, JobState::Running);
        assert!(j.detail.contains("re-adopted"), "{j:?}");
        assert!(launcher.started().is_empty(), "nothing was started twice");
        launcher.finish(ending, 5);
        let j = until_on(&second, ending, JobState::Failed).await;
        assert_eq!(j.exit_code, Some(5));
    });
    drop(dir);
}

#[tokio::test]
async fn a_checkpoint_is_a_held_snapshot_and_a_failed_one_leaves_no_row() {
    let t = started(CONFIG).await;
    let j = t
        .engine
        .submit_job(&Caller::internal(), argv_only())
        .await
        .unwrap();
    let snap = t
        .engine
        .checkpoint_job(&Caller::internal(), j.id, "epoch-1")
        .await
        .unwrap();
    assert_eq!(snap, format!("job-{}-ckpt-1", j.id));
    let storage = t.engine.storage().unwrap();
    let s = storage
        .list_snapshots(Some(Dataset::Checkpoints))
        .unwrap()
        .into_iter()
        .find(|s| s.name == snap)
        .unwrap();
    assert!(s.held, "held while the job runs: {s:?}");
    assert_eq!(t.engine.get_job(j.id).unwrap().checkpoints.len(), 1);

    // The checkpoints dataset is gone: the snapshot fails and no row stays behind.
    let ds = storage.dataset_path(Dataset::Checkpoints);
    std::fs::rename(&ds, ds.with_extension("away")).unwrap();
    let err = t
        .engine
        .checkpoint_job(&Caller::internal(), j.id, "epoch-2")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal, "{err:?}");
    std::fs::rename(ds.with_extension("away"), &ds).unwrap();
    let rows = t.engine.get_job(j.id).unwrap().checkpoints;
    assert_eq!(rows.len(), 1, "{rows:?}");
    // The job ends: its hold is released.
    t.launcher.finish(j.id, 0);
    until(&t, j.id, JobState::Succeeded).await;
    let s = storage
        .list_snapshots(Some(Dataset::Checkpoints))
        .unwrap()
        .into_iter()
        .find(|s| s.name == snap)
        .unwrap();
    assert!(!s.held, "released when the job ended: {s:?}");
}
