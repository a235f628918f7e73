//! `kiln-bench vectors`: exact batch-1 / batch-16 and int8 search on synthetic data with
//! this machine's single-thread read bandwidth measured in the same run (the measurement
//! lives in `kiln_vectors::bench`). Touches only memory and its own pinned threads.

use kiln_vectors::{BenchOptions, BenchReport};

/// FAISS 1.15 IndexFlatIP, one thread, batch of 16 at 100K × 384 (issue 7 reference,
/// upper end of 110–130 ms): the batch-16 goal is 4× its throughput.
const FAISS_FLAT_BATCH16_MS: f64 = 110.0;

/// Flags of `kiln-bench vectors`; unset ones keep the bench defaults
/// (100 000 × 384, top-10, one thread, 64 timed queries).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VectorsArgs {
    /// Print JSON (keys batch1_ms, batch16_ms, int8_ms, int8_recall_at_10,
    /// read_bandwidth_gbs, batch1_bandwidth_share, ...).
    #[arg(long)]
    pub json: bool,
    /// Database vectors.
    #[arg(long)]
    pub n: Option<usize>,
    /// Dimension.
    #[arg(long)]
    pub dim: Option<usize>,
    /// Neighbours per query.
    #[arg(long)]
    pub k: Option<usize>,
    /// Search threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// CPUs to pin the search threads to, e.g. 0,2 (default: the CPUs this process may use).
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Timed queries (batch 16 runs queries/16 batches).
    #[arg(long)]
    pub queries: Option<usize>,
    /// Random seed for data and queries.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl VectorsArgs {
    pub fn options(&self) -> BenchOptions {
        let d = BenchOptions::default();
        BenchOptions {
            n: self.n.unwrap_or(d.n),
            dim: self.dim.unwrap_or(d.dim),
            k: self.k.unwrap_or(d.k),
            threads: self.threads.unwrap_or(d.threads),
            cpus: self.cpus.clone(),
            seed: self.seed.unwrap_or(d.seed),
            queries: self.queries.unwrap_or(d.queries),
            bandwidth_mib: d.bandwidth_mib,
        }
    }
}

/// Run the measurement and render it.
pub fn run(args: &VectorsArgs) -> Result<String, String> {
    let report = kiln_vectors::bench::run(args.options()).map_err(|e| e.to_string())?;
    Ok(if args.json {
        json(&report)
    } else {
        table(&report)
    })
}

fn json(r: &BenchReport) -> String {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "faiss_flat_batch16_reference_ms".into(),
            FAISS_FLAT_BATCH16_MS.into(),
        );
        m.insert(
            "batch16_speedup_vs_faiss_reference".into(),
            speedup(r).into(),
        );
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// Reference FAISS batch-16 time scaled to this run's size, over ours.
fn speedup(r: &BenchReport) -> f64 {
    let scale = (r.n as f64 * r.dim as f64) / (100_000.0 * 384.0);
    if r.batch16_ms > 0.0 {
        FAISS_FLAT_BATCH16_MS * scale / r.batch16_ms
    } else {
        0.0
    }
}

fn table(r: &BenchReport) -> String {
    let s = speedup(r);
    format!(
        "{r}\n  batch 16 vs FAISS IndexFlatIP reference ({FAISS_FLAT_BATCH16_MS} ms at 100K x 384, scaled): {s:.1}x   goal >= 4x: {}\n  (run scripts/bench-vectors-faiss.py to measure FAISS on this machine in the same run)",
        if s >= 4.0 { "ok" } else { "MISSED" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_prints_the_goal_keys() {
        let args = VectorsArgs {
            json: true,
            n: Some(2000),
            dim: Some(24),
            queries: Some(16),
            ..Default::default()
        };
        let mut o = args.options();
        o.bandwidth_mib = 64;
        let r = kiln_vectors::bench::run(o).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        for key in [
            "batch1_ms",
            "batch16_ms",
            "int8_ms",
            "int8_recall_at_10",
            "read_bandwidth_gbs",
            "batch1_bandwidth_share",
        ] {
            assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
        }
        assert!(table(&r).contains("FAISS"));
    }
}
