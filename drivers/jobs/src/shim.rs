//! The job shim: the small process that is each job's parent. kilnd starts it (directly,
//! or as the main process of a systemd transient unit) with the path of a
//! `launch.json`; it survives a kill -9 of kilnd. It puts the job in its own process
//! group, a cgroup with a memory limit where one can be made (else RLIMIT_AS), pins it
//! to the CPUs asked for, copies its output to the log file and to its own stderr (the
//! journal), turns SIGTERM into SIGTERM-then-SIGKILL after the grace period, enforces
//! max runtime the same way, and writes `exit.json` atomically at the end.
//! Touches: the job's run dir, log file, cgroup, and the job's process group.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cgroup::{self, JobCgroup};
use crate::launch::{
    EXIT_FILE, ExitRecord, LAUNCH_FILE, LaunchPlan, STARTED_FILE, StartedInfo, now_unix,
    proc_start, read_json, write_json_atomic,
};

/// Entry point: `args` is `[launch.json path]`. Returns the process exit code.
pub fn shim_main(args: &[String]) -> i32 {
    let Some(launch) = args.first() else {
        eprintln!("kiln job shim: usage: job-shim <run-dir>/{LAUNCH_FILE}");
        return 2;
    };
    let plan: LaunchPlan = match read_json(Path::new(launch)) {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!("kiln job shim: {launch} does not exist");
            return 2;
        }
        Err(e) => {
            eprintln!("kiln job shim: {e}");
            return 2;
        }
    };
    let exit = run(&plan);
    let code = exit.code.unwrap_or(128 + exit.signal.unwrap_or(0));
    if let Err(e) = write_json_atomic(&plan.run_dir.join(EXIT_FILE), &exit) {
        eprintln!(
            "kiln job shim: job {}: cannot record exit status: {e}",
            plan.job_id
        );
    }
    code
}

fn signal_set(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in sigs {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

struct Ender {
    pgid: i32,
    grace: Duration,
    done: AtomicBool,
    reason: Mutex<Option<(String, String)>>,
}

impl Ender {
    /// SIGTERM the job's process group now, SIGKILL after the grace period.
    fn end(self: &Arc<Self>, reason: &str, detail: String) {
        {
            let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
            if r.is_some() {
                return;
            }
            *r = Some((reason.into(), detail));
        }
        // SAFETY: signalling the job's own process group.
        unsafe { libc::kill(-self.pgid, libc::SIGTERM) };
        let me = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(me.grace);
            if !me.done.load(Ordering::SeqCst) {
                // SAFETY: as above.
                unsafe { libc::kill(-me.pgid, libc::SIGKILL) };
            }
        });
    }
}

/// CPUs a `cpu_set_t` holds (CPU_SETSIZE); `CPU_SET` beyond it would index out of bounds.
const CPU_SET_SIZE: usize = 8 * std::mem::size_of::<libc::cpu_set_t>();

fn run(plan: &LaunchPlan) -> ExitRecord {
    let fail = |detail: String| ExitRecord {
        code: None,
        signal: None,
        reason: "spawn-failed".into(),
        detail,
        finished_at: now_unix(),
    };
    // SAFETY: setsid detaches from kilnd's session and process group; failure (already
    // a group leader) is harmless.
    unsafe { libc::setsid() };
    let term_sigs = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
    let set = signal_set(&term_sigs);
    // SAFETY: block before any thread exists so every thread inherits the mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };

    let mut log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&plan.log_path)
    {
        Ok(f) => f,
        Err(e) => {
            return fail(format!(
                "cannot open log file {}: {e}",
                plan.log_path.display()
            ));
        }
    };
    let _ = writeln!(
        log,
        "--- kiln job {} ({}) started at {} ---",
        plan.job_id,
        plan.name,
        now_unix()
    );

    // `cg` is ours (removed at the end); `unit_cg` is the systemd unit's, only watched.
    let (cg, unit_cg, cg_note): (Option<JobCgroup>, Option<JobCgroup>, Option<String>) =
        if plan.cgroup {
            match cgroup::create(
                &plan.cgroup_root,
                plan.job_id,
                plan.memory_bytes,
                plan.cpu_weight,
            ) {
                Ok(c) => (Some(c), None, None),
                Err(e) => (None, None, Some(e)),
            }
        } else {
            match cgroup::enclosing(&plan.cgroup_root, plan.memory_bytes) {
                Some(c) => (None, Some(c), None),
                None => (
                    None,
                    None,
                    Some(
                        "the systemd unit's MemoryMax is not enforced here (no memory controller \
                         in its cgroup)"
                            .into(),
                    ),
                ),
            }
        };
    let rlimit_as = cg.is_none() && unit_cg.is_none();
    let memory_limit = match (&cg, &unit_cg) {
        (Some(c), _) | (None, Some(c)) => c.applied.clone(),
        (None, None) => format!("rlimit AS={}", plan.memory_bytes),
    };

    // Everything the child needs between fork and exec, prepared here (no allocation there).
    // SAFETY: cpu_set_t is plain data, initialised by CPU_ZERO/CPU_SET.
    let mut cpuset: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if let Some(c) = plan.cpus.iter().find(|c| **c >= CPU_SET_SIZE) {
        return fail(format!(
            "CPU {c} is beyond the {CPU_SET_SIZE} CPUs an affinity mask here can name"
        ));
    }
    for c in &plan.cpus {
        // SAFETY: CPU_SET on an initialised set, with every id checked above to fit it.
        unsafe { libc::CPU_SET(*c, &mut cpuset) };
    }
    let pin = !plan.cpus.is_empty();
    let procs_file = cg
        .as_ref()
        .map(|c| CString::new(c.procs_file().to_string_lossy().into_owned()).unwrap_or_default());
    let mem = plan.memory_bytes;

    let mut cmd = Command::new(&plan.argv[0]);
    cmd.args(&plan.argv[1..])
        .current_dir(&plan.workdir)
        .env_clear()
        .envs(&plan.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure only makes async-signal-safe system calls on prepared data.
    unsafe {
        cmd.pre_exec(move || {
            let empty = signal_set(&[]);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if let Some(p) = &procs_file {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            let adj = c"/proc/self/oom_score_adj";
            let fd = libc::open(adj.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"1000".as_ptr().cast(), 4);
                libc::close(fd);
            }
            if pin
                && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpuset) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if rlimit_as {
                let r = libc::rlimit {
                    rlim_cur: mem,
                    rlim_max: mem,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            if let Some(c) = &cg {
                c.destroy();
            }
            let msg = format!(
                "cannot start {:?} in {}: {e}",
                plan.argv[0],
                plan.workdir.display()
            );
            let _ = writeln!(log, "kiln: {msg}");
            return fail(msg);
        }
    };
    let pid = child.id() as i32;
    let me = std::process::id() as i32;
    let started = StartedInfo {
        shim_pid: me,
        shim_start_ticks: proc_start(me).map(|s| s.0).unwrap_or(0),
        pid,
        started_at: now_unix(),
        cpus: kiln_hal::format_cpu_list(&plan.cpus),
        memory_limit: memory_limit.clone(),
        cgroup: cg.as_ref().map(|c| c.dir.clone()),
        cgroup_note: cg_note.clone(),
    };
    let _ = writeln!(
        log,
        "kiln: pid {pid}, cpus {}, memory limit {memory_limit}{}",
        if started.cpus.is_empty() {
            "all"
        } else {
            &started.cpus
        },
        cg_note
            .as_ref()
            .map(|n| format!(" (no cgroup: {n})"))
            .unwrap_or_default()
    );
    let ender = Arc::new(Ender {
        pgid: pid,
        grace: Duration::from_millis(plan.grace_ms),
        done: AtomicBool::new(false),
        reason: Mutex::new(None),
    });
    if let Err(e) = write_json_atomic(&plan.run_dir.join(STARTED_FILE), &started) {
        eprintln!("kiln job shim: job {}: {e}", plan.job_id);
    }

    // Output: to the log file as is, and to our stderr (the journal) line by line.
    let log = Arc::new(Mutex::new(log));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut pipes: Vec<Box<dyn Read + Send>> = Vec::new();
    if let Some(o) = child.stdout.take() {
        pipes.push(Box::new(o));
    }
    if let Some(e) = child.stderr.take() {
        pipes.push(Box::new(e));
    }
    let n_pipes = pipes.len();
    for p in pipes {
        let log = log.clone();
        let tx = tx.clone();
        let tag = format!("job {} ({}): ", plan.job_id, plan.name);
        std::thread::spawn(move || {
            let mut r = BufReader::new(p);
            let mut line = Vec::new();
            let mut journal_ok = true;
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let _ = log
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write_all(&line);
                if journal_ok {
                    let mut err = std::io::stderr().lock();
                    journal_ok = err
                        .write_all(tag.as_bytes())
                        .and_then(|_| err.write_all(&line))
                        .is_ok();
                }
            }
            let _ = tx.send(());
        });
    }
    drop(tx);

    {
        let ender = ender.clone();
        std::thread::spawn(move || {
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: waits for one of the blocked termination signals.
                if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                    ender.end("cancelled", format!("signal {sig} received, job ended"));
                }
            }
        });
    }
    if plan.max_runtime_s > 0 {
        let ender = ender.clone();
        let max = plan.max_runtime_s;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(max));
            if !ender.done.load(Ordering::SeqCst) {
                ender.end(
                    "max-runtime",
                    format!("ran longer than its max runtime of {max} s"),
                );
            }
        });
    }

    let status = child.wait();
    ender.done.store(true, Ordering::SeqCst);
    // Nothing of the job may outlive it.
    // SAFETY: the job's own process group.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    for _ in 0..n_pipes {
        if rx.recv_timeout(Duration::from_secs(2)).is_err() {
            break;
        }
    }
    let oom = cg
        .as_ref()
        .or(unit_cg.as_ref())
        .is_some_and(|c| c.oom_killed());
    if let Some(c) = &cg {
        c.destroy();
    }
    use std::os::unix::process::ExitStatusExt;
    let (code, signal) = match &status {
        Ok(s) => (s.code(), s.signal()),
        Err(_) => (None, None),
    };
    let taken = ender
        .reason
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let (reason, detail) = if oom && signal == Some(libc::SIGKILL) {
        (
            "memory-limit".to_string(),
            format!("killed by its own memory limit ({memory_limit})"),
        )
    } else if let Some(r) = taken {
        r
    } else {
        match &status {
            Ok(_) => ("exited".into(), String::new()),
            Err(e) => ("lost".into(), format!("wait failed: {e}")),
        }
    };
    let exit = ExitRecord {
        code,
        signal,
        reason,
        detail,
        finished_at: now_unix(),
    };
    let _ = writeln!(
        log.lock().unwrap_or_else(|p| p.into_inner()),
        "--- kiln job {} ended: {} ---",
        plan.job_id,
        exit.summary()
    );
    exit
}
