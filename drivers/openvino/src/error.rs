//! Error type of the OpenVINO driver: every failure names what went wrong and how to fix it.
//! Pure data; touches nothing.

use std::fmt::Write as _;
use std::path::PathBuf;

/// How the engine classifies an error: the ports' kinds.
pub use kiln_hal::ports::ErrorKind;

/// Errors of the OpenVINO driver.
#[derive(Debug, thiserror::Error)]
pub enum OvError {
    /// No OpenVINO C API library was found.
    #[error("{}", not_found_message(.configured, .searched))]
    LibraryNotFound {
        /// The configured `[openvino] library` value, if any.
        configured: Option<PathBuf>,
        /// Every path or pattern that was looked at, in order.
        searched: Vec<String>,
    },
    /// A library was found but could not be loaded or is unusable.
    #[error(
        "OpenVINO C API library {path} cannot be used: {reason}. Install a supported runtime with \
         `.venv/bin/pip install -r scripts/requirements.txt` (pins the tested openvino wheel) or \
         point `[openvino] library` at another install"
    )]
    LibraryUnusable {
        /// The library that was tried.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A model directory or file is missing or malformed.
    #[error("model at {path}: {reason}")]
    ModelFiles {
        /// Directory or file of the model.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The caller sent bad input.
    #[error("{0}")]
    InvalidInput(String),
    /// The model or device cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
    /// An OpenVINO call failed.
    #[error("OpenVINO failed to {context}: {message}")]
    Runtime {
        /// What the driver was doing.
        context: String,
        /// OpenVINO's own message.
        message: String,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the driver was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl OvError {
    /// Classify the error for transport adapters.
    pub fn kind(&self) -> ErrorKind {
        match self {
            OvError::LibraryNotFound { .. } | OvError::ModelFiles { .. } => ErrorKind::NotFound,
            OvError::InvalidInput(_) => ErrorKind::InvalidArgument,
            OvError::LibraryUnusable { .. } | OvError::Unsupported(_) => ErrorKind::Unsupported,
            OvError::Runtime { .. } | OvError::Io { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn runtime(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        OvError::Runtime {
            context: context.into(),
            message: err.to_string(),
        }
    }
}

/// Name of the error used by [`crate::Runtime::load`] (same type).
pub type RuntimeError = OvError;

/// Result alias of this crate.
pub type Result<T, E = OvError> = std::result::Result<T, E>;

fn not_found_message(configured: &Option<PathBuf>, searched: &[String]) -> String {
    let mut msg = String::from("OpenVINO runtime not found: no libopenvino_c.so");
    if let Some(path) = configured {
        let _ = write!(
            msg,
            " at the configured `[openvino] library` {}",
            path.display()
        );
    }
    msg.push_str(". Searched:");
    if searched.is_empty() {
        msg.push_str(" nothing (no configured library and no Python prefixes)");
    }
    for s in searched {
        let _ = write!(msg, "\n  - {s}");
    }
    msg.push_str(
        "\nInstall it into the project venv with `python3 -m venv .venv && .venv/bin/pip install \
         -r scripts/requirements.txt` (or `.venv/bin/pip install openvino`), or set `[openvino] \
         library` to the path of libopenvino_c.so (or its directory).",
    );
    msg
}

impl From<kiln_hal::ports::PortError> for OvError {
    fn from(e: kiln_hal::ports::PortError) -> OvError {
        match e.kind {
            ErrorKind::InvalidArgument => OvError::InvalidInput(e.message),
            ErrorKind::Unsupported | ErrorKind::NotFound => OvError::Unsupported(e.message),
            ErrorKind::Internal
            | ErrorKind::FailedPrecondition
            | ErrorKind::PermissionDenied
            | ErrorKind::AlreadyExists
            | ErrorKind::Exhausted => OvError::Runtime {
                context: "convert a tensor".into(),
                message: e.message,
            },
        }
    }
}

impl From<OvError> for kiln_hal::ports::PortError {
    fn from(e: OvError) -> kiln_hal::ports::PortError {
        kiln_hal::ports::PortError::new(e.kind(), e.to_string())
    }
}
