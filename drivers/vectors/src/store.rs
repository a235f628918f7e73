//! Named vector collections persisted under one directory (the `embeddings` dataset):
//! `<root>/<name>/manifest.json` plus append-only `seg-*.add` / `seg-*.del` files. The
//! manifest is the commit point, so a crash at any moment leaves each collection either
//! with or without the batch in flight. Everything is loaded at open. Touches only `root`
//! (guarded by an exclusive lock file) and the search pool.
//!
//! Every request is validated completely before anything is written, so a rejected
//! request leaves the collection unchanged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::error::{Result, VectorError};
use crate::index::{FlatIndex, Metric, Quantisation};
use crate::pool::{PoolConfig, SearchPool};
use crate::segment::{self, MANIFEST, MANIFEST_FORMAT, Manifest, Segment, SegmentKind, SegmentRef};

/// Most vectors one collection holds (rows are addressed with 32 bits).
pub const MAX_ROWS: u64 = u32::MAX as u64;

pub use kiln_hal::ports::{CollectionInfo, Hit};

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Search threads and the CPUs they are pinned to.
    pub pool: PoolConfig,
    /// Rewrite a collection into a single segment once it has more segments than this.
    pub compact_after_segments: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool: PoolConfig::threads(1),
            compact_after_segments: 64,
        }
    }
}

struct Collection {
    dir: PathBuf,
    manifest: Manifest,
    index: FlatIndex,
    ids: Vec<u64>,
    rows: HashMap<u64, u32>,
    metadata: Vec<Option<String>>,
    meta_bytes: usize,
}

/// All collections under one directory.
pub struct VectorStore {
    root: PathBuf,
    pool: Arc<SearchPool>,
    options: StoreOptions,
    collections: RwLock<BTreeMap<String, Arc<RwLock<Collection>>>>,
    problems: Vec<String>,
    _lock: File,
}

impl std::fmt::Debug for VectorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorStore")
            .field("root", &self.root)
            .field("pool", &self.pool)
            .finish()
    }
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(VectorError::InvalidName(name.to_owned()))
    }
}

fn check_finite(vectors: &[f32], dim: usize) -> Result<()> {
    if let Some(p) = vectors.iter().position(|v| !v.is_finite()) {
        return Err(VectorError::NonFinite {
            index: p / dim,
            position: p % dim,
        });
    }
    Ok(())
}

fn check_shape(vectors: &[f32], dim: usize) -> Result<usize> {
    if vectors.is_empty() {
        return Err(VectorError::Empty("vector"));
    }
    if !vectors.len().is_multiple_of(dim) {
        return Err(VectorError::WrongDimension {
            dim,
            got: vectors.len(),
        });
    }
    Ok(vectors.len() / dim)
}

fn unique_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

impl Collection {
    fn info(&self) -> CollectionInfo {
        CollectionInfo {
            name: self.manifest.name.clone(),
            dim: self.manifest.dim,
            metric: self.manifest.metric,
            quantisation: self.manifest.quantisation,
            count: self.ids.len(),
            memory_bytes: self.memory_bytes(),
            disk_bytes: self.manifest.segments.iter().map(|s| s.bytes).sum(),
            segments: self.manifest.segments.len(),
        }
    }

    fn memory_bytes(&self) -> usize {
        // ids + hash map entries (key, value, control byte, ~1/7 slack) + metadata.
        self.index.memory_bytes()
            + self.ids.capacity() * 8
            + self.rows.capacity() * 14
            + self.metadata.capacity() * std::mem::size_of::<Option<String>>()
            + self.meta_bytes
    }

    /// Steady-state bytes per vector without metadata text: f32 row, int8 codes and norm,
    /// id, hash-map entry, metadata slot.
    fn bytes_per_vector(&self) -> usize {
        let dim = self.manifest.dim;
        let codes = match self.manifest.quantisation {
            Quantisation::Int8 => {
                dim.div_ceil(crate::kernels::CODE_ALIGN) * crate::kernels::CODE_ALIGN + 4
            }
            Quantisation::None => 0,
        };
        dim * 4 + codes + 8 + 14 + std::mem::size_of::<Option<String>>()
    }

    fn load(dir: &Path) -> Result<Collection> {
        let manifest = segment::read_manifest(dir)?;
        let mpath = dir.join(MANIFEST);
        if manifest.dim == 0 || manifest.dim > crate::MAX_DIM {
            return Err(VectorError::corrupt(
                &mpath,
                format!("invalid dimension {}", manifest.dim),
            ));
        }
        let mut c = Collection {
            dir: dir.to_owned(),
            index: FlatIndex::new(manifest.dim, manifest.metric, manifest.quantisation),
            manifest: manifest.clone(),
            ids: Vec::new(),
            rows: HashMap::new(),
            metadata: Vec::new(),
            meta_bytes: 0,
        };
        // Reserve once for everything the segments add (one allocation, huge-page backed).
        // Bounded by the real file sizes, so a damaged manifest cannot ask for huge memory.
        let row_bytes = 8 + 4 * manifest.dim as u64;
        let reserve: u64 = manifest
            .segments
            .iter()
            .filter(|r| r.kind == SegmentKind::Add && !r.file.contains('/'))
            .map(|r| {
                let on_disk = fs::metadata(dir.join(&r.file)).map_or(0, |m| m.len());
                r.count.min(on_disk / row_bytes)
            })
            .sum();
        let reserve = usize::try_from(reserve).unwrap_or(0);
        c.index.reserve(reserve);
        c.ids.reserve(reserve);
        c.rows.reserve(reserve);
        let mut listed = HashSet::new();
        for r in &manifest.segments {
            if r.file.contains('/') || r.file.starts_with('.') {
                return Err(VectorError::corrupt(
                    &mpath,
                    format!("bad segment name `{}`", r.file),
                ));
            }
            listed.insert(r.file.clone());
            let path = dir.join(&r.file);
            let bytes = fs::read(&path).map_err(|e| VectorError::io(&path, e))?;
            match segment::decode(&path, &bytes, r, manifest.dim)? {
                Segment::Add {
                    ids,
                    vectors,
                    metadata,
                } => {
                    let mut seen = HashSet::with_capacity(ids.len());
                    if let Some(id) = ids
                        .iter()
                        .find(|id| c.rows.contains_key(id) || !seen.insert(**id))
                    {
                        return Err(VectorError::corrupt(
                            &path,
                            format!("id {id} added more than once"),
                        ));
                    }
                    c.apply_add(&ids, &vectors, metadata)?;
                }
                Segment::Delete { ids } => {
                    let mut seen = HashSet::with_capacity(ids.len());
                    if let Some(id) = ids
                        .iter()
                        .find(|id| !c.rows.contains_key(id) || !seen.insert(**id))
                    {
                        return Err(VectorError::corrupt(
                            &path,
                            format!("delete of unknown or repeated id {id}"),
                        ));
                    }
                    c.apply_delete(&ids);
                }
            }
        }
        // Files of batches that never committed (crash between segment and manifest).
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let orphan =
                    name.ends_with(".tmp") || (name.starts_with("seg-") && !listed.contains(&name));
                if orphan {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(c)
    }

    fn apply_add(
        &mut self,
        ids: &[u64],
        vectors: &[f32],
        metadata: Option<Vec<Option<String>>>,
    ) -> Result<()> {
        let base = self.ids.len();
        self.index.push(vectors)?; // only fails on a wrong length, checked before

        for (i, &id) in ids.iter().enumerate() {
            self.rows.insert(id, (base + i) as u32);
        }
        self.ids.extend_from_slice(ids);
        match metadata {
            Some(m) => {
                self.meta_bytes += m.iter().flatten().map(|s| s.capacity()).sum::<usize>();
                self.metadata.extend(m);
            }
            None => self.metadata.resize(self.ids.len(), None),
        }
        Ok(())
    }

    fn apply_delete(&mut self, ids: &[u64]) {
        for id in ids {
            let Some(row) = self.rows.remove(id) else {
                continue;
            };
            let row = row as usize;
            let last = self.ids.len() - 1;
            self.index.swap_remove(row);
            self.ids.swap_remove(row);
            if let Some(s) = self.metadata.swap_remove(row) {
                self.meta_bytes -= s.capacity();
            }
            if row != last {
                self.rows.insert(self.ids[row], row as u32);
            }
        }
    }

    /// Writes a segment and commits it in a new manifest; memory is untouched.
    fn commit(&mut self, kind: SegmentKind, count: usize, bytes: Vec<u8>) -> Result<()> {
        let seq = self.manifest.next_segment;
        let ext = if kind == SegmentKind::Add {
            "add"
        } else {
            "del"
        };
        let file = format!("seg-{seq:08}.{ext}");
        segment::write_atomic(&self.dir, &file, &bytes)?;
        let mut next = self.manifest.clone();
        next.next_segment = seq + 1;
        next.segments.push(SegmentRef {
            file: file.clone(),
            kind,
            count: count as u64,
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes[..bytes.len() - 4]),
        });
        self.write_manifest(next, &file)
    }

    /// Commits `next` as the manifest. If writing fails but the new manifest is visible
    /// anyway (the rename happened, a later fsync failed), the disk already holds the
    /// change, so memory follows it; otherwise the new segment `file` is removed.
    fn write_manifest(&mut self, next: Manifest, file: &str) -> Result<()> {
        if let Err(e) = segment::write_manifest(&self.dir, &next) {
            let visible = segment::read_manifest(&self.dir).is_ok_and(|m| m == next);
            if !visible {
                let _ = fs::remove_file(self.dir.join(file));
                return Err(e);
            }
        }
        self.manifest = next;
        Ok(())
    }

    /// Rewrites all live rows into one segment and drops the old files.
    fn compact(&mut self) -> Result<()> {
        let seq = self.manifest.next_segment;
        let file = format!("seg-{seq:08}.add");
        let has_meta = self.metadata.iter().any(Option::is_some);
        let bytes = segment::encode_add(
            self.manifest.dim,
            &self.ids,
            self.index.rows(),
            has_meta.then_some(self.metadata.as_slice()),
        );
        segment::write_atomic(&self.dir, &file, &bytes)?;
        let mut next = self.manifest.clone();
        next.next_segment = seq + 1;
        next.segments = vec![SegmentRef {
            file: file.clone(),
            kind: SegmentKind::Add,
            count: self.ids.len() as u64,
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes[..bytes.len() - 4]),
        }];
        let old = self.manifest.segments.clone();
        self.write_manifest(next, &file)?;
        for s in old {
            let _ = fs::remove_file(self.dir.join(s.file));
        }
        Ok(())
    }
}

impl VectorStore {
    /// Opens (creating if needed) the store at `root` with one search thread.
    pub fn open(root: impl AsRef<Path>) -> Result<VectorStore> {
        Self::open_with(root, StoreOptions::default())
    }

    /// Opens the store at `root`, starts the pinned search pool and loads every
    /// collection. A collection that fails to load is skipped and reported by
    /// [`VectorStore::load_problems`]; its files are left alone.
    pub fn open_with(root: impl AsRef<Path>, options: StoreOptions) -> Result<VectorStore> {
        let pool = Arc::new(SearchPool::new(options.pool.clone())?);
        Self::open_with_pool(root, options, pool)
    }

    /// Like [`VectorStore::open_with`] but shares an existing pool.
    pub fn open_with_pool(
        root: impl AsRef<Path>,
        options: StoreOptions,
        pool: Arc<SearchPool>,
    ) -> Result<VectorStore> {
        let root = root.as_ref().to_owned();
        fs::create_dir_all(&root).map_err(|e| VectorError::io(&root, e))?;
        let lock_path = root.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| VectorError::io(&lock_path, e))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(VectorError::io(
                &lock_path,
                std::io::Error::other(
                    "the collection directory is in use by another process; stop it or use another directory",
                ),
            ));
        }
        let mut collections = BTreeMap::new();
        let mut problems = Vec::new();
        let entries = fs::read_dir(&root).map_err(|e| VectorError::io(&root, e))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if !path.is_dir() {
                continue;
            }
            if name.starts_with(".dropped-") || name.starts_with(".creating-") {
                // Interrupted drop or create: finish it.
                let _ = fs::remove_dir_all(&path);
                continue;
            }
            if validate_name(&name).is_err() || !path.join(MANIFEST).exists() {
                problems.push(format!(
                    "{}: not a collection (no manifest.json), ignored",
                    path.display()
                ));
                continue;
            }
            match Collection::load(&path) {
                Ok(c) if c.manifest.name == name => {
                    collections.insert(name, Arc::new(RwLock::new(c)));
                }
                Ok(c) => problems.push(format!(
                    "{}: manifest names collection `{}`, directory is `{name}`; skipped",
                    path.display(),
                    c.manifest.name
                )),
                Err(err) => problems.push(format!("collection `{name}` not loaded: {err}")),
            }
        }
        Ok(VectorStore {
            root,
            pool,
            options,
            collections: RwLock::new(collections),
            problems,
            _lock: lock,
        })
    }

    /// Collections that could not be loaded at open, with the reason.
    pub fn load_problems(&self) -> &[String] {
        &self.problems
    }

    /// The search pool (threads, pinned CPUs, ISA in use).
    pub fn pool(&self) -> &SearchPool {
        &self.pool
    }

    /// The directory holding the collections.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn get(&self, name: &str) -> Result<Arc<RwLock<Collection>>> {
        let map = self.collections.read().unwrap_or_else(|e| e.into_inner());
        map.get(name)
            .cloned()
            .ok_or_else(|| VectorError::UnknownCollection(name.to_owned()))
    }

    /// Creates an empty collection.
    pub fn create(
        &self,
        name: &str,
        dim: usize,
        metric: Metric,
        quantisation: Quantisation,
    ) -> Result<CollectionInfo> {
        validate_name(name)?;
        if dim == 0 || dim > crate::MAX_DIM {
            return Err(VectorError::InvalidDimension(dim));
        }
        let mut map = self.collections.write().unwrap_or_else(|e| e.into_inner());
        let dir = self.root.join(name);
        if map.contains_key(name) || dir.exists() {
            return Err(VectorError::CollectionExists(name.to_owned()));
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            name: name.to_owned(),
            dim,
            metric,
            quantisation,
            next_segment: 1,
            segments: Vec::new(),
        };
        // Build in a hidden directory, then rename: the collection appears whole or not at all.
        let tmp = self
            .root
            .join(format!(".creating-{name}-{}", unique_nonce()));
        let res = (|| {
            fs::create_dir(&tmp).map_err(|e| VectorError::io(&tmp, e))?;
            segment::write_manifest(&tmp, &manifest)?;
            fs::rename(&tmp, &dir).map_err(|e| VectorError::io(&dir, e))?;
            segment::sync_dir(&self.root)
        })();
        if let Err(e) = res {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let c = Collection {
            dir,
            index: FlatIndex::new(dim, metric, quantisation),
            manifest,
            ids: Vec::new(),
            rows: HashMap::new(),
            metadata: Vec::new(),
            meta_bytes: 0,
        };
        let info = c.info();
        map.insert(name.to_owned(), Arc::new(RwLock::new(c)));
        Ok(info)
    }

    /// Adds vectors (`ids.len() * dim` floats, row-major) with optional metadata (one
    /// string per id). All-or-nothing; durable when it returns. Returns the new count.
    pub fn add(
        &self,
        name: &str,
        ids: &[u64],
        vectors: &[f32],
        metadata: Option<Vec<String>>,
    ) -> Result<usize> {
        let col = self.get(name)?;
        let mut c = col.write().unwrap_or_else(|e| e.into_inner());
        let dim = c.manifest.dim;
        if ids.is_empty() {
            return Err(VectorError::Empty("id"));
        }
        let n = check_shape(vectors, dim)?;
        if n != ids.len() {
            return Err(VectorError::CountMismatch {
                what: "vectors",
                expected: ids.len(),
                got: n,
            });
        }
        if let Some(m) = &metadata
            && m.len() != ids.len()
        {
            return Err(VectorError::CountMismatch {
                what: "metadata entries",
                expected: ids.len(),
                got: m.len(),
            });
        }
        if (c.ids.len() as u64).saturating_add(ids.len() as u64) > MAX_ROWS {
            return Err(VectorError::Full {
                name: name.to_owned(),
                limit: MAX_ROWS,
            });
        }
        let mut seen = HashSet::with_capacity(ids.len());
        for &id in ids {
            if !seen.insert(id) {
                return Err(VectorError::DuplicateInRequest(id));
            }
            if c.rows.contains_key(&id) {
                return Err(VectorError::DuplicateId(id));
            }
        }
        check_finite(vectors, dim)?;
        let mut prepared = vectors.to_vec();
        c.index
            .prepare(&mut prepared)
            .map_err(|index| VectorError::ZeroVector { index })?;
        let meta: Option<Vec<Option<String>>> = metadata.map(|m| m.into_iter().map(Some).collect());
        let bytes = segment::encode_add(dim, ids, &prepared, meta.as_deref());
        c.commit(SegmentKind::Add, ids.len(), bytes)?;
        c.apply_add(ids, &prepared, meta)?;
        self.maybe_compact(&mut c);
        Ok(c.ids.len())
    }

    /// Deletes ids. All must exist; all-or-nothing. Returns the new count.
    pub fn delete(&self, name: &str, ids: &[u64]) -> Result<usize> {
        let col = self.get(name)?;
        let mut c = col.write().unwrap_or_else(|e| e.into_inner());
        if ids.is_empty() {
            return Err(VectorError::Empty("id"));
        }
        let mut seen = HashSet::with_capacity(ids.len());
        for &id in ids {
            if !seen.insert(id) {
                return Err(VectorError::DuplicateInRequest(id));
            }
            if !c.rows.contains_key(&id) {
                return Err(VectorError::UnknownId(id));
            }
        }
        let bytes = segment::encode_delete(c.manifest.dim, ids);
        c.commit(SegmentKind::Delete, ids.len(), bytes)?;
        c.apply_delete(ids);
        self.maybe_compact(&mut c);
        Ok(c.ids.len())
    }

    fn maybe_compact(&self, c: &mut Collection) {
        if c.manifest.segments.len() > self.options.compact_after_segments {
            // The batch is already committed; a failed compaction only leaves more files.
            let _ = c.compact();
        }
    }

    /// Rewrites a collection into a single segment.
    pub fn compact(&self, name: &str) -> Result<CollectionInfo> {
        let col = self.get(name)?;
        let mut c = col.write().unwrap_or_else(|e| e.into_inner());
        c.compact()?;
        Ok(c.info())
    }

    /// Top-`k` for each query (`queries` is `nq * dim` floats, row-major), best first.
    /// `k` larger than the collection returns every vector.
    pub fn search(&self, name: &str, queries: &[f32], k: i64) -> Result<Vec<Vec<Hit>>> {
        let col = self.get(name)?;
        let c = col.read().unwrap_or_else(|e| e.into_inner());
        if k <= 0 {
            return Err(VectorError::InvalidK(k));
        }
        let dim = c.manifest.dim;
        check_shape(queries, dim)?;
        check_finite(queries, dim)?;
        let mut q = queries.to_vec();
        c.index
            .prepare(&mut q)
            .map_err(|index| VectorError::ZeroVector { index })?;
        let k = usize::try_from(k).unwrap_or(usize::MAX);
        let res = c.index.search(&self.pool, &q, k)?;
        Ok(res
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|(row, score)| Hit {
                        id: c.ids[row as usize],
                        score,
                        metadata: c.metadata[row as usize].clone(),
                    })
                    .collect()
            })
            .collect())
    }

    /// Count, dimension, metric and sizes of one collection.
    pub fn stats(&self, name: &str) -> Result<CollectionInfo> {
        let col = self.get(name)?;
        let c = col.read().unwrap_or_else(|e| e.into_inner());
        Ok(c.info())
    }

    /// Stats of every collection, by name.
    pub fn list(&self) -> Vec<CollectionInfo> {
        let map = self.collections.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .map(|c| c.read().unwrap_or_else(|e| e.into_inner()).info())
            .collect()
    }

    /// Memory held by one collection; reserve this in the UMA budget.
    pub fn memory_bytes(&self, name: &str) -> Result<usize> {
        Ok(self.stats(name)?.memory_bytes)
    }

    /// Memory an add of `count` vectors (with `metadata_bytes` of metadata in total) will
    /// take, for admission against the UMA budget before calling [`VectorStore::add`].
    /// Steady-state cost; a growth step may briefly hold the old and new buffers.
    pub fn estimate_add_bytes(
        &self,
        name: &str,
        count: usize,
        metadata_bytes: usize,
    ) -> Result<usize> {
        let col = self.get(name)?;
        let c = col.read().unwrap_or_else(|e| e.into_inner());
        Ok(count
            .saturating_mul(c.bytes_per_vector())
            .saturating_add(metadata_bytes))
    }

    /// Memory held by all collections.
    pub fn total_memory_bytes(&self) -> usize {
        self.list().iter().map(|c| c.memory_bytes).sum()
    }

    /// Whether an id is present.
    pub fn contains(&self, name: &str, id: u64) -> Result<bool> {
        let col = self.get(name)?;
        let c = col.read().unwrap_or_else(|e| e.into_inner());
        Ok(c.rows.contains_key(&id))
    }

    /// Deletes a collection and its files.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let mut map = self.collections.write().unwrap_or_else(|e| e.into_inner());
        let col = map
            .get(name)
            .cloned()
            .ok_or_else(|| VectorError::UnknownCollection(name.to_owned()))?;
        // Wait for in-flight operations on it.
        let c = col.write().unwrap_or_else(|e| e.into_inner());
        let gone = self
            .root
            .join(format!(".dropped-{name}-{}", unique_nonce()));
        fs::rename(&c.dir, &gone).map_err(|e| VectorError::io(&c.dir, e))?;
        segment::sync_dir(&self.root)?;
        map.remove(name);
        drop(c);
        let _ = fs::remove_dir_all(&gone);
        Ok(())
    }
}
