//! kiln-vectors: exact and int8-quantised vector search for kilnd.
//!
//! - [`kernels`]: inner product / L2 score kernels, scalar + AVX2/FMA + AVX-512, chosen at
//!   run time per pinned thread.
//! - [`pool`]: search threads pinned to the performance CPU set.
//! - [`index`]: in-memory flat index, batched exact search and int8 scan + f32 rerank.
//! - [`store`]: named collections persisted as append-only segments plus a manifest.
//! - [`mod@bench`]: the `kiln-bench vectors` measurement.
//!
//! The crate is synchronous and touches only the collection directory it is given and the
//! affinity of its own threads.

pub mod bench;
pub mod error;
pub mod index;
pub mod kernels;
pub mod pool;
mod port;
mod segment;
pub mod store;
mod topk;

pub use bench::{BenchOptions, BenchReport};
pub use error::{Result, VectorError};
pub use index::{FlatIndex, Metric, Quantisation};
pub use kernels::Isa;
pub use pool::{PoolConfig, SearchPool};
pub use port::open_index;
pub use store::{CollectionInfo, Hit, StoreOptions, VectorStore};

/// Largest supported vector dimension.
pub const MAX_DIM: usize = 65_536;
