//! The files a job's supervisor shim and the daemon share, all in the job's run
//! directory: `launch.json` (what to run, written by the daemon), `started.json`
//! (what was applied, written by the shim once the process runs) and `exit.json`
//! (how it ended, written atomically by the shim). Also the small fs helpers.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::JobError;
pub use kiln_hal::ports::{ExitRecord, LaunchPlan, StartedInfo};

pub const LAUNCH_FILE: &str = "launch.json";
pub const STARTED_FILE: &str = "started.json";
pub const EXIT_FILE: &str = "exit.json";
/// The marker a job creates in `$KILN_CHECKPOINT_DIR` to ask for a checkpoint.
pub const CHECKPOINT_MARKER: &str = ".checkpoint";

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Write `value` as JSON to `path` atomically (temp file, fsync, rename).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), JobError> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let body = serde_json::to_vec_pretty(value)
        .map_err(|e| JobError::spawn(format!("encode {}: {e}", path.display())))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| JobError::io("create", &tmp, e))?;
    f.write_all(&body)
        .map_err(|e| JobError::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| JobError::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| JobError::io("rename into", path, e))
}

/// Read JSON from `path`; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, JobError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| JobError::spawn(format!("{} is not valid: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(JobError::io("read", path, e)),
    }
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat) and
/// whether it is a zombie; `None` when the process does not exist.
pub fn proc_start(pid: i32) -> Option<(u64, bool)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is index 19.
    let zombie = matches!(f.first(), Some(&"Z") | Some(&"X"));
    Some((f.get(19)?.parse().ok()?, zombie))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time() {
        let (t, z) = proc_start(std::process::id() as i32).unwrap();
        assert!(t > 0 && !z);
        assert!(proc_start(i32::MAX).is_none());
    }
}
