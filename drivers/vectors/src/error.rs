//! Typed errors for the vectors crate. Every variant names the problem and how to fix it;
//! nothing here touches the disk or the pool.

use std::path::PathBuf;

/// Everything that can go wrong in kiln-vectors.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("unknown collection `{0}`: create it first (vectors create) or check the name")]
    UnknownCollection(String),

    #[error("collection `{0}` already exists: pick another name or drop it first")]
    CollectionExists(String),

    #[error(
        "invalid collection name `{0}`: use 1-128 characters from A-Z a-z 0-9 _ - . and do not start with `.`"
    )]
    InvalidName(String),

    #[error("invalid dimension {0}: a collection needs a dimension between 1 and {max}", max = crate::MAX_DIM)]
    InvalidDimension(usize),

    #[error(
        "wrong dimension: got {got} floats, which is not a whole number of vectors of dimension {dim}; send vectors of exactly {dim} floats"
    )]
    WrongDimension { dim: usize, got: usize },

    #[error("{what} count mismatch: {expected} ids but {got} {what}; send one per id")]
    CountMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },

    #[error("empty request: send at least one {0}")]
    Empty(&'static str),

    #[error("duplicate id {0} in the request: each id may appear once")]
    DuplicateInRequest(u64),

    #[error("id {0} already exists in the collection: delete it first or use a new id")]
    DuplicateId(u64),

    #[error("unknown id {0}: it is not in the collection (already deleted?)")]
    UnknownId(u64),

    #[error("k must be at least 1 (got {0})")]
    InvalidK(i64),

    #[error(
        "vector {index} has a non-finite value (NaN or infinity) at position {position}: send finite floats only"
    )]
    NonFinite { index: usize, position: usize },

    #[error(
        "vector {index} is all zeros and cannot be normalised for a cosine collection: send a non-zero vector"
    )]
    ZeroVector { index: usize },

    #[error(
        "collection `{name}` would exceed {limit} vectors: split the data over several collections"
    )]
    Full { name: String, limit: u64 },

    #[error("invalid benchmark options: {0}")]
    InvalidOptions(String),

    #[error("invalid thread pool configuration: {0}")]
    PoolConfig(String),

    #[error("cannot pin search thread to CPU {cpu}: {source}; pass CPUs this process may run on")]
    Pin {
        cpu: usize,
        #[source]
        source: std::io::Error,
    },

    #[error("search thread failed: {0}")]
    Worker(String),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "corrupt collection data in {path}: {reason}; restore the directory from a snapshot or drop the collection"
    )]
    Corrupt { path: PathBuf, reason: String },
}

impl VectorError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VectorError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        VectorError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, VectorError>;
