//! The vector index port: named collections of fixed-dimension vectors with ids and
//! optional metadata, exact or int8-quantised top-k search, and what each collection
//! holds in memory (the engine reserves it in the UMA budget). Authorisation, budgets and
//! embedding texts are the engine's. Pure traits and data; touches nothing.

use serde::{Deserialize, Serialize};

use super::error::PortError;

/// Similarity measure of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Inner product; larger is better.
    InnerProduct,
    /// Cosine similarity; vectors and queries are normalised; larger is better.
    Cosine,
    /// Squared Euclidean distance; smaller is better.
    L2,
}

impl Metric {
    /// Parses `inner_product`/`ip`, `cosine`/`cos`, `l2`.
    pub fn parse(s: &str) -> Option<Metric> {
        match s.to_ascii_lowercase().as_str() {
            "inner_product" | "ip" | "dot" => Some(Metric::InnerProduct),
            "cosine" | "cos" => Some(Metric::Cosine),
            "l2" | "euclidean" => Some(Metric::L2),
            _ => None,
        }
    }

    /// Canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::InnerProduct => "inner_product",
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Metric::parse(s)
            .ok_or_else(|| format!("unknown metric `{s}`: use inner_product, cosine or l2"))
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a collection's vectors are searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantisation {
    /// Exact f32 scan.
    None,
    /// int8 scan (per-dimension affine scale) then exact f32 rerank of a candidate set.
    Int8,
}

impl Quantisation {
    /// Parses `none`/`f32`, `int8`/`sq8`.
    pub fn parse(s: &str) -> Option<Quantisation> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "f32" | "" => Some(Quantisation::None),
            "int8" | "sq8" => Some(Quantisation::Int8),
            _ => None,
        }
    }

    /// Canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Quantisation::None => "none",
            Quantisation::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Quantisation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Quantisation::parse(s)
            .ok_or_else(|| format!("unknown quantisation `{s}`: use none or int8"))
    }
}

impl std::fmt::Display for Quantisation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub id: u64,
    /// Similarity (inner product, cosine) or squared distance (L2).
    pub score: f32,
    pub metadata: Option<String>,
}

/// What `stats` reports about a collection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectionInfo {
    pub name: String,
    pub dim: usize,
    pub metric: Metric,
    pub quantisation: Quantisation,
    /// Live vectors.
    pub count: usize,
    /// Memory held for this collection (vectors, codes, ids, metadata).
    pub memory_bytes: usize,
    /// Bytes of committed segment files.
    pub disk_bytes: u64,
    /// Number of segment files.
    pub segments: usize,
}

/// Search threads and the CPUs they run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPool {
    pub threads: usize,
    pub cpus: Vec<usize>,
    /// The widest instruction set the kernels use, e.g. `avx512`.
    pub isa: String,
}

/// How to open an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexOptions {
    /// Search threads; pinned to `cpus` (empty: where the caller runs).
    pub threads: usize,
    pub cpus: Vec<usize>,
    /// Rewrite a collection into one segment once it has more segments than this.
    pub compact_after_segments: usize,
}

/// Opens the index kept under a directory.
pub type OpenIndex = dyn Fn(&std::path::Path, IndexOptions) -> Result<std::sync::Arc<dyn VectorIndex>, PortError>
    + Send
    + Sync;

/// Persistent vector collections. Calls block (they write and fsync): run them on blocking
/// threads. Every mutation is all-or-nothing and durable when it returns.
pub trait VectorIndex: Send + Sync {
    fn create(
        &self,
        name: &str,
        dim: usize,
        metric: Metric,
        quantisation: Quantisation,
    ) -> Result<CollectionInfo, PortError>;
    /// Adds `ids.len()` vectors (`ids.len() × dim` floats, row-major); returns the count.
    fn add(
        &self,
        name: &str,
        ids: &[u64],
        vectors: &[f32],
        metadata: Option<Vec<String>>,
    ) -> Result<usize, PortError>;
    /// Deletes ids (all must exist); returns the count.
    fn delete(&self, name: &str, ids: &[u64]) -> Result<usize, PortError>;
    fn drop_collection(&self, name: &str) -> Result<(), PortError>;
    /// Top-`k` per query (`queries` is `nq × dim` floats), best first.
    fn search(&self, name: &str, queries: &[f32], k: i64) -> Result<Vec<Vec<Hit>>, PortError>;
    fn stats(&self, name: &str) -> Result<CollectionInfo, PortError>;
    /// Every collection, by name.
    fn list(&self) -> Vec<CollectionInfo>;
    /// Memory the collection holds now.
    fn memory_bytes(&self, name: &str) -> Result<usize, PortError>;
    /// Memory adding `count` vectors with `metadata_bytes` of metadata would take.
    fn estimate_add_bytes(
        &self,
        name: &str,
        count: usize,
        metadata_bytes: usize,
    ) -> Result<usize, PortError>;
    /// Collections that could not be loaded, and why.
    fn load_problems(&self) -> Vec<String>;
    fn pool(&self) -> IndexPool;
    /// The directory it keeps its files in.
    fn root(&self) -> std::path::PathBuf;
}
