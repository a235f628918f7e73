//! The `jobs` and `job_checkpoints` tables (migration 3 in `state.rs`): one row per job
//! from submit to its end, with the supervisor record while it runs, so a restarted
//! daemon can find it again. Touches only those two tables.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::error::EngineError;
use crate::state::StateDb;
use kiln_jobs::{ExitRecord, JobRecord, JobSpec, StartedInfo};

/// Where a job is in its life. Stored (and shown) by its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Starting,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Starting,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored job.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: u64,
    pub name: String,
    pub spec: JobSpec,
    pub state: JobState,
    pub detail: String,
    pub owner_uid: Option<u32>,
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub run_dir: String,
    pub log_path: String,
    pub checkpoint_dir: String,
    pub record: Option<JobRecord>,
    pub started: Option<StartedInfo>,
    pub exit: Option<ExitRecord>,
}

/// A checkpoint snapshot recorded for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointRow {
    pub seq: u32,
    pub snapshot: String,
    pub label: String,
    pub created_at: String,
}

fn db_err(e: crate::state::StateError) -> EngineError {
    EngineError::internal(format!("job state: {e}"))
}

fn js<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(s: Option<String>) -> Option<T> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

const COLS: &str = "id, name, spec, state, detail, owner_uid, submitted_at, started_at, finished_at, run_dir, log_path, checkpoint_dir, record, started, exit";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    let spec: String = r.get(2)?;
    Ok(JobRow {
        id: r.get::<_, i64>(0)? as u64,
        name: r.get(1)?,
        spec: serde_json::from_str(&spec).unwrap_or_default(),
        state: {
            let s: String = r.get(3)?;
            JobState::parse(&s).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    3,
                    rusqlite::types::Type::Text,
                    format!("unknown job state {s:?}").into(),
                )
            })?
        },
        detail: r.get(4)?,
        owner_uid: r.get(5)?,
        submitted_at: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
        run_dir: r.get(9)?,
        log_path: r.get(10)?,
        checkpoint_dir: r.get(11)?,
        record: parse(r.get(12)?),
        started: parse(r.get(13)?),
        exit: parse(r.get(14)?),
    })
}

/// Where a job's files go, from its id: (run dir, log, checkpoint dir).
pub type JobPaths = (String, String, String);

/// Store a new queued job and its paths (which depend on the id it gets) in one transaction.
pub fn insert(
    db: &StateDb,
    spec: &JobSpec,
    owner: Option<u32>,
    now: &str,
    paths: impl FnOnce(u64) -> JobPaths,
) -> Result<u64, EngineError> {
    db.with(|c| {
        let tx = c.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO jobs (name, spec, state, detail, owner_uid, submitted_at, run_dir, log_path, checkpoint_dir)
             VALUES (?1, ?2, 'queued', 'queued', ?3, ?4, '', '', '')",
            params![spec.name, js(spec), owner, now],
        )?;
        let id = tx.last_insert_rowid() as u64;
        let (run_dir, log, ckpt) = paths(id);
        tx.execute(
            "UPDATE jobs SET run_dir = ?2, log_path = ?3, checkpoint_dir = ?4 WHERE id = ?1",
            params![id as i64, run_dir, log, ckpt],
        )?;
        tx.commit()?;
        Ok(id)
    })
    .map_err(db_err)
}

/// Make the next job id larger than `at_least`: ids name logs, checkpoint directories and
/// snapshots on datasets that outlive a `state.db`, so a fresh one must not reuse them.
pub fn skip_ids_through(db: &StateDb, at_least: u64) -> Result<(), EngineError> {
    db.with(|c| {
        let have: i64 = c.query_row(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0),
                        COALESCE((SELECT MAX(id) FROM jobs), 0))",
            [],
            |r| r.get(0),
        )?;
        if (at_least as i64) > have {
            c.execute("DELETE FROM sqlite_sequence WHERE name = 'jobs'", [])?;
            c.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', ?1)",
                params![at_least as i64],
            )?;
        }
        Ok(())
    })
    .map_err(db_err)
}

pub fn set_state(db: &StateDb, id: u64, state: JobState, detail: &str) -> Result<(), EngineError> {
    db.with(|c| {
        c.execute(
            "UPDATE jobs SET state = ?2, detail = ?3 WHERE id = ?1",
            params![id as i64, state.as_str(), detail],
        )
    })
    .map(|_| ())
    .map_err(db_err)
}

pub fn set_running(
    db: &StateDb,
    id: u64,
    rec: &JobRecord,
    started: &StartedInfo,
    now: &str,
) -> Result<(), EngineError> {
    db.with(|c| {
        c.execute(
            "UPDATE jobs SET state = 'running', detail = 'running', started_at = ?2, record = ?3, started = ?4 WHERE id = ?1",
            params![id as i64, now, js(rec), js(started)],
        )
    })
    .map(|_| ())
    .map_err(db_err)
}

pub fn set_finished(
    db: &StateDb,
    id: u64,
    state: JobState,
    detail: &str,
    exit: Option<&ExitRecord>,
    now: &str,
) -> Result<(), EngineError> {
    db.with(|c| {
        c.execute(
            "UPDATE jobs SET state = ?2, detail = ?3, exit = ?4, finished_at = ?5 WHERE id = ?1",
            params![id as i64, state.as_str(), detail, exit.map(js), now],
        )
    })
    .map(|_| ())
    .map_err(db_err)
}

pub fn get(db: &StateDb, id: u64) -> Result<Option<JobRow>, EngineError> {
    db.with(|c| {
        c.query_row(
            &format!("SELECT {COLS} FROM jobs WHERE id = ?1"),
            [id as i64],
            row,
        )
        .optional()
    })
    .map_err(db_err)
}

/// All jobs, newest first (at most `limit`).
pub fn list(db: &StateDb, limit: u32) -> Result<Vec<JobRow>, EngineError> {
    db.with(|c| {
        let mut s = c.prepare(&format!(
            "SELECT {COLS} FROM jobs ORDER BY id DESC LIMIT ?1"
        ))?;
        s.query_map([limit], row)?.collect()
    })
    .map_err(db_err)
}

/// Jobs not yet ended (queued, starting, running), oldest first.
pub fn unfinished(db: &StateDb) -> Result<Vec<JobRow>, EngineError> {
    db.with(|c| {
        let mut s = c.prepare(&format!(
            "SELECT {COLS} FROM jobs WHERE state IN ('queued', 'starting', 'running') ORDER BY id"
        ))?;
        s.query_map([], row)?.collect()
    })
    .map_err(db_err)
}

pub fn add_checkpoint(
    db: &StateDb,
    id: u64,
    seq: u32,
    snapshot: &str,
    label: &str,
    now: &str,
) -> Result<(), EngineError> {
    db.with(|c| {
        c.execute(
            "INSERT INTO job_checkpoints (job_id, seq, snapshot, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id as i64, seq, snapshot, label, now],
        )
    })
    .map(|_| ())
    .map_err(db_err)
}

/// Forget a checkpoint whose snapshot could not be taken.
pub fn remove_checkpoint(db: &StateDb, id: u64, seq: u32) -> Result<(), EngineError> {
    db.with(|c| {
        c.execute(
            "DELETE FROM job_checkpoints WHERE job_id = ?1 AND seq = ?2",
            params![id as i64, seq],
        )
    })
    .map(|_| ())
    .map_err(db_err)
}

pub fn checkpoints(db: &StateDb, id: u64) -> Result<Vec<CheckpointRow>, EngineError> {
    db.with(|c| {
        let mut s = c.prepare(
            "SELECT seq, snapshot, label, created_at FROM job_checkpoints WHERE job_id = ?1 ORDER BY seq",
        )?;
        s.query_map([id as i64], |r| {
            Ok(CheckpointRow {
                seq: r.get(0)?,
                snapshot: r.get(1)?,
                label: r.get(2)?,
                created_at: r.get(3)?,
            })
        })?
        .collect()
    })
    .map_err(db_err)
}

#[cfg(test)]
mod state_tests {
    use super::*;

    #[test]
    fn states_round_trip_by_their_stored_and_shown_name() {
        for st in JobState::ALL {
            assert_eq!(JobState::parse(st.as_str()), Some(st));
            assert_eq!(
                serde_json::to_value(st).unwrap(),
                serde_json::json!(st.as_str())
            );
        }
        assert_eq!(JobState::parse("Running"), None);
        let finished: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_finished())
            .collect();
        assert_eq!(
            finished,
            [JobState::Succeeded, JobState::Failed, JobState::Cancelled]
        );
    }

    #[test]
    fn ids_continue_past_what_the_datasets_hold_and_paths_come_with_the_row() {
        let t = tempfile::tempdir().unwrap();
        let db = StateDb::open(t.path()).unwrap();
        let spec = JobSpec {
            name: "j".into(),
            argv: vec!["true".into()],
            ..JobSpec::default()
        };
        let paths = |id: u64| {
            (
                format!("run/{id}"),
                format!("job-{id}.log"),
                format!("job-{id}"),
            )
        };
        skip_ids_through(&db, 5).unwrap();
        let id = insert(&db, &spec, Some(0), "now", paths).unwrap();
        assert_eq!(id, 6);
        skip_ids_through(&db, 3).unwrap(); // never backwards
        assert_eq!(insert(&db, &spec, None, "now", paths).unwrap(), 7);
        let row = get(&db, 6).unwrap().expect("job 6 stored");
        assert_eq!(
            (
                row.run_dir.as_str(),
                row.log_path.as_str(),
                row.checkpoint_dir.as_str()
            ),
            ("run/6", "job-6.log", "job-6")
        );
        assert_eq!(row.state, JobState::Queued);
    }
}
