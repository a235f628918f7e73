//! The `kiln-bench vectors` measurement: exact batch-1 and batch-16 search, int8 search
//! with recall against exact, and this machine's single-thread read bandwidth, all in one
//! run on synthetic Gaussian data. Uses only memory and its own pinned pool.

use std::time::Instant;

use serde::Serialize;

use crate::error::{Result, VectorError};
use crate::index::{FlatIndex, Metric, Quantisation};
use crate::kernels::{self, Isa};
use crate::pool::{PoolConfig, SearchPool};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Database vectors.
    pub n: usize,
    /// Dimension.
    pub dim: usize,
    /// Neighbours per query.
    pub k: usize,
    /// Search threads.
    pub threads: usize,
    /// CPUs to pin to (empty: the process's CPUs).
    pub cpus: Vec<usize>,
    /// Random seed for data and queries.
    pub seed: u64,
    /// Timed single queries (batch 1 and int8); batch 16 runs `queries / 16` batches (at least 2).
    pub queries: usize,
    /// Buffer for the bandwidth measurement, in MiB (much larger than the last-level cache).
    pub bandwidth_mib: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            n: 100_000,
            dim: 384,
            k: 10,
            threads: 1,
            cpus: Vec::new(),
            seed: 42,
            queries: 64,
            bandwidth_mib: 512,
        }
    }
}

impl BenchOptions {
    /// Parses `kiln-bench vectors` arguments (without the subcommand):
    /// `[--json] [--n N] [--dim D] [--k K] [--threads T] [--cpus 0,2] [--seed S]
    /// [--queries Q]`. Returns the options and whether JSON output was asked for.
    pub fn from_args<I, S>(args: I) -> std::result::Result<(BenchOptions, bool), String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut opts = BenchOptions::default();
        let mut json = false;
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let a = a.as_ref();
            if a == "--json" {
                json = true;
                continue;
            }
            let known = [
                "--n",
                "--dim",
                "--k",
                "--threads",
                "--seed",
                "--queries",
                "--cpus",
            ];
            if !known.contains(&a) {
                return Err(format!(
                    "unknown option `{a}`; options: --json {}",
                    known.join(" ")
                ));
            }
            let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
            let v = v.as_ref();
            let num = |v: &str| -> std::result::Result<usize, String> {
                v.trim()
                    .parse()
                    .map_err(|_| format!("{a} expects a whole number, got `{v}`"))
            };
            match a {
                "--n" => opts.n = num(v)?,
                "--dim" => opts.dim = num(v)?,
                "--k" => opts.k = num(v)?,
                "--threads" => opts.threads = num(v)?,
                "--seed" => opts.seed = num(v)? as u64,
                "--queries" => opts.queries = num(v)?,
                _ => {
                    opts.cpus = v
                        .split(',')
                        .map(num)
                        .collect::<std::result::Result<_, _>>()?
                }
            }
        }
        Ok((opts, json))
    }
}

/// Results. Times are medians over the timed queries or batches (robust to other load).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub n: usize,
    pub dim: usize,
    pub k: usize,
    pub threads: usize,
    pub isa: Isa,
    /// Exact inner-product top-k, one query per call.
    pub batch1_ms: f64,
    /// Exact inner-product top-k for 16 queries in one call.
    pub batch16_ms: f64,
    /// int8 scan + f32 rerank, one query per call.
    pub int8_ms: f64,
    /// int8 scan + f32 rerank for 16 queries in one call.
    pub int8_batch16_ms: f64,
    /// Mean overlap of the int8 top-k with the exact top-k (recall@k; k = 10 by default).
    pub int8_recall_at_10: f64,
    /// Candidates the int8 scan passes to the f32 rerank.
    pub int8_candidates: usize,
    /// Single-thread streaming read bandwidth measured in this run: median of streaming-sum
    /// passes over a buffer much larger than the caches, interleaved with the batch-1
    /// queries on the same pinned thread.
    pub read_bandwidth_gbs: f64,
    /// Bytes of f32 vectors / batch-1 time.
    pub batch1_gbs: f64,
    /// `batch1_gbs / read_bandwidth_gbs`.
    pub batch1_bandwidth_share: f64,
    /// Bytes of f32 vectors scanned per query.
    pub database_bytes: usize,
    pub goal_batch1_share_085: bool,
    pub goal_int8_2ms: bool,
    pub goal_int8_recall_099: bool,
}

/// Deterministic generator (SplitMix64) with Gaussian samples via Box-Muller.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn fill_gaussian(&mut self, out: &mut [f32]) {
        for pair in out.chunks_mut(2) {
            let (u, v) = (self.uniform(), self.uniform());
            let r = (-2.0 * u.ln()).sqrt();
            let t = std::f64::consts::TAU * v;
            pair[0] = (r * t.cos()) as f32;
            if pair.len() > 1 {
                pair[1] = (r * t.sin()) as f32;
            }
        }
    }
}

/// Gaussian test vectors: `n * dim` floats from `seed` (same seed, same data).
pub fn gaussian(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0f32; n * dim];
    Rng(seed).fill_gaussian(&mut v);
    v
}

/// Runs the benchmark (about 10 s at the defaults; needs ~0.8 GB of memory).
pub fn run(opts: BenchOptions) -> Result<BenchReport> {
    let bad = |m: String| Err(VectorError::InvalidOptions(m));
    if opts.n == 0 || opts.dim == 0 || opts.dim > crate::MAX_DIM || opts.k == 0 {
        return bad(format!(
            "benchmark needs n >= 1, 1 <= dim <= {}, k >= 1 (got n={}, dim={}, k={})",
            crate::MAX_DIM,
            opts.n,
            opts.dim,
            opts.k
        ));
    }
    if opts.n > u32::MAX as usize {
        return bad(format!("n={} is above {}", opts.n, u32::MAX));
    }
    let pool = SearchPool::new(PoolConfig {
        threads: opts.threads.max(1),
        cpus: opts.cpus.clone(),
        max_isa: None,
    })?;
    let isa = pool.isa();
    let dim = opts.dim;
    let nq = opts.queries.max(16);

    let mut index = FlatIndex::new(dim, Metric::InnerProduct, Quantisation::Int8);
    index.reserve(opts.n);
    index.push(&gaussian(opts.n, dim, opts.seed))?;
    let queries = gaussian(nq, dim, opts.seed ^ 0x5EED);

    // Warm-up: page in and settle frequency.
    index.search_exact(&pool, &queries[..dim], opts.k, isa)?;

    // Bandwidth buffer, huge-page backed like the index and filled (faulted in) up front.
    let bw_len = opts.bandwidth_mib.max(64) * (1 << 20) / 4;
    let mut bw_buf: Vec<f32> = Vec::with_capacity(bw_len);
    crate::index::advise_huge(&bw_buf);
    bw_buf.extend((0..bw_len).map(|i| (i & 7) as f32));
    let bw_pass = || -> Result<f64> {
        // Runs on the pinned search thread and is timed from here, exactly like a query
        // (hand-off included), so the share compares like with like.
        let t = Instant::now();
        pool.map(1, |_| {
            std::hint::black_box(kernels::stream_sum(isa, std::hint::black_box(&bw_buf)))
        })?;
        Ok(t.elapsed().as_secs_f64())
    };
    bw_pass()?;

    // Batch-1 queries interleaved with bandwidth passes, so both see the same machine.
    let mut exact = Vec::with_capacity(nq);
    let mut times = Vec::with_capacity(nq);
    let mut bw_times = Vec::new();
    for (i, q) in queries.chunks_exact(dim).enumerate() {
        let t = Instant::now();
        exact.push(index.search_exact(&pool, q, opts.k, isa)?.remove(0));
        times.push(t.elapsed().as_secs_f64());
        if i % 4 == 0 {
            bw_times.push(bw_pass()?);
        }
    }
    drop(bw_buf);
    let read_bandwidth_gbs = (bw_len * 4) as f64 / median(&mut bw_times) / 1e9;
    let batch1_ms = median(&mut times) * 1e3;

    let batches = (nq / 16).max(3);
    times.clear();
    for b in 0..batches {
        let s = (b * 16) % (nq - 15);
        let t = Instant::now();
        index.search_exact(&pool, &queries[s * dim..(s + 16) * dim], opts.k, isa)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let batch16_ms = median(&mut times) * 1e3;

    index.search_int8(&pool, &queries[..dim], opts.k, isa)?;
    let mut approx = Vec::with_capacity(nq);
    times.clear();
    for q in queries.chunks_exact(dim) {
        let t = Instant::now();
        approx.push(index.search_int8(&pool, q, opts.k, isa)?.remove(0));
        times.push(t.elapsed().as_secs_f64());
    }
    let int8_ms = median(&mut times) * 1e3;

    times.clear();
    for b in 0..batches {
        let s = (b * 16) % (nq - 15);
        let t = Instant::now();
        index.search_int8(&pool, &queries[s * dim..(s + 16) * dim], opts.k, isa)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let int8_batch16_ms = median(&mut times) * 1e3;

    let kk = opts.k.min(opts.n);
    let mut hits = 0usize;
    for (e, a) in exact.iter().zip(&approx) {
        hits += a
            .iter()
            .filter(|(r, _)| e.iter().any(|(x, _)| x == r))
            .count();
    }
    let recall = hits as f64 / (kk * nq) as f64;

    let database_bytes = opts.n * dim * 4;
    let batch1_gbs = database_bytes as f64 / (batch1_ms * 1e-3) / 1e9;
    let share = batch1_gbs / read_bandwidth_gbs;
    let cands = (opts.k * crate::index::RERANK_FACTOR)
        .max(crate::index::RERANK_MIN)
        .min(opts.n);
    Ok(BenchReport {
        n: opts.n,
        dim,
        k: opts.k,
        threads: pool.threads(),
        isa,
        batch1_ms,
        batch16_ms,
        int8_ms,
        int8_batch16_ms,
        int8_recall_at_10: recall,
        int8_candidates: cands,
        read_bandwidth_gbs,
        batch1_gbs,
        batch1_bandwidth_share: share,
        database_bytes,
        goal_batch1_share_085: share >= 0.85,
        goal_int8_2ms: int8_ms <= 2.0,
        goal_int8_recall_099: recall >= 0.99,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
        writeln!(
            f,
            "vectors: n={} dim={} k={} threads={} isa={} (inner product, f32 {:.1} MB)",
            self.n,
            self.dim,
            self.k,
            self.threads,
            self.isa,
            self.database_bytes as f64 / 1e6
        )?;
        writeln!(
            f,
            "  exact batch 1        {:>9.3} ms/query  ({:.2} GB/s)",
            self.batch1_ms, self.batch1_gbs
        )?;
        writeln!(
            f,
            "  exact batch 16       {:>9.3} ms/batch  ({:.3} ms/query)",
            self.batch16_ms,
            self.batch16_ms / 16.0
        )?;
        writeln!(
            f,
            "  int8 + rerank        {:>9.3} ms/query  recall@{} {:.4} ({} candidates)   goal <= 2 ms: {}, >= 0.99: {}",
            self.int8_ms,
            self.k,
            self.int8_recall_at_10,
            self.int8_candidates,
            mark(self.goal_int8_2ms),
            mark(self.goal_int8_recall_099)
        )?;
        writeln!(
            f,
            "  int8 batch 16        {:>9.3} ms/batch  ({:.3} ms/query)",
            self.int8_batch16_ms,
            self.int8_batch16_ms / 16.0
        )?;
        writeln!(
            f,
            "  read bandwidth (1 thread) {:>6.2} GB/s",
            self.read_bandwidth_gbs
        )?;
        write!(
            f,
            "  batch-1 share of bandwidth {:>5.1} %   goal >= 85 %: {}",
            self.batch1_bandwidth_share * 100.0,
            mark(self.goal_batch1_share_085)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse_and_bad_args_are_explained() {
        let (o, json) =
            BenchOptions::from_args(["--json", "--n", "500", "--dim", "12", "--cpus", "0"])
                .unwrap();
        assert!(json);
        assert_eq!((o.n, o.dim, o.k, o.cpus), (500, 12, 10, vec![0]));
        let e = BenchOptions::from_args(["--n", "x"]).unwrap_err();
        assert!(e.contains("whole number"), "{e}");
        let e = BenchOptions::from_args(["--fast"]).unwrap_err();
        assert!(e.contains("unknown option"), "{e}");
        let e = BenchOptions::from_args(["--k"]).unwrap_err();
        assert!(e.contains("needs a value"), "{e}");
    }

    #[test]
    fn small_run_reports_sane_numbers() {
        let r = run(BenchOptions {
            n: 3000,
            dim: 40,
            queries: 16,
            bandwidth_mib: 64,
            ..Default::default()
        })
        .unwrap();
        assert!(r.batch1_ms > 0.0 && r.batch16_ms > 0.0 && r.int8_ms > 0.0);
        assert!(r.read_bandwidth_gbs > 0.1, "{r}");
        assert!(r.int8_recall_at_10 >= 0.99, "{r}");
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "batch1_ms",
            "batch16_ms",
            "int8_ms",
            "int8_recall_at_10",
            "read_bandwidth_gbs",
            "batch1_bandwidth_share",
        ] {
            assert!(v[key].is_number(), "missing {key}");
        }
        assert!(
            run(BenchOptions {
                n: 0,
                ..Default::default()
            })
            .is_err()
        );
    }
}
