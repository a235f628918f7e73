//! kiln-packaging: generates the documentation files the Debian package ships
//! (man pages and shell completions) from the code and the annotated default
//! config. It only reads its inputs and writes into the output directory it
//! is given; the `.deb` itself is defined in this crate's Cargo.toml metadata.

pub mod cli_docs;
pub mod config_man;
pub mod gendocs;
mod roff;
pub mod unit;

use std::fmt;
use std::path::PathBuf;

/// Why generating the documentation failed.
#[derive(Debug)]
pub enum DocError {
    /// The annotated config could not be turned into a man page.
    Config(config_man::ConfigDocError),
    /// A file or directory could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocError::Config(e) => write!(f, "{e}"),
            DocError::Io { path, source } => write!(
                f,
                "{}: {source} (check that the path exists and is writable)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DocError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DocError::Config(e) => Some(e),
            DocError::Io { source, .. } => Some(source),
        }
    }
}

impl From<config_man::ConfigDocError> for DocError {
    fn from(e: config_man::ConfigDocError) -> Self {
        DocError::Config(e)
    }
}
