//! The crate's error type: a kind transports map to status codes, and a message that
//! names the problem and the fix.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobErrorKind {
    /// Bad spec or argument (gRPC INVALID_ARGUMENT).
    Invalid,
    /// No such job (NOT_FOUND).
    NotFound,
    /// The job is not in a state that allows this (FAILED_PRECONDITION).
    State,
    /// Starting or supervising the process failed (INTERNAL).
    Spawn,
    /// The service manager refused to start the job's unit: not authorised (the caller
    /// falls back to supervising the job itself).
    Denied,
    /// A file or system call failed (INTERNAL).
    Io,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub kind: JobErrorKind,
    pub message: String,
}

impl JobError {
    pub fn invalid(m: impl Into<String>) -> JobError {
        JobError {
            kind: JobErrorKind::Invalid,
            message: m.into(),
        }
    }
    pub fn not_found(m: impl Into<String>) -> JobError {
        JobError {
            kind: JobErrorKind::NotFound,
            message: m.into(),
        }
    }
    pub fn state(m: impl Into<String>) -> JobError {
        JobError {
            kind: JobErrorKind::State,
            message: m.into(),
        }
    }
    pub fn spawn(m: impl Into<String>) -> JobError {
        JobError {
            kind: JobErrorKind::Spawn,
            message: m.into(),
        }
    }
    pub fn denied(m: impl Into<String>) -> JobError {
        JobError {
            kind: JobErrorKind::Denied,
            message: m.into(),
        }
    }
    /// An I/O failure on `path` while doing `what`.
    pub fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> JobError {
        JobError {
            kind: JobErrorKind::Io,
            message: format!("{what} {}: {e}", path.display()),
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}
