//! Harness for integration tests: locate the built binaries and start kilnd the
//! way systemd does (NOTIFY_SOCKET), waiting for its real READY=1; the private
//! bus comes from kiln-testkit. Every child is killed
//! on drop so a failing test leaves nothing running.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A binary of this workspace, built into the same target dir and profile as
/// the running executable (a test in `target/<profile>/deps/`, or a tool such
/// as kiln-bench in `target/<profile>/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let here = exe.parent().expect("executable dir");
    let candidates = [
        here.join(name),
        here.parent().map(|p| p.join(name)).unwrap_or_default(),
    ];
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => p.clone(),
        None => panic!(
            "{name} is not built next to {}; run `cargo build --workspace --bins` (add --release for benchmarks) first",
            exe.display()
        ),
    }
}

pub fn kilnctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin("kilnctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("KILN_SOCKET")
        .output()
        .expect("run kilnctl")
}

/// A config file body for tests: the group authority (no polkit here) and
/// storage under `dir`, followed by `extra` (other tables only).
pub fn test_config(dir: &Path, extra: &str) -> String {
    format!(
        "[auth]\nbackend = \"group\"\n[storage]\nroot = \"{}\"\n{extra}",
        dir.join("data").display()
    )
}

/// The Prometheus text kilnd serves on the Unix socket `sock` (`[metrics] listen`).
pub fn scrape(sock: &Path) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .unwrap_or_else(|e| panic!("metrics socket {}: {e}", sock.display()));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send the scrape");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read the metrics");
    body
}

/// A copy of the recorded machine tree `tests/fixtures/<name>` at `dest` (symlinks kept
/// relative), for tests that change a file of it.
pub fn copy_fixture(name: &str, dest: &Path) -> PathBuf {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(repo_root().join("tests/fixtures").join(name))
        .arg(dest)
        .status()
        .expect("run cp");
    assert!(ok.success(), "cp -a of fixture {name} failed");
    dest.to_path_buf()
}

/// The private bus of kiln-testkit.
pub use kiln_testkit::bus::PrivateBus;
/// The tests' runtime (kiln-testkit).
pub use kiln_testkit::runtime;

/// A running kilnd with its own state dir and socket.
pub struct Kilnd {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub ready_after: Duration,
    notify: UnixDatagram,
    stderr_path: PathBuf,
}

/// Options for starting kilnd; every path defaults into a fresh temp dir.
#[derive(Default, Clone)]
pub struct Start {
    pub config: Option<PathBuf>,
    pub bus: Option<String>,
    pub socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub extra_args: Vec<String>,
}

impl Start {
    /// `config`, with state and socket in `dir` and, when given, the private bus `bus`.
    pub fn in_dir(dir: &Path, config: PathBuf, bus: Option<&PrivateBus>) -> Start {
        Start {
            config: Some(config),
            bus: bus.map(|b| b.address.clone()),
            state_dir: Some(dir.join("state")),
            socket: Some(dir.join("kiln.sock")),
            ..Default::default()
        }
    }
}

impl Kilnd {
    pub fn start(opts: Start) -> Kilnd {
        match Self::try_start(opts) {
            Ok(k) => k,
            Err(e) => panic!("kilnd did not become ready: {e}"),
        }
    }

    /// Start and wait for READY=1; on failure return the exit status and stderr.
    pub fn try_start(opts: Start) -> Result<Kilnd, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let socket = opts
            .socket
            .clone()
            .unwrap_or_else(|| dir.path().join("kiln.sock"));
        let state_dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("state"));
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).map_err(|e| e.to_string())?;
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        let stderr_path = dir.path().join("kilnd.stderr");
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin("kilnd"));
        if let Some(c) = &opts.config {
            cmd.arg("--config").arg(c);
        } else {
            // An empty main file: built-in defaults, never the machine's /etc.
            let empty = dir.path().join("kiln.toml");
            std::fs::write(&empty, test_config(dir.path(), "")).map_err(|e| e.to_string())?;
            cmd.arg("--config").arg(empty);
        }
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir);
        cmd.arg("--bus").arg(opts.bus.as_deref().unwrap_or("none"));
        cmd.args(&opts.extra_args);
        cmd.env("NOTIFY_SOCKET", &notify_path)
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_USEC");
        cmd.stdout(Stdio::null()).stderr(stderr);
        let started = Instant::now();
        let child = cmd.spawn().map_err(|e| e.to_string())?;
        let mut k = Kilnd {
            child,
            dir,
            socket,
            state_dir,
            ready_after: Duration::ZERO,
            notify,
            stderr_path,
        };
        let deadline = started + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(msg) = k.recv_notify()
                && msg.lines().any(|l| l == "READY=1")
            {
                k.ready_after = started.elapsed();
                return Ok(k);
            }
            if let Ok(Some(status)) = k.child.try_wait() {
                return Err(format!(
                    "kilnd exited with {status}; stderr:\n{}",
                    k.stderr()
                ));
            }
        }
        Err(format!("no READY=1 within 10 s; stderr:\n{}", k.stderr()))
    }

    /// One notify datagram, if one arrives within 100 ms.
    pub fn recv_notify(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        self.notify
            .recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Wait for a notify message containing `line`.
    pub fn wait_notify(&self, line: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(m) = self.recv_notify()
                && m.lines().any(|l| l == line || l.starts_with(line))
            {
                return Some(m);
            }
        }
        None
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn kilnctl(&self, args: &[&str]) -> Output {
        kilnctl(&self.socket, args)
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = self.kilnctl(&["status", "--json"]);
        assert!(
            out.status.success(),
            "kilnctl status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("kilnctl status --json prints JSON")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .expect("signal kilnd");
    }

    /// Wait for exit; None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Kilnd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
