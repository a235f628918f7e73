//! The vector index port over [`VectorStore`]: the store's calls, its errors as port
//! kinds, and [`open_index`] for the engine's wiring. Touches what the store touches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_hal::ports::{
    CollectionInfo, Hit, IndexOptions, IndexPool, Metric, PortError, Quantisation, VectorIndex,
};

use crate::error::VectorError;
use crate::pool::PoolConfig;
use crate::store::{StoreOptions, VectorStore};

impl From<VectorError> for PortError {
    fn from(e: VectorError) -> PortError {
        use VectorError as V;
        let msg = e.to_string();
        match e {
            V::UnknownCollection(_) | V::UnknownId(_) => PortError::not_found(msg),
            V::CollectionExists(_) => PortError::exists(msg),
            V::Full { .. } => PortError::exhausted(msg),
            V::Io { .. } | V::Corrupt { .. } | V::Worker(_) | V::Pin { .. } | V::PoolConfig(_) => {
                PortError::internal(msg)
            }
            _ => PortError::invalid(msg),
        }
    }
}

/// Opens (and loads) the collections under `root` with pinned search threads.
pub fn open_index(root: &Path, options: IndexOptions) -> Result<Arc<dyn VectorIndex>, PortError> {
    let opts = StoreOptions {
        pool: PoolConfig {
            threads: options.threads,
            cpus: options.cpus,
            max_isa: None,
        },
        compact_after_segments: options.compact_after_segments,
    };
    Ok(Arc::new(VectorStore::open_with(root, opts)?))
}

impl VectorIndex for VectorStore {
    fn create(
        &self,
        name: &str,
        dim: usize,
        metric: Metric,
        quantisation: Quantisation,
    ) -> Result<CollectionInfo, PortError> {
        Ok(VectorStore::create(self, name, dim, metric, quantisation)?)
    }

    fn add(
        &self,
        name: &str,
        ids: &[u64],
        vectors: &[f32],
        metadata: Option<Vec<String>>,
    ) -> Result<usize, PortError> {
        Ok(VectorStore::add(self, name, ids, vectors, metadata)?)
    }

    fn delete(&self, name: &str, ids: &[u64]) -> Result<usize, PortError> {
        Ok(VectorStore::delete(self, name, ids)?)
    }

    fn drop_collection(&self, name: &str) -> Result<(), PortError> {
        Ok(VectorStore::drop_collection(self, name)?)
    }

    fn search(&self, name: &str, queries: &[f32], k: i64) -> Result<Vec<Vec<Hit>>, PortError> {
        Ok(VectorStore::search(self, name, queries, k)?)
    }

    fn stats(&self, name: &str) -> Result<CollectionInfo, PortError> {
        Ok(VectorStore::stats(self, name)?)
    }

    fn list(&self) -> Vec<CollectionInfo> {
        VectorStore::list(self)
    }

    fn memory_bytes(&self, name: &str) -> Result<usize, PortError> {
        Ok(VectorStore::memory_bytes(self, name)?)
    }

    fn estimate_add_bytes(
        &self,
        name: &str,
        count: usize,
        metadata_bytes: usize,
    ) -> Result<usize, PortError> {
        Ok(VectorStore::estimate_add_bytes(
            self,
            name,
            count,
            metadata_bytes,
        )?)
    }

    fn load_problems(&self) -> Vec<String> {
        VectorStore::load_problems(self).to_vec()
    }

    fn pool(&self) -> IndexPool {
        let p = VectorStore::pool(self);
        IndexPool {
            threads: p.threads(),
            cpus: p.cpus().to_vec(),
            isa: p.isa().to_string(),
        }
    }

    fn root(&self) -> PathBuf {
        VectorStore::root(self).to_path_buf()
    }
}
