//! In-memory flat index: f32 rows (normalised for cosine), optional int8 scalar-quantised
//! codes, and the exact / quantised top-k searches that run on the pinned pool. Owns only
//! memory; persistence lives in `store`.

pub use kiln_hal::ports::{Metric, Quantisation};

use crate::error::{Result, VectorError};
use crate::kernels::{self, CODE_ALIGN, Isa, Kind, QUERY_CODE_MAX};
use crate::pool::SearchPool;
use crate::topk::TopK;

/// The kernel a metric scores with.
fn kind(m: Metric) -> Kind {
    match m {
        Metric::InnerProduct | Metric::Cosine => Kind::Dot,
        Metric::L2 => Kind::L2,
    }
}

/// Converts a kernel score to a "larger is better" key and back (an involution).
#[inline]
fn flip(m: Metric, v: f32) -> f32 {
    if m == Metric::L2 { -v } else { v }
}

/// Queries scanned together in one pass over the database.
const QUERY_BLOCK: usize = 16;
/// Rows per tile when several queries share it (tile stays in L2).
const TILE_MULTI: usize = 128;
/// Rows per tile for a single query (scores buffer stays in L1).
const TILE_SINGLE: usize = 1024;
/// Candidates reranked in f32 after an int8 scan: `max(k * FACTOR, MIN)`.
pub const RERANK_FACTOR: usize = 10;
pub const RERANK_MIN: usize = 100;

/// int8 scalar quantiser with a per-dimension affine scale: `x ≈ min + step * code`.
#[derive(Debug, Clone)]
struct Sq8 {
    vmin: Vec<f32>,
    step: Vec<f32>,
    vmax: Vec<f32>,
    stride: usize,
    codes: Vec<u8>,
    /// |x̂|² per row (L2 keys only).
    norms: Vec<f32>,
}

impl Sq8 {
    fn new(dim: usize) -> Sq8 {
        Sq8 {
            vmin: vec![f32::INFINITY; dim],
            vmax: vec![f32::NEG_INFINITY; dim],
            step: vec![1.0; dim],
            stride: dim.div_ceil(CODE_ALIGN) * CODE_ALIGN,
            codes: Vec::new(),
            norms: Vec::new(),
        }
    }

    /// Encodes one row; returns |x̂|².
    fn encode(vmin: &[f32], step: &[f32], x: &[f32], out: &mut [u8]) -> f32 {
        let mut norm = 0.0f32;
        for (i, &v) in x.iter().enumerate() {
            let c = ((v - vmin[i]) / step[i]).round().clamp(0.0, 255.0);
            out[i] = c as u8;
            let d = vmin[i] + step[i] * c;
            norm += d * d;
        }
        norm
    }

    /// Encodes rows appended to `data` (all rows `from..`); retrains on everything if the
    /// new rows fall outside the current per-dimension range.
    fn append(&mut self, data: &[f32], dim: usize, from: usize) {
        let mut grew = false;
        for row in data[from * dim..].chunks_exact(dim) {
            for (i, &v) in row.iter().enumerate() {
                if v < self.vmin[i] {
                    self.vmin[i] = v;
                    grew = true;
                }
                if v > self.vmax[i] {
                    self.vmax[i] = v;
                    grew = true;
                }
            }
        }
        let start = if grew {
            for i in 0..dim {
                let range = self.vmax[i] - self.vmin[i];
                self.step[i] = if range > 0.0 && range.is_finite() {
                    range / 255.0
                } else {
                    1.0
                };
            }
            0
        } else {
            from
        };
        let n = data.len() / dim;
        self.codes.resize(n * self.stride, 0);
        self.norms.resize(n, 0.0);
        for r in start..n {
            let row = &data[r * dim..(r + 1) * dim];
            let out = &mut self.codes[r * self.stride..r * self.stride + dim];
            self.norms[r] = Self::encode(&self.vmin, &self.step, row, out);
        }
    }

    fn swap_remove(&mut self, row: usize) {
        let n = self.norms.len();
        let s = self.stride;
        if row + 1 != n {
            self.codes.copy_within((n - 1) * s..n * s, row * s);
        }
        self.codes.truncate((n - 1) * s);
        self.norms.swap_remove(row);
    }

    /// Quantised query: returns (codes, scale, offset) with `q·x̂ ≈ offset + scale * Σ code·c`.
    fn quantise_query(&self, q: &[f32]) -> (Vec<i8>, f32, f32) {
        let mut scaled: Vec<f32> = q.iter().zip(&self.step).map(|(a, s)| a * s).collect();
        let offset: f32 = q.iter().zip(&self.vmin).map(|(a, m)| a * m).sum();
        let amax = scaled.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if amax > 0.0 {
            amax / QUERY_CODE_MAX as f32
        } else {
            1.0
        };
        let mut codes = vec![0i8; self.stride];
        for (c, v) in codes.iter_mut().zip(scaled.iter_mut()) {
            *c = (*v / scale)
                .round()
                .clamp(-(QUERY_CODE_MAX as f32), QUERY_CODE_MAX as f32) as i8;
        }
        (codes, scale, offset)
    }
}

/// Asks the kernel to back a large buffer with transparent huge pages (fewer TLB misses
/// on full scans). Advisory: ignored where THP is off or the range is small.
pub(crate) fn advise_huge<T>(v: &Vec<T>) {
    const HUGE: usize = 2 << 20;
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < 2 * HUGE {
        return;
    }
    let start = v.as_ptr() as usize;
    let aligned = start.div_ceil(HUGE) * HUGE;
    let end = (start + bytes) / HUGE * HUGE;
    if end > aligned {
        // SAFETY: the range lies inside the vector's allocation; MADV_HUGEPAGE only
        // changes how the kernel backs it, never its contents.
        unsafe {
            libc::madvise(
                aligned as *mut libc::c_void,
                end - aligned,
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

/// Flat (brute-force) index over `dim`-dimensional rows.
#[derive(Debug, Clone)]
pub struct FlatIndex {
    dim: usize,
    metric: Metric,
    data: Vec<f32>,
    sq8: Option<Sq8>,
}

impl FlatIndex {
    /// An empty index. `dim` must be at least 1 (checked by callers).
    pub fn new(dim: usize, metric: Metric, quantisation: Quantisation) -> FlatIndex {
        FlatIndex {
            dim,
            metric,
            data: Vec::new(),
            sq8: (quantisation == Quantisation::Int8).then(|| Sq8::new(dim)),
        }
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Quantisation.
    pub fn quantisation(&self) -> Quantisation {
        if self.sq8.is_some() {
            Quantisation::Int8
        } else {
            Quantisation::None
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `r` as stored (normalised for cosine).
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.dim..(r + 1) * self.dim]
    }

    /// All rows, row-major.
    pub fn rows(&self) -> &[f32] {
        &self.data
    }

    /// Bytes of vector data held in memory (f32 rows plus int8 codes and norms).
    pub fn memory_bytes(&self) -> usize {
        let q = self.sq8.as_ref().map_or(0, |s| {
            s.codes.capacity() + s.norms.capacity() * 4 + s.vmin.len() * 12
        });
        self.data.capacity() * 4 + q
    }

    /// Appends rows. Vectors should already be finite and, for cosine, normalised with
    /// [`FlatIndex::prepare`]; a length that is not a whole number of rows is refused.
    pub fn push(&mut self, vectors: &[f32]) -> Result<()> {
        self.check_len(vectors)?;
        let from = self.len();
        if self.data.capacity() - self.data.len() < vectors.len() {
            self.reserve(vectors.len() / self.dim);
        }
        self.data.extend_from_slice(vectors);
        if let Some(sq) = &mut self.sq8 {
            sq.append(&self.data, self.dim, from);
        }
        Ok(())
    }

    fn check_len(&self, v: &[f32]) -> Result<()> {
        if v.len().is_multiple_of(self.dim) {
            Ok(())
        } else {
            Err(VectorError::WrongDimension {
                dim: self.dim,
                got: v.len(),
            })
        }
    }

    /// Reserves room for `rows` more rows (f32 data and int8 codes), huge-page backed.
    pub fn reserve(&mut self, rows: usize) {
        // Grow geometrically so repeated small adds stay amortised O(1).
        let want = rows.max(self.len());
        self.data.reserve(want * self.dim);
        advise_huge(&self.data);
        if let Some(sq) = &mut self.sq8 {
            sq.codes.reserve(want * sq.stride);
            advise_huge(&sq.codes);
            sq.norms.reserve(want);
        }
    }

    /// Removes row `r` by moving the last row into its place.
    pub fn swap_remove(&mut self, r: usize) {
        let n = self.len();
        let d = self.dim;
        if r + 1 != n {
            self.data.copy_within((n - 1) * d..n * d, r * d);
        }
        self.data.truncate((n - 1) * d);
        if let Some(sq) = &mut self.sq8 {
            sq.swap_remove(r);
        }
    }

    /// Normalises vectors in place for cosine (no-op otherwise). Returns the index of the
    /// first all-zero vector if there is one (cosine only).
    pub fn prepare(&self, vectors: &mut [f32]) -> std::result::Result<(), usize> {
        if self.metric != Metric::Cosine {
            return Ok(());
        }
        for (i, v) in vectors.chunks_exact_mut(self.dim).enumerate() {
            let norm = v
                .iter()
                .map(|x| (*x as f64) * (*x as f64))
                .sum::<f64>()
                .sqrt();
            if norm == 0.0 || !norm.is_finite() {
                return Err(i);
            }
            v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
        }
        Ok(())
    }

    /// Top-k by the collection's quantisation: int8 scan + f32 rerank, or exact.
    /// `queries` are prepared (see [`FlatIndex::prepare`]). Returns `(row, score)` best
    /// first; scores are the metric's (similarity, or squared distance for L2).
    pub fn search(
        &self,
        pool: &SearchPool,
        queries: &[f32],
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        if self.sq8.is_some() {
            self.search_int8(pool, queries, k, pool.isa())
        } else {
            self.search_exact(pool, queries, k, pool.isa())
        }
    }

    fn shards(&self, pool: &SearchPool) -> Vec<(usize, usize)> {
        let n = self.len();
        let t = pool.threads().min(n.max(1));
        (0..t).map(|i| (n * i / t, n * (i + 1) / t)).collect()
    }

    /// Exact f32 top-k; `isa` caps the kernel level (the pool's level is the ceiling).
    pub fn search_exact(
        &self,
        pool: &SearchPool,
        queries: &[f32],
        k: usize,
        isa: Isa,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        self.check_len(queries)?;
        let dim = self.dim;
        let nq = queries.len() / dim;
        let isa = isa.min(pool.isa());
        let kind = kind(self.metric);
        let kk = k.min(self.len());
        let shards = self.shards(pool);
        let parts = pool.map(shards.len(), |s| {
            let (lo, hi) = shards[s];
            let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(kk)).collect();
            let tile = if nq == 1 { TILE_SINGLE } else { TILE_MULTI };
            let mut buf = vec![0.0f32; QUERY_BLOCK.min(nq) * tile];
            for q0 in (0..nq).step_by(QUERY_BLOCK) {
                let qn = QUERY_BLOCK.min(nq - q0);
                let qs = &queries[q0 * dim..(q0 + qn) * dim];
                let mut r0 = lo;
                while r0 < hi {
                    let rn = tile.min(hi - r0);
                    let out = &mut buf[..qn * rn];
                    kernels::scores(
                        isa,
                        kind,
                        qs,
                        &self.data[r0 * dim..(r0 + rn) * dim],
                        dim,
                        out,
                    );
                    if self.metric == Metric::L2 {
                        out.iter_mut().for_each(|v| *v = -*v);
                    }
                    for (qi, keys) in out.chunks_exact(rn).enumerate() {
                        tops[q0 + qi].push_block(keys, r0 as u32);
                    }
                    r0 += rn;
                }
            }
            tops
        })?;
        Ok(self.merge(parts, nq))
    }

    fn merge(&self, parts: Vec<Vec<TopK>>, nq: usize) -> Vec<Vec<(u32, f32)>> {
        let mut it = parts.into_iter();
        let mut acc = it.next().unwrap_or_else(|| vec![TopK::new(0); nq]);
        for p in it {
            for (a, b) in acc.iter_mut().zip(p) {
                a.merge(b);
            }
        }
        acc.into_iter()
            .map(|t| {
                t.into_sorted()
                    .into_iter()
                    .map(|(key, row)| (row, flip(self.metric, key)))
                    .collect()
            })
            .collect()
    }

    /// int8 scan for `max(k*10, 100)` candidates per query (queries blocked so one pass
    /// over the codes serves up to 16), then exact f32 rerank of those candidates.
    /// Falls back to exact search when the index has no int8 codes.
    pub fn search_int8(
        &self,
        pool: &SearchPool,
        queries: &[f32],
        k: usize,
        isa: Isa,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        let Some(sq) = &self.sq8 else {
            return self.search_exact(pool, queries, k, isa);
        };
        self.check_len(queries)?;
        let dim = self.dim;
        let isa = isa.min(pool.isa());
        let n = self.len();
        let nq = queries.len() / dim;
        let cands = (k.saturating_mul(RERANK_FACTOR)).max(RERANK_MIN).min(n);
        if cands == n {
            // Every row would be reranked anyway: the exact scan is cheaper.
            return self.search_exact(pool, queries, k, isa);
        }
        let kk = k.min(n);
        let stride = sq.stride;
        let mut qcodes = Vec::with_capacity(nq * stride);
        let mut qparams = Vec::with_capacity(nq);
        for q in queries.chunks_exact(dim) {
            let (codes, scale, offset) = sq.quantise_query(q);
            qcodes.extend_from_slice(&codes);
            qparams.push((scale, offset));
        }
        let shards = self.shards(pool);
        let parts = pool.map(shards.len(), |s| {
            let (lo, hi) = shards[s];
            let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(cands)).collect();
            let tile = if nq == 1 { TILE_SINGLE } else { TILE_MULTI };
            let mut ibuf = vec![0i32; QUERY_BLOCK.min(nq) * tile];
            let mut keys = vec![0.0f32; tile];
            for q0 in (0..nq).step_by(QUERY_BLOCK) {
                let qn = QUERY_BLOCK.min(nq - q0);
                let qc = &qcodes[q0 * stride..(q0 + qn) * stride];
                let mut r0 = lo;
                while r0 < hi {
                    let rn = tile.min(hi - r0);
                    let codes = &sq.codes[r0 * stride..(r0 + rn) * stride];
                    let out = &mut ibuf[..qn * rn];
                    kernels::scores_u8(isa, qc, codes, stride, out);
                    for (qi, ints) in out.chunks_exact(rn).enumerate() {
                        let keys = &mut keys[..rn];
                        if self.metric == Metric::L2 {
                            // key = 2 q·x̂ - |x̂|²  (|q|² is the same for every row)
                            let (scale, offset) = qparams[q0 + qi];
                            for (i, key) in keys.iter_mut().enumerate() {
                                *key = 2.0 * (offset + scale * ints[i] as f32) - sq.norms[r0 + i];
                            }
                        } else {
                            // Same order as q·x̂ (positive scale, constant offset).
                            for (key, &v) in keys.iter_mut().zip(ints.iter()) {
                                *key = v as f32;
                            }
                        }
                        tops[q0 + qi].push_block(keys, r0 as u32);
                    }
                    r0 += rn;
                }
            }
            tops
        })?;
        let mut merged = parts.into_iter();
        let mut all = merged.next().unwrap_or_default();
        for p in merged {
            for (a, b) in all.iter_mut().zip(p) {
                a.merge(b);
            }
        }
        let kind = kind(self.metric);
        let mut results = Vec::with_capacity(nq);
        for (q, cand) in queries.chunks_exact(dim).zip(all) {
            let mut exact = TopK::new(kk);
            for (_, row) in cand.into_sorted() {
                let s = kernels::pair(kind, q, self.row(row as usize));
                exact.push(flip(self.metric, s), row);
            }
            results.push(
                exact
                    .into_sorted()
                    .into_iter()
                    .map(|(key, row)| (row, flip(self.metric, key)))
                    .collect(),
            );
        }
        Ok(results)
    }
}
