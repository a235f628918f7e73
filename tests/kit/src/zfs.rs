//! Real ZFS for tests: a `zfs-fuse` daemon this process starts and stops itself, file-backed
//! pools on it, and a deadline that turns a wedged daemon into a report instead of a hang.
//!
//! zfs-fuse serves every `zfs`/`zpool` call on the machine through one socket and wedges when
//! several pools are busy at once, or when one long-lived daemon serves run after run. So:
//! - a machine-wide lock (`flock`) lets one test at a time have a daemon, across the threads of
//!   a test binary and across processes (a test's own thread shares the one it has);
//! - each [`ZfsFuse`] starts a fresh daemon and stops it, with its mounts, when dropped (also
//!   when the test panics; if the test process is killed, the kernel kills the daemon with it);
//! - a daemon found running that this harness did not start is refused, never reused; the
//!   leftover of a killed run (recognised by the pid file) is killed and cleaned up instead;
//! - a watchdog gives each [`ZfsFuse`] a deadline. Past it, it records the daemon's state, kills
//!   it, unmounts what it left and fails the test with that report.
//!
//! Needs root, `/dev/fuse` and apt `zfs-fuse`. Touches only its own daemon, its pid/lock files
//! under [`STATE_DIR`] and FUSE mounts under `kiln-zpool-*` temp dirs.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lock and pid files of the harness.
pub const STATE_DIR: &str = "/run/kiln-testkit";
/// Deadline of one [`ZfsFuse`] unless `KILN_ZFS_TEST_DEADLINE_S` says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(240);
/// After the deadline has killed the daemon, how long the test may take to notice before the
/// whole test binary is aborted (a test stuck somewhere else than in zfs-fuse).
const GRACE: Duration = Duration::from_secs(30);
/// Temp dirs holding pools start with this; the mount clean-up looks only below them.
const POOL_DIR_PREFIX: &str = "kiln-zpool-";

enum Watch {
    Running,
    Expired(String),
    Done,
}

struct Shared {
    state: Mutex<Watch>,
    cv: Condvar,
    pid: u32,
    test: String,
    deadline: Duration,
    started: Instant,
    last_command: Mutex<String>,
    log: PathBuf,
}

/// The daemon and what it holds; stopped with its mounts when the last handle goes.
struct Daemon {
    shared: Arc<Shared>,
    child: Child,
    watchdog: Option<JoinHandle<()>>,
    _lock: File,
}

thread_local! {
    /// The daemon this thread's test has, shared by every pool the test makes.
    static CURRENT: RefCell<Weak<Daemon>> = const { RefCell::new(Weak::new()) };
}

/// A handle on a zfs-fuse daemon of this test alone. Clones, and further [`ZfsFuse::start`]
/// calls on the same thread while one is alive, share it.
#[derive(Clone)]
pub struct ZfsFuse {
    daemon: Arc<Daemon>,
}

impl ZfsFuse {
    /// Wait for the machine-wide lock, then start a fresh daemon under the default deadline.
    pub fn start() -> ZfsFuse {
        let deadline = std::env::var("KILN_ZFS_TEST_DEADLINE_S")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_DEADLINE);
        ZfsFuse::start_with_deadline(deadline)
    }

    /// As [`ZfsFuse::start`]; the deadline applies from now. A daemon this thread already
    /// has is shared, with its deadline.
    pub fn start_with_deadline(deadline: Duration) -> ZfsFuse {
        if let Some(daemon) = CURRENT.with(|c| c.borrow().upgrade()) {
            return ZfsFuse { daemon };
        }
        if !Path::new("/dev/fuse").exists() {
            panic!("/dev/fuse is missing: the ZFS tests need FUSE (and root) for zfs-fuse");
        }
        let lock = take_lock(deadline);
        clear_leftovers();
        let log = Path::new(STATE_DIR).join("zfs-fuse.log");
        let out = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        let mut cmd = Command::new("zfs-fuse");
        cmd.args(["--no-daemon", "--no-kstat-mount"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe; it ties the daemon's life to this process.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = spawn_from_long_lived_thread(cmd).unwrap_or_else(|e| {
            panic!(
                "cannot start zfs-fuse ({e}); install it with `apt-get install zfs-fuse` \
                 (scripts/setup.sh test does this)"
            )
        });
        let pid = child.id();
        let _ = std::fs::write(
            Path::new(STATE_DIR).join("zfs-fuse.pid"),
            format!("{pid} {}\n", start_time(pid).unwrap_or(0)),
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(Watch::Running),
            cv: Condvar::new(),
            pid,
            test: std::thread::current()
                .name()
                .unwrap_or("unnamed test")
                .to_string(),
            deadline,
            started: Instant::now(),
            last_command: Mutex::new(String::new()),
            log,
        });
        let mut daemon = Daemon {
            shared: shared.clone(),
            child,
            watchdog: None,
            _lock: lock,
        };
        let ready = Instant::now();
        loop {
            if run(&shared, &["zpool", "list", "-H"]).status.success() {
                break;
            }
            if ready.elapsed() > Duration::from_secs(15) {
                panic!(
                    "zfs-fuse (pid {pid}) started but `zpool list` did not answer within 15 s; \
                     its log:\n{}",
                    tail(&shared.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon.watchdog = Some(
            std::thread::Builder::new()
                .name("zfs-fuse-watchdog".into())
                .spawn(move || watch(&shared))
                .expect("watchdog thread"),
        );
        let daemon = Arc::new(daemon);
        CURRENT.with(|c| *c.borrow_mut() = Arc::downgrade(&daemon));
        ZfsFuse { daemon }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.daemon.shared.pid
    }

    /// Run `zfs` or `zpool` (`argv[0]`) as the harness; the report names the last one.
    pub fn run(&self, argv: &[&str]) -> Output {
        run(&self.daemon.shared, argv)
    }

    fn quiet(&self, argv: &[&str]) -> bool {
        self.run(argv).status.success()
    }

    /// Drill hook: stop the daemon (SIGSTOP) the way a wedge stops it. Calls into it then
    /// block until the deadline kills it.
    pub fn freeze(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGSTOP) };
    }

    /// True once the deadline has passed and the daemon was killed.
    pub fn expired(&self) -> bool {
        matches!(*self.daemon.shared.state.lock().unwrap(), Watch::Expired(_))
    }
}

fn run(shared: &Shared, argv: &[&str]) -> Output {
    *shared.last_command.lock().unwrap() = argv.join(" ");
    Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {argv:?}: {e}"))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let prev = {
            let mut s = self.shared.state.lock().unwrap();
            std::mem::replace(&mut *s, Watch::Done)
        };
        self.shared.cv.notify_all();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
        stop(&mut self.child);
        unmount_leftovers();
        let _ = std::fs::remove_file(Path::new(STATE_DIR).join("zfs-fuse.pid"));
        if let Watch::Expired(report) = prev
            && !std::thread::panicking()
        {
            panic!("{report}");
        }
    }
}

/// A file-backed pool (256 MiB, root not mounted) on a daemon of its own; destroyed on drop.
pub struct TestPool {
    pub name: String,
    // Declared before `dir`: the daemon stops and unmounts before the dir is removed.
    zfs: ZfsFuse,
    pub dir: tempfile::TempDir,
}

impl TestPool {
    pub fn new() -> TestPool {
        TestPool::on(ZfsFuse::start())
    }

    /// A pool on a daemon the caller started (for a custom deadline).
    pub fn on(zfs: ZfsFuse) -> TestPool {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kt{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix(POOL_DIR_PREFIX)
            .tempdir()
            .expect("pool temp dir");
        let vdev = dir.path().join("vdev");
        File::create(&vdev)
            .and_then(|f| f.set_len(256 << 20))
            .expect("pool vdev");
        let mnt = dir.path().join("mnt");
        let (mnt, vdev) = (mnt.to_str().unwrap(), vdev.to_str().unwrap());
        let out = zfs.run(&[
            "zpool",
            "create",
            "-o",
            "cachefile=none",
            "-O",
            "canmount=off",
            "-m",
            mnt,
            &name,
            vdev,
        ]);
        assert!(
            out.status.success(),
            "zpool create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestPool { name, zfs, dir }
    }

    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// The daemon this pool lives on.
    pub fn daemon(&self) -> &ZfsFuse {
        &self.zfs
    }

    /// Run `zfs` directly (an operator, or drift); returns stdout.
    pub fn zfs(&self, args: &[&str]) -> String {
        let argv: Vec<&str> = std::iter::once("zfs").chain(args.iter().copied()).collect();
        let out = self.zfs.run(&argv);
        assert!(
            out.status.success(),
            "zfs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Default for TestPool {
    fn default() -> Self {
        TestPool::new()
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        if self.zfs.expired() {
            return;
        }
        for _ in 0..40 {
            if self.zfs.quiet(&["zpool", "destroy", "-f", &self.name]) {
                return;
            }
            self.zfs.quiet(&["zfs", "unmount", "-f", &self.name]);
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!(
            "warning: could not destroy test pool {}; stopping its daemon",
            self.name
        );
    }
}

/// The watchdog: wait for the guard to finish; past the deadline, report, kill and clean up.
fn watch(s: &Shared) {
    let guard = s.state.lock().unwrap();
    let (mut guard, _) =
        s.cv.wait_timeout_while(guard, s.deadline, |w| matches!(w, Watch::Running))
            .unwrap();
    if !matches!(*guard, Watch::Running) {
        return;
    }
    let report = report(s);
    // SAFETY: signalling the daemon we started (a stopped process dies of SIGKILL too).
    unsafe { libc::kill(s.pid as i32, libc::SIGKILL) };
    unmount_leftovers();
    // Straight to stderr: a test's captured output is lost if the binary has to abort.
    let _ = writeln!(io::stderr(), "{report}");
    *guard = Watch::Expired(report);
    let (guard, timeout) =
        s.cv.wait_timeout_while(guard, GRACE, |w| !matches!(w, Watch::Done))
            .unwrap();
    if timeout.timed_out() {
        let _ = writeln!(
            io::stderr(),
            "test `{}` is still running {} s after its zfs-fuse was killed; aborting the test binary",
            s.test,
            GRACE.as_secs()
        );
        std::process::abort();
    }
    drop(guard);
}

fn report(s: &Shared) -> String {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid)).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let mounts: Vec<String> = fuse_mounts()
        .into_iter()
        .map(|(src, at)| format!("{src} on {at}"))
        .collect();
    format!(
        "zfs-fuse deadline of {} s passed in test `{}` ({} s since the daemon started)\n\
         - zfs-fuse pid {}: {} threads, state {}\n\
         - zfs/zpool commands in flight: {}\n\
         - last harness command: {}\n\
         - zfs-fuse mounts: {}\n\
         - zfs-fuse log (last lines):\n{}\n\
         The daemon was killed and its mounts unmounted; the test fails.",
        s.deadline.as_secs(),
        s.test,
        s.started.elapsed().as_secs(),
        s.pid,
        field("Threads:"),
        field("State:"),
        list_or_none(zfs_commands_in_flight()),
        non_empty(&s.last_command.lock().unwrap()),
        list_or_none(mounts),
        tail(&s.log, 10),
    )
}

fn list_or_none(v: Vec<String>) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join("; ")
    }
}

fn non_empty(s: &str) -> &str {
    if s.is_empty() { "none" } else { s }
}

/// The machine-wide lock. Waits while another test (any process) holds it: at most for as
/// long as a holder may run (its deadline, then the abort grace) several times over.
fn take_lock(deadline: Duration) -> File {
    std::fs::create_dir_all(STATE_DIR).unwrap_or_else(|e| {
        panic!("cannot create {STATE_DIR} ({e}): the ZFS tests need root for zfs-fuse")
    });
    let path = Path::new(STATE_DIR).join("zfs-fuse.lock");
    let f = File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let patience = (deadline.max(DEFAULT_DEADLINE) + GRACE) * 4;
    let since = Instant::now();
    // SAFETY: flock on a descriptor we own.
    while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder =
            std::fs::read_to_string(Path::new(STATE_DIR).join("zfs-fuse.pid")).unwrap_or_default();
        if since.elapsed() > patience {
            panic!(
                "waited {} s for the zfs-fuse lock {} (zfs-fuse pid/start: {}); a test that \
                 starts a pool from a second thread while its own thread holds one waits forever",
                patience.as_secs(),
                path.display(),
                holder.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f
}

/// Under the lock: kill the daemon a killed run left (its pid file says so), refuse any other.
fn clear_leftovers() {
    let recorded = std::fs::read_to_string(Path::new(STATE_DIR).join("zfs-fuse.pid"))
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|w| w.parse::<u64>().ok());
            Some((it.next()??, it.next()??))
        });
    for pid in processes_named("zfs-fuse") {
        let ours = recorded.is_some_and(|(p, t)| p == pid as u64 && start_time(pid) == Some(t));
        if !ours {
            panic!(
                "a zfs-fuse that these tests did not start is running (pid {pid}); the ZFS tests \
                 start a daemon of their own and never share one: stop it (`kill {pid}`, or \
                 `service zfs-fuse stop`) and run the tests again"
            );
        }
        eprintln!("killing zfs-fuse pid {pid}, left running by a killed test run");
        // SAFETY: the pid file and start time identify the daemon an earlier run started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let t = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    unmount_leftovers();
}

/// SIGTERM, then SIGKILL after 10 s; reaps the child.
fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: our child; SIGCONT first in case a drill froze it.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGCONT);
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// FUSE mounts below `kiln-zpool-*` temp dirs: (source, mount point).
fn fuse_mounts() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && f[2].starts_with("fuse") && f[1].contains(POOL_DIR_PREFIX))
                .then(|| (f[0].to_string(), f[1].replace("\\040", " ")))
        })
        .collect()
}

/// Lazily unmount what a stopped or killed daemon left, deepest first.
fn unmount_leftovers() {
    let mut at: Vec<String> = fuse_mounts().into_iter().map(|(_, m)| m).collect();
    at.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in at {
        let _ = Command::new("umount")
            .args(["-l", &m])
            .stderr(Stdio::null())
            .status();
    }
}

fn processes_named(name: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
                && !is_zombie(*pid)
        })
        .collect()
}

/// Command lines of the `zfs`/`zpool` processes running now (kilnd's or a driver's).
fn zfs_commands_in_flight() -> Vec<String> {
    let mut pids = processes_named("zfs");
    pids.extend(processes_named("zpool"));
    pids.into_iter()
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let words: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            Some(format!("[pid {pid}] {}", words.join(" ")))
        })
        .collect()
}

/// A dead process nobody reaped (its parent was killed): not a daemon.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s[s.rfind(')')? + 1..].to_string();
            after
                .split_whitespace()
                .next()
                .map(|st| st == "Z" || st == "X")
        })
        .unwrap_or(true)
}

/// Field 22 of /proc/<pid>/stat: start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    if lines.is_empty() {
        "  (empty)".into()
    } else {
        lines[from..]
            .iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Spawn from one thread that lives as long as the process: PR_SET_PDEATHSIG fires when the
/// spawning *thread* exits, and test threads end with their test.
fn spawn_from_long_lived_thread(cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let tx = SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("testkit-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .expect("spawner thread");
            Mutex::new(tx)
        })
        .lock()
        .unwrap()
        .clone();
    let (reply, answer) = mpsc::channel();
    tx.send((cmd, reply))
        .map_err(|_| io::Error::other("spawner thread gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("spawner thread gone"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_as_the_leftover_check_reads_a_daemon() {
        let me = std::process::id();
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(processes_named(comm.trim()).contains(&me));
        assert!(!is_zombie(me));
        let t = start_time(me).expect("start time of this process");
        assert_eq!(start_time(me), Some(t));
        assert!(
            is_zombie(u32::MAX),
            "a pid that does not exist is not a daemon"
        );
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn tail_and_lists_read_well_in_a_report() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        assert_eq!(tail(&log, 3), "  (empty)");
        std::fs::write(&log, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&log, 2), "  c\n  d");
        assert_eq!(list_or_none(Vec::new()), "none");
        assert_eq!(list_or_none(vec!["x".into(), "y".into()]), "x; y");
        assert_eq!(non_empty(""), "none");
    }
}
