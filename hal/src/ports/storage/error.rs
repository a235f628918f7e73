//! Typed storage errors. Every variant names the problem and the fix; errors from
//! `zfs`/`zpool` carry the command line and its stderr. Touches nothing.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything that can go wrong in kiln-storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid storage config: {key}: {message}")]
    Config { key: String, message: String },

    #[error(
        "`{binary}` is not installed or not executable ({detail}); install the ZFS userland \
         (OpenZFS `zfsutils-linux`, or `zfs-fuse`) or set [storage] backend = \"dir\""
    )]
    ZfsNotInstalled { binary: String, detail: String },

    #[error(
        "ZFS is installed but not reachable: `{command}` said: {stderr}; start the ZFS service \
         (zfs-fuse daemon or the zfs kernel module)"
    )]
    ZfsUnavailable { command: String, stderr: String },

    #[error(
        "ZFS pool `{pool}` does not exist (`{command}`: {stderr}); create or import it \
         (`zpool import {pool}`) or set [storage] pool to an existing pool"
    )]
    PoolMissing {
        pool: String,
        command: String,
        stderr: String,
    },

    #[error("dataset `{target}` does not exist (`{command}`: {stderr})")]
    DatasetMissing {
        target: String,
        command: String,
        stderr: String,
    },

    #[error(
        "`{target}` is busy (`{command}`: {stderr}); stop the process using it \
         (see `fuser -vm`) and retry"
    )]
    Busy {
        target: String,
        command: String,
        stderr: String,
    },

    #[error(
        "no space left on `{target}` ({detail}); raise the dataset quota in \
         [storage.profiles], prune snapshots (`kilnctl storage prune`) or free pool space"
    )]
    QuotaFull { target: String, detail: String },

    #[error(
        "ZFS rejected {property}={value} on `{target}` (`{command}`: {stderr}); choose a value \
         this ZFS accepts (see `zfs get` for the allowed values)"
    )]
    PropertyRejected {
        property: String,
        value: String,
        target: String,
        command: String,
        stderr: String,
    },

    #[error(
        "`{command}` did not finish within {seconds} s and was killed; the ZFS service is not \
         answering: check `zpool status`, the zfs-fuse daemon or the kernel log"
    )]
    Timeout { command: String, seconds: u64 },

    #[error(
        "creating `{dataset}` would mount it at {mountpoint:?}, inside the zfs-fuse mount \
         {parent_mount:?}, and zfs-fuse deadlocks on nested mounts; unmount that dataset and \
         `zfs set canmount=off` on it (or give it a mountpoint elsewhere), then restart kilnd"
    )]
    NestedFuseMount {
        dataset: String,
        mountpoint: PathBuf,
        parent_mount: PathBuf,
    },

    #[error(
        "dataset `{dataset}` is not mounted ({detail}); kiln needs it mounted: \
         `zfs inherit mountpoint {dataset}` or `zfs set mountpoint=/path {dataset}`, \
         `zfs set canmount=on {dataset}`, then `zfs mount {dataset}`"
    )]
    NotMounted { dataset: String, detail: String },

    #[error("`{command}` failed (exit {status}): {stderr}")]
    CommandFailed {
        command: String,
        status: i32,
        stderr: String,
    },

    #[error("could not parse output of `{command}`: {detail}")]
    Parse { command: String, detail: String },

    #[error("{op} `{path}`: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid {what} `{value}`: {expected}")]
    InvalidName {
        what: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error(
        "import source {path}: symlink to {target} leads out of the tree; kiln imports only \
         links that stay inside what is imported: replace it with the file itself"
    )]
    LinkOutside { path: PathBuf, target: PathBuf },

    #[error(
        "snapshot `{dataset}@{name}` does not exist; list them with `kilnctl storage snapshots`"
    )]
    SnapshotNotFound { dataset: String, name: String },

    #[error("snapshot `{dataset}@{name}` already exists; pick another name")]
    SnapshotExists { dataset: String, name: String },

    #[error(
        "rolling `{dataset}` back to `{name}` would destroy newer snapshots {newer:?}; \
         pass destroy_newer (`--destroy-newer`) or roll back a single model instead"
    )]
    NewerSnapshots {
        dataset: String,
        name: String,
        newer: Vec<String>,
    },

    #[error("snapshot `{dataset}@{name}` is protected ({reason}); release it first")]
    SnapshotProtected {
        dataset: String,
        name: String,
        reason: String,
    },

    #[error("hold `{tag}` is not set on `{dataset}@{name}`")]
    HoldNotFound {
        dataset: String,
        name: String,
        tag: String,
    },

    #[error("model `{name}` has no version {version}; known versions: {known:?}")]
    ModelVersionNotFound {
        name: String,
        version: u32,
        known: Vec<u32>,
    },

    #[error("{what} is not supported by the {backend} backend: {fix}")]
    Unsupported {
        what: &'static str,
        backend: &'static str,
        fix: &'static str,
    },
}

/// Transport-neutral class of an error (maps 1:1 onto gRPC status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    DeadlineExceeded,
    Unimplemented,
    Internal,
}

impl StorageError {
    /// The class a transport should report this error as.
    pub fn code(&self) -> ErrorCode {
        use StorageError as E;
        match self {
            E::Config { .. } | E::InvalidName { .. } | E::LinkOutside { .. } => {
                ErrorCode::InvalidArgument
            }
            E::DatasetMissing { .. }
            | E::SnapshotNotFound { .. }
            | E::HoldNotFound { .. }
            | E::ModelVersionNotFound { .. } => ErrorCode::NotFound,
            E::SnapshotExists { .. } => ErrorCode::AlreadyExists,
            E::Busy { .. }
            | E::NewerSnapshots { .. }
            | E::SnapshotProtected { .. }
            | E::PropertyRejected { .. }
            | E::NotMounted { .. }
            | E::NestedFuseMount { .. } => ErrorCode::FailedPrecondition,
            E::QuotaFull { .. } => ErrorCode::ResourceExhausted,
            E::ZfsNotInstalled { .. } | E::ZfsUnavailable { .. } | E::PoolMissing { .. } => {
                ErrorCode::Unavailable
            }
            E::Timeout { .. } => ErrorCode::DeadlineExceeded,
            E::Unsupported { .. } => ErrorCode::Unimplemented,
            E::CommandFailed { .. } | E::Parse { .. } | E::Io { .. } => ErrorCode::Internal,
        }
    }

    /// Wrap an I/O error with the operation and path. ENOSPC/EDQUOT become `QuotaFull`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StorageError::QuotaFull {
                target: path.display().to_string(),
                detail: format!("{op}: {source}"),
            },
            _ => StorageError::Io { op, path, source },
        }
    }

    /// True when the error means "out of space / quota" (a job should be told).
    pub fn is_quota_full(&self) -> bool {
        matches!(self, StorageError::QuotaFull { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_for_full_disks_become_quota_full() {
        let e = StorageError::io(
            "write",
            "/x/y",
            std::io::Error::from_raw_os_error(libc::EDQUOT),
        );
        assert!(e.is_quota_full());
        assert_eq!(e.code(), ErrorCode::ResourceExhausted);
        assert!(e.to_string().contains("/x/y"), "{e}");
        let e = StorageError::io(
            "write",
            "/x/y",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert!(e.is_quota_full());
        let e = StorageError::io(
            "open",
            "/x/y",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert!(!e.is_quota_full());
        assert_eq!(e.code(), ErrorCode::Internal);
    }

    #[test]
    fn codes_for_common_faults() {
        let e = StorageError::PoolMissing {
            pool: "t".into(),
            command: "c".into(),
            stderr: "s".into(),
        };
        assert_eq!(e.code(), ErrorCode::Unavailable);
        let e = StorageError::SnapshotExists {
            dataset: "d".into(),
            name: "n".into(),
        };
        assert_eq!(e.code(), ErrorCode::AlreadyExists);
        let e = StorageError::Timeout {
            command: "zfs get".into(),
            seconds: 1,
        };
        assert_eq!(e.code(), ErrorCode::DeadlineExceeded);
    }
}
