//! Durable state: one SQLite database (`state.db`, WAL, foreign keys) under
//! the state directory, with versioned migrations, and an exclusive lock file
//! so two daemons never share a state directory. Touches only that directory.

use rusqlite::{Connection, OptionalExtension, params};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Migrations in order; index + 1 is the schema version it produces.
/// Never edit a shipped entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: audit trail of state-changing calls, and a small key/value table.
    "CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        transport TEXT NOT NULL,
        caller_uid INTEGER,
        caller_gid INTEGER,
        caller_pid INTEGER,
        caller_name TEXT,
        action TEXT NOT NULL,
        args TEXT NOT NULL,
        result TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_time ON audit(time);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 2: measured throughput per (model, version, device), reused while the weights size matches.
    "CREATE TABLE model_calibration (
        model TEXT NOT NULL,
        version INTEGER NOT NULL,
        device TEXT NOT NULL,
        weights_bytes INTEGER NOT NULL,
        per_second REAL NOT NULL,
        measured_at TEXT NOT NULL,
        PRIMARY KEY (model, version, device)
    );",
    // 3: jobs from submit to end, with the supervisor record used to re-adopt them.
    "CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        detail TEXT NOT NULL,
        owner_uid INTEGER,
        submitted_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        run_dir TEXT NOT NULL,
        log_path TEXT NOT NULL,
        checkpoint_dir TEXT NOT NULL,
        record TEXT,
        started TEXT,
        exit TEXT
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE TABLE job_checkpoints (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        seq INTEGER NOT NULL,
        snapshot TEXT NOT NULL,
        label TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (job_id, seq)
    );",
];

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state directory {dir}: {source}; create it or pass --state-dir to a writable directory"
    )]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state directory {dir} is in use by another kilnd (pid {holder}); stop it or pass a different --state-dir"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error("state database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "state database {path} has schema version {found}, newer than this kilnd understands ({known}); run the newer kilnd or restore a backup"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

/// One row of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub time: String,
    pub transport: String,
    pub caller_uid: Option<u32>,
    pub caller_gid: Option<u32>,
    pub caller_pid: Option<i32>,
    pub caller_name: Option<String>,
    pub action: String,
    pub args: String,
    pub result: String,
    pub detail: String,
}

pub struct StateDb {
    path: PathBuf,
    conn: Mutex<Connection>,
    _lock: File,
}

impl StateDb {
    /// Create the directory if needed, take the instance lock, open and migrate.
    pub fn open(dir: &Path) -> Result<StateDb, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            dir: dir.into(),
            source,
        })?;
        let lock = take_lock(dir)?;
        let path = dir.join("state.db");
        let db_err = |source| StateError::Db {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        migrate(&mut conn, &path)?;
        Ok(StateDb {
            path,
            conn: Mutex::new(conn),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_version(&self) -> i64 {
        let c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        c.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap_or(0)
    }

    /// Run `f` with the connection. Keep it short: callers are async tasks.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&c).map_err(|source| StateError::Db {
            path: self.path.clone(),
            source,
        })
    }

    pub fn insert_audit(&self, row: &AuditRow) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO audit (time, transport, caller_uid, caller_gid, caller_pid, caller_name, action, args, result, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    row.time,
                    row.transport,
                    row.caller_uid,
                    row.caller_gid,
                    row.caller_pid,
                    row.caller_name,
                    row.action,
                    row.args,
                    row.result,
                    row.detail
                ],
            )
            .map(|_| ())
        })
    }

    /// Delete audit rows, and finished jobs with their checkpoint rows, from before `cutoff`
    /// (RFC 3339, compared as text as the rows store it). Queued and running jobs stay
    /// whatever their age. Returns (audit rows, jobs) removed.
    pub fn prune_history(&self, cutoff: &str) -> Result<(usize, usize), StateError> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let r = (|| {
            let tx = c.transaction()?;
            let audit = tx.execute("DELETE FROM audit WHERE time < ?1", params![cutoff])?;
            let old = "SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') \
                       AND COALESCE(finished_at, submitted_at) < ?1";
            tx.execute(
                &format!("DELETE FROM job_checkpoints WHERE job_id IN ({old})"),
                params![cutoff],
            )?;
            let jobs = tx.execute(
                &format!("DELETE FROM jobs WHERE id IN ({old})"),
                params![cutoff],
            )?;
            tx.commit()?;
            Ok((audit, jobs))
        })();
        r.map_err(|source| StateError::Db {
            path: self.path.clone(),
            source,
        })
    }

    /// The newest `limit` audit rows, newest first.
    pub fn recent_audit(&self, limit: u32) -> Result<Vec<AuditRow>, StateError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT time, transport, caller_uid, caller_gid, caller_pid, caller_name, action, args, result, detail
                 FROM audit ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit], |r| {
                Ok(AuditRow {
                    time: r.get(0)?,
                    transport: r.get(1)?,
                    caller_uid: r.get(2)?,
                    caller_gid: r.get(3)?,
                    caller_pid: r.get(4)?,
                    caller_name: r.get(5)?,
                    action: r.get(6)?,
                    args: r.get(7)?,
                    result: r.get(8)?,
                    detail: r.get(9)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn meta_get(&self, key: &str) -> Result<Option<String>, StateError> {
        self.with(|c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
        })
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    let db_err = |source| StateError::Db {
        path: path.to_path_buf(),
        source,
    };
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StateError::TooNew {
            path: path.into(),
            found: current,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute_batch(sql).map_err(db_err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        tracing::info!(version = i + 1, db = %path.display(), "state schema migrated");
    }
    Ok(())
}

fn take_lock(dir: &Path) -> Result<File, StateError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("kilnd.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StateError::Dir {
            dir: dir.into(),
            source,
        })?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(StateError::Locked {
            dir: dir.into(),
            holder: if holder.is_empty() {
                "unknown".into()
            } else {
                holder.into()
            },
        });
    }
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = write!(f, "{}", std::process::id());
    Ok(f)
}

#[cfg(test)]
mod tests {
    fn audit_row(time: &str) -> AuditRow {
        AuditRow {
            time: time.into(),
            transport: "grpc".into(),
            caller_uid: Some(1000),
            caller_gid: Some(1000),
            caller_pid: Some(42),
            caller_name: None,
            action: "Reload".into(),
            args: "".into(),
            result: "ok".into(),
            detail: "".into(),
        }
    }

    use super::*;

    #[test]
    fn migrates_once_and_reopens() {
        let t = tempfile::tempdir().unwrap();
        {
            let db = StateDb::open(t.path()).unwrap();
            assert_eq!(db.schema_version(), MIGRATIONS.len() as i64);
            db.meta_set("k", "v1").unwrap();
            db.meta_set("k", "v2").unwrap();
        }
        let db = StateDb::open(t.path()).unwrap();
        assert_eq!(db.meta_get("k").unwrap().as_deref(), Some("v2"));
        let mode: String = db
            .with(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = db
            .with(|c| c.query_row("PRAGMA foreign_keys", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn second_open_is_refused_while_first_holds_the_lock() {
        let t = tempfile::tempdir().unwrap();
        let _a = StateDb::open(t.path()).unwrap();
        let e = StateDb::open(t.path())
            .err()
            .expect("second open must fail");
        let s = e.to_string();
        assert!(
            s.contains("in use by another kilnd") && s.contains(&std::process::id().to_string()),
            "{s}"
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let t = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(t.path().join("state.db")).unwrap();
            c.pragma_update(None, "user_version", 999).unwrap();
        }
        let e = StateDb::open(t.path()).err().unwrap();
        assert!(matches!(e, StateError::TooNew { found: 999, .. }));
    }

    #[test]
    fn audit_rows_round_trip_newest_first() {
        let t = tempfile::tempdir().unwrap();
        let db = StateDb::open(t.path()).unwrap();
        for i in 0..3 {
            db.insert_audit(&audit_row(&format!("t{i}"))).unwrap();
        }
        let rows = db.recent_audit(2).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].time, "t2");
    }

    #[test]
    fn history_before_the_cutoff_goes_and_unfinished_jobs_stay() {
        let t = tempfile::tempdir().unwrap();
        let db = StateDb::open(t.path()).unwrap();
        for time in ["2026-01-01T00:00:00.000Z", "2026-06-01T00:00:00.000Z"] {
            db.insert_audit(&audit_row(time)).unwrap();
        }
        let job = |state: &str, submitted: &str, finished: Option<&str>| {
            db.with(|c| {
                c.execute(
                    "INSERT INTO jobs (name, spec, state, detail, submitted_at, finished_at, run_dir, log_path, checkpoint_dir)
                     VALUES ('j', '{}', ?1, '', ?2, ?3, '', '', '')",
                    params![state, submitted, finished],
                )?;
                let id = c.last_insert_rowid();
                c.execute(
                    "INSERT INTO job_checkpoints (job_id, seq, snapshot, label, created_at) VALUES (?1, 1, 's', 'l', ?2)",
                    params![id, submitted],
                )?;
                Ok(id)
            })
            .unwrap()
        };
        let old_done = job(
            "succeeded",
            "2026-01-01T00:00:00Z",
            Some("2026-01-02T00:00:00Z"),
        );
        let old_running = job("running", "2026-01-01T00:00:00Z", None);
        let new_done = job(
            "failed",
            "2026-05-30T00:00:00Z",
            Some("2026-06-01T00:00:00Z"),
        );
        assert_eq!(db.prune_history("2026-03-01T00:00:00Z").unwrap(), (1, 1));
        assert_eq!(db.recent_audit(10).unwrap().len(), 1);
        let left: Vec<i64> = db
            .with(|c| {
                let mut st = c.prepare("SELECT id FROM jobs ORDER BY id")?;
                st.query_map([], |r| r.get(0))?.collect()
            })
            .unwrap();
        assert_eq!(left, [old_running, new_done]);
        let orphans: i64 = db
            .with(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM job_checkpoints WHERE job_id = ?1",
                    params![old_done],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert_eq!(orphans, 0);
        assert_eq!(db.prune_history("2026-03-01T00:00:00Z").unwrap(), (0, 0));
    }
}
