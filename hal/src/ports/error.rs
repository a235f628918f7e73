//! The error every port returns: a kind the engine maps onto its own error classes, and a
//! message that names the problem and the fix. Pure data; touches nothing.

use std::fmt;

/// How the engine should classify a port's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A runtime library, model file or other named thing is missing.
    NotFound,
    /// The caller sent something wrong (tensor names, dtypes, shapes, sizes, device names).
    InvalidArgument,
    /// The backend or model cannot do what was asked (unsupported dtype, dynamic shape, ...).
    Unsupported,
    /// The named thing exists already.
    AlreadyExists,
    /// A limit was reached (a collection's row limit, a budget).
    Exhausted,
    /// The thing is not in a state that allows this (a job that already ended).
    FailedPrecondition,
    /// The port may not do this here (a service manager refused to start a unit).
    PermissionDenied,
    /// The backend itself failed, or the system did.
    Internal,
}

/// A port's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortError {
    pub kind: ErrorKind,
    pub message: String,
}

impl PortError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> PortError {
        PortError {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> PortError {
        PortError::new(ErrorKind::InvalidArgument, message)
    }

    pub fn unsupported(message: impl Into<String>) -> PortError {
        PortError::new(ErrorKind::Unsupported, message)
    }

    pub fn not_found(message: impl Into<String>) -> PortError {
        PortError::new(ErrorKind::NotFound, message)
    }

    pub fn exists(message: impl Into<String>) -> PortError {
        PortError::new(ErrorKind::AlreadyExists, message)
    }

    pub fn exhausted(message: impl Into<String>) -> PortError {
        PortError::new(ErrorKind::Exhausted, message)
    }

    pub fn precondition(message: impl Into<String>) -> PortError {
        PortError::new(ErrorKind::FailedPrecondition, message)
    }

    pub fn denied(message: impl Into<String>) -> PortError {
        PortError::new(ErrorKind::PermissionDenied, message)
    }

    pub fn internal(message: impl Into<String>) -> PortError {
        PortError::new(ErrorKind::Internal, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PortError {}
