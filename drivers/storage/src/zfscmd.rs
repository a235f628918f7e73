//! The one door to `zfs` and `zpool`: every invocation goes through [`ZfsCmd::run`], which
//! logs it, times it into [`CmdMetrics`], and turns failures into typed errors carrying the
//! command line and stderr. Also parses `-H -p` tab-separated output. Spawns only the two
//! configured executables.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Result, StorageError};
pub use kiln_hal::ports::storage::{BUCKETS, CmdStat};

/// Which executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Zfs,
    Zpool,
}

/// Raw result of a command that ran (whatever its exit status).
#[derive(Debug, Clone)]
pub struct RawOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// One row of `zfs get -H -p`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropRow {
    pub name: String,
    pub property: String,
    pub value: String,
    pub source: String,
}

/// Counters and a duration histogram the daemon can export (Prometheus style).
#[derive(Debug, Default)]
pub struct CmdMetrics {
    stats: Mutex<BTreeMap<String, CmdStat>>,
}

impl CmdMetrics {
    fn record(&self, key: &str, elapsed: Duration, ok: bool) {
        let mut m = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.entry(key.to_string()).or_insert_with(|| CmdStat {
            command: key.to_string(),
            buckets: vec![0; BUCKETS.len() + 1],
            ..CmdStat::default()
        });
        let secs = elapsed.as_secs_f64();
        s.calls += 1;
        s.failures += u64::from(!ok);
        s.total_seconds += secs;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                s.buckets[i] += 1;
            }
        }
        s.buckets[BUCKETS.len()] += 1;
    }

    /// A copy of all statistics, sorted by command.
    pub fn snapshot(&self) -> Vec<CmdStat> {
        let m = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        m.values().cloned().collect()
    }
}

/// Exit code, stdout, stderr of a finished command.
type Finished = (i32, Vec<u8>, Vec<u8>);

/// Runs `zfs`/`zpool`.
#[derive(Debug, Clone)]
pub struct ZfsCmd {
    zfs: String,
    zpool: String,
    timeout: Duration,
    metrics: Arc<CmdMetrics>,
}

impl ZfsCmd {
    pub fn new(zfs: impl Into<String>, zpool: impl Into<String>) -> Self {
        ZfsCmd {
            zfs: zfs.into(),
            zpool: zpool.into(),
            timeout: Duration::from_secs(120),
            metrics: Arc::new(CmdMetrics::default()),
        }
    }

    /// Kill and report any command that runs longer than `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Spawn, collect output, and wait up to the timeout. `Ok(None)` means it timed out
    /// and was killed.
    fn spawn_wait(&self, exe: &str, args: &[&str]) -> std::io::Result<Option<Finished>> {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let reader = |p: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut b = Vec::new();
                if let Some(mut p) = p {
                    let _ = p.read_to_end(&mut b);
                }
                b
            })
        };
        let out = reader(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let err = reader(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + self.timeout;
        let mut nap = Duration::from_micros(200);
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break Some(st);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        };
        let (o, e) = (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        );
        Ok(status.map(|st| (st.code().unwrap_or(-1), o, e)))
    }

    pub fn metrics(&self) -> Arc<CmdMetrics> {
        self.metrics.clone()
    }

    fn exe(&self, tool: Tool) -> &str {
        match tool {
            Tool::Zfs => &self.zfs,
            Tool::Zpool => &self.zpool,
        }
    }

    /// Run and return the output whatever the exit status (probes read usage text this
    /// way). Only a missing executable is an error.
    pub fn run_raw(&self, tool: Tool, args: &[&str]) -> Result<RawOutput> {
        let exe = self.exe(tool);
        let line = command_line(exe, args);
        let key = format!(
            "{} {}",
            match tool {
                Tool::Zfs => "zfs",
                Tool::Zpool => "zpool",
            },
            args.first().copied().unwrap_or("")
        );
        let start = Instant::now();
        let out = match self.spawn_wait(exe, args) {
            Ok(Some(o)) => o,
            Ok(None) => {
                self.metrics.record(&key, start.elapsed(), false);
                tracing::error!(command = %line, secs = self.timeout.as_secs(), "ZFS command timed out; killed");
                return Err(StorageError::Timeout {
                    command: line,
                    seconds: self.timeout.as_secs(),
                });
            }
            Err(e) => {
                self.metrics.record(&key, start.elapsed(), false);
                tracing::warn!(command = %line, error = %e, "cannot run ZFS command");
                return Err(StorageError::ZfsNotInstalled {
                    binary: exe.to_string(),
                    detail: e.to_string(),
                });
            }
        };
        let elapsed = start.elapsed();
        let raw = RawOutput {
            status: out.0,
            stdout: String::from_utf8_lossy(&out.1).into_owned(),
            stderr: String::from_utf8_lossy(&out.2).trim().to_string(),
        };
        self.metrics.record(&key, elapsed, raw.status == 0);
        if raw.status == 0 {
            tracing::debug!(command = %line, ms = elapsed.as_millis() as u64, "zfs command ok");
        } else {
            tracing::debug!(command = %line, ms = elapsed.as_millis() as u64,
                status = raw.status, stderr = %raw.stderr, "zfs command failed");
        }
        Ok(raw)
    }

    /// Run; a non-zero exit becomes a typed error naming the command and its stderr.
    pub fn run(&self, tool: Tool, args: &[&str]) -> Result<String> {
        let raw = self.run_raw(tool, args)?;
        if raw.status == 0 {
            return Ok(raw.stdout);
        }
        let err = classify(
            &command_line(self.exe(tool), args),
            args,
            raw.status,
            &raw.stderr,
        );
        tracing::warn!(error = %err, "ZFS command failed");
        Err(err)
    }

    /// `zfs get -H -p [-r] <props> <targets>` parsed into rows.
    pub fn get(&self, props: &[&str], targets: &[&str], recursive: bool) -> Result<Vec<PropRow>> {
        let plist = props.join(",");
        let mut args = vec!["get", "-H", "-p"];
        if recursive {
            args.push("-r");
        }
        args.push(&plist);
        args.extend_from_slice(targets);
        let out = self.run(Tool::Zfs, &args)?;
        let line = command_line(&self.zfs, &args);
        parse_tab(&out, 4, &line)?
            .into_iter()
            .map(|mut r| {
                r.truncate(4);
                let source = r.pop().unwrap_or_default();
                let value = r.pop().unwrap_or_default();
                let property = r.pop().unwrap_or_default();
                let name = r.pop().unwrap_or_default();
                Ok(PropRow {
                    name,
                    property,
                    value,
                    source,
                })
            })
            .collect()
    }
}

/// Split `-H` output into rows of tab-separated fields; every row needs `min_cols` fields.
pub fn parse_tab(out: &str, min_cols: usize, command: &str) -> Result<Vec<Vec<String>>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<String> = l.split('\t').map(str::to_string).collect();
            if cols.len() < min_cols {
                Err(StorageError::Parse {
                    command: command.to_string(),
                    detail: format!("expected {min_cols} tab-separated fields, got `{l}`"),
                })
            } else {
                Ok(cols)
            }
        })
        .collect()
}

/// A printable command line (arguments with spaces quoted).
pub fn command_line(exe: &str, args: &[&str]) -> String {
    let mut s = exe.to_string();
    for a in args {
        s.push(' ');
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push('\'');
            s.push_str(a);
            s.push('\'');
        } else {
            s.push_str(a);
        }
    }
    s
}

/// Turn a failed command into a typed error from its stderr.
pub fn classify(command: &str, args: &[&str], status: i32, stderr: &str) -> StorageError {
    let lower = stderr.to_ascii_lowercase();
    let target = args
        .iter()
        .rev()
        .find(|a| !a.starts_with('-') && !a.contains('='))
        .copied()
        .unwrap_or("")
        .to_string();
    let pool_of = |t: &str| t.split(['/', '@']).next().unwrap_or("").to_string();
    let cmd = command.to_string();
    let err = stderr.to_string();
    if lower.contains("zfs-fuse daemon is running")
        || lower.contains("failed to initialize zfs library")
        || lower.contains("/dev/zfs")
        || lower.contains("modules are not loaded")
    {
        return StorageError::ZfsUnavailable {
            command: cmd,
            stderr: err,
        };
    }
    if lower.contains("no such pool") {
        return StorageError::PoolMissing {
            pool: pool_of(&target),
            command: cmd,
            stderr: err,
        };
    }
    if lower.contains("dataset does not exist") || lower.contains("could not find any snapshots") {
        if !target.contains('/') && !target.contains('@') {
            return StorageError::PoolMissing {
                pool: target,
                command: cmd,
                stderr: err,
            };
        }
        return StorageError::DatasetMissing {
            target,
            command: cmd,
            stderr: err,
        };
    }
    if lower.contains("busy") {
        return StorageError::Busy {
            target,
            command: cmd,
            stderr: err,
        };
    }
    if lower.contains("out of space")
        || lower.contains("quota exceeded")
        || lower.contains("no space left")
    {
        return StorageError::QuotaFull {
            target,
            detail: format!("`{cmd}`: {err}"),
        };
    }
    let rejected = [
        "must be",
        "invalid property",
        "bad property",
        "invalid value",
        "is less than current",
        "not supported",
        "unsupported",
        "invalid option",
        "property",
    ];
    let setting = args.iter().find(|a| a.contains('=') && !a.starts_with('-'));
    if let Some(kv) = setting
        && rejected.iter().any(|r| lower.contains(r))
    {
        // Prefer the property the message names ('compression' must be ...).
        let named = stderr
            .split('\'')
            .nth(1)
            .filter(|n| args.iter().any(|a| a.starts_with(&format!("{n}="))));
        let (k, v) = match named {
            Some(n) => {
                let a = args
                    .iter()
                    .find(|a| a.starts_with(&format!("{n}=")))
                    .copied()
                    .unwrap_or(kv);
                a.split_once('=').unwrap_or((a, ""))
            }
            None => kv.split_once('=').unwrap_or((kv, "")),
        };
        return StorageError::PropertyRejected {
            property: k.to_string(),
            value: v.to_string(),
            target,
            command: cmd,
            stderr: err,
        };
    }
    StorageError::CommandFailed {
        command: cmd,
        status,
        stderr: err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tab_rows_and_rejects_short_ones() {
        let out = "tank/kiln/models\tcompression\tgzip-3\tlocal\ntank\tused\t360448\t-\n";
        let rows = parse_tab(out, 4, "zfs get").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], vec!["tank", "used", "360448", "-"]);
        let e = parse_tab("tank used 1\n", 4, "zfs get").unwrap_err();
        assert!(matches!(e, StorageError::Parse { .. }), "{e}");
    }

    // stderr texts recorded from zfs-fuse 0.7 on Debian 12.
    #[test]
    fn classifies_recorded_failures() {
        let e = classify(
            "zfs get all nopool",
            &["get", "all", "nopool"],
            1,
            "cannot open 'nopool': dataset does not exist",
        );
        assert!(
            matches!(e, StorageError::PoolMissing { ref pool, .. } if pool == "nopool"),
            "{e}"
        );
        let e = classify(
            "zpool status nopool",
            &["status", "nopool"],
            1,
            "cannot open 'nopool': no such pool",
        );
        assert!(matches!(e, StorageError::PoolMissing { .. }), "{e}");
        let e = classify(
            "zfs destroy t/a",
            &["destroy", "t/a"],
            1,
            "cannot open 't/a': dataset does not exist",
        );
        assert!(matches!(e, StorageError::DatasetMissing { ref target, .. } if target == "t/a"));
        let e = classify(
            "zfs destroy t/m@s1",
            &["destroy", "t/m@s1"],
            1,
            "cannot destroy 't/m@s1': dataset is busy",
        );
        assert!(matches!(e, StorageError::Busy { .. }), "{e}");
        let args = ["create", "-o", "compression=lz4", "-o", "atime=off", "t/e"];
        let e = classify(
            "zfs create",
            &args,
            1,
            "cannot create 't/e': 'compression' must be one of 'on | off | lzjb | gzip | gzip-[1-9] | zle'",
        );
        match e {
            StorageError::PropertyRejected {
                property,
                value,
                target,
                stderr,
                ..
            } => {
                assert_eq!(
                    (property.as_str(), value.as_str(), target.as_str()),
                    ("compression", "lz4", "t/e")
                );
                assert!(stderr.contains("must be one of"));
            }
            other => panic!("{other}"),
        }
        let e = classify(
            "zfs list",
            &["list"],
            1,
            "connect: No such file or directory\nPlease make sure that the zfs-fuse daemon is running.\ninternal error: failed to initialize ZFS library",
        );
        assert!(matches!(e, StorageError::ZfsUnavailable { .. }), "{e}");
        // OpenZFS without its kernel module.
        let e = classify(
            "zfs get",
            &["get"],
            1,
            "The ZFS modules are not loaded.\nTry running 'modprobe zfs' as root to load them.",
        );
        assert!(matches!(e, StorageError::ZfsUnavailable { .. }), "{e}");
        let e = classify("zfs frob", &["frob"], 2, "unrecognized command 'frob'");
        assert!(
            matches!(e, StorageError::CommandFailed { status: 2, .. }),
            "{e}"
        );
    }

    #[test]
    fn missing_binary_is_typed_and_counted() {
        let z = ZfsCmd::new("/nonexistent/zfs", "/nonexistent/zpool");
        let e = z.run(Tool::Zfs, &["get", "all"]).unwrap_err();
        assert!(
            matches!(e, StorageError::ZfsNotInstalled { ref binary, .. } if binary == "/nonexistent/zfs")
        );
        assert!(e.to_string().contains("backend = \"dir\""));
        let m = z.metrics().snapshot();
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].command.as_str(), m[0].calls, m[0].failures),
            ("zfs get", 1, 1)
        );
    }

    #[test]
    fn hung_commands_time_out_and_are_killed() {
        // `sleep` stands in for a zfs that stopped answering: the wrapper must not hang.
        let z = ZfsCmd::new("sleep", "sleep").with_timeout(Duration::from_millis(300));
        let t = Instant::now();
        let e = z.run(Tool::Zfs, &["30"]).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(e, StorageError::Timeout { ref command, .. } if command == "sleep 30"),
            "{e}"
        );
        let ok = ZfsCmd::new("echo", "echo")
            .run(Tool::Zpool, &["a\tb"])
            .unwrap();
        assert_eq!(ok, "a\tb\n");
    }

    #[test]
    fn metrics_histogram_is_cumulative() {
        let m = CmdMetrics::default();
        m.record("zfs get", Duration::from_millis(2), true);
        m.record("zfs get", Duration::from_millis(70), false);
        let s = &m.snapshot()[0];
        assert_eq!((s.calls, s.failures), (2, 1));
        assert_eq!(s.buckets[0], 1); // <= 5ms
        assert_eq!(s.buckets[3], 2); // <= 100ms
        assert_eq!(*s.buckets.last().unwrap(), 2);
    }

    #[test]
    fn command_line_quotes_spaces() {
        assert_eq!(command_line("zfs", &["get", "a b"]), "zfs get 'a b'");
    }
}
