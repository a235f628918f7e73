//! The one error type engine methods return. Each kind maps to one gRPC
//! status code and one D-Bus error name in the adapters; the message is for
//! humans and names the problem and the fix.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unavailable,
    Internal,
}

impl ErrorKind {
    /// The canonical status number (google.rpc.Code, as gRPC sends it): the `code` label of
    /// `kiln_calls_total` on every transport, so a failure counts the same wherever it came.
    pub fn status_code(self) -> u8 {
        match self {
            ErrorKind::InvalidArgument => 3,
            ErrorKind::NotFound => 5,
            ErrorKind::AlreadyExists => 6,
            ErrorKind::PermissionDenied => 7,
            ErrorKind::ResourceExhausted => 8,
            ErrorKind::FailedPrecondition => 9,
            ErrorKind::Internal => 13,
            ErrorKind::Unavailable => 14,
        }
    }

    /// Stable short name, used for D-Bus error names and audit rows.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::PermissionDenied => "PermissionDenied",
            ErrorKind::ResourceExhausted => "ResourceExhausted",
            ErrorKind::FailedPrecondition => "FailedPrecondition",
            ErrorKind::Unavailable => "Unavailable",
            ErrorKind::Internal => "Internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineError {
    pub kind: ErrorKind,
    pub message: String,
}

impl EngineError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        EngineError {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceExhausted, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EngineError {}

/// A port's failure, kind for kind.
impl From<kiln_hal::ports::PortError> for EngineError {
    fn from(e: kiln_hal::ports::PortError) -> EngineError {
        use kiln_hal::ports::ErrorKind as P;
        let kind = match e.kind {
            P::InvalidArgument => ErrorKind::InvalidArgument,
            P::NotFound => ErrorKind::NotFound,
            P::Unsupported | P::FailedPrecondition => ErrorKind::FailedPrecondition,
            P::PermissionDenied => ErrorKind::PermissionDenied,
            P::AlreadyExists => ErrorKind::AlreadyExists,
            P::Exhausted => ErrorKind::ResourceExhausted,
            P::Internal => ErrorKind::Internal,
        };
        EngineError::new(kind, e.message)
    }
}
