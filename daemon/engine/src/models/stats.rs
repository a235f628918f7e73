//! Per model/version/device inference statistics: request and execution counts, failures,
//! queue and compute time, per-batch-size counts, and latency percentiles over a window of
//! recent requests. Pure bookkeeping; touches nothing.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Requests kept for percentiles.
const WINDOW: usize = 4096;

/// A count and the total time it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Durations {
    pub count: u64,
    pub ns: u64,
}

impl Durations {
    fn add(&mut self, d: Duration) {
        self.count += 1;
        self.ns += d.as_nanos() as u64;
    }
}

/// Executions of one batch size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchStat {
    pub batch_size: u64,
    pub compute_input: Durations,
    pub compute_infer: Durations,
    pub compute_output: Durations,
}

/// A snapshot of one model version's statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelStats {
    pub name: String,
    pub version: u64,
    pub device: String,
    /// The inference precision in effect (`f32`, `bf16`, `f16`).
    pub precision: String,
    /// Milliseconds since the epoch of the last inference, 0 if none.
    pub last_inference_ms: u64,
    /// Samples inferred (a batched request of 4 counts 4).
    pub inference_count: u64,
    /// Runtime executions (a batch of several requests counts 1).
    pub execution_count: u64,
    pub success: Durations,
    pub fail: Durations,
    pub queue: Durations,
    pub compute_input: Durations,
    pub compute_infer: Durations,
    pub compute_output: Durations,
    pub batch_stats: Vec<BatchStat>,
    /// End-to-end request latency percentiles over the last requests, in microseconds.
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
}

#[derive(Default)]
struct Inner {
    s: ModelStats,
    batches: BTreeMap<u64, BatchStat>,
    window: Vec<u32>,
    next: usize,
}

/// Thread-safe statistics of one loaded model version.
pub struct Stats {
    inner: Mutex<Inner>,
}

impl Stats {
    pub fn new(name: &str, version: u64, device: &str, precision: &str) -> Stats {
        let s = ModelStats {
            name: name.into(),
            version,
            device: device.into(),
            precision: precision.into(),
            ..Default::default()
        };
        Stats {
            inner: Mutex::new(Inner {
                s,
                ..Default::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One runtime execution of `batch` samples.
    pub fn execution(&self, batch: u64, input: Duration, infer: Duration, output: Duration) {
        let mut g = self.lock();
        g.s.execution_count += 1;
        let b = g.batches.entry(batch).or_insert(BatchStat {
            batch_size: batch,
            ..Default::default()
        });
        b.compute_input.add(input);
        b.compute_infer.add(infer);
        b.compute_output.add(output);
    }

    /// One finished request: its samples, time queued, compute share, total.
    pub fn request(
        &self,
        ok: bool,
        samples: u64,
        queue: Duration,
        compute: (Duration, Duration, Duration),
        total: Duration,
    ) {
        let mut g = self.lock();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        g.s.last_inference_ms = now.as_millis() as u64;
        if ok {
            g.s.success.add(total);
            g.s.inference_count += samples;
            g.s.queue.add(queue);
            g.s.compute_input.add(compute.0);
            g.s.compute_infer.add(compute.1);
            g.s.compute_output.add(compute.2);
        } else {
            g.s.fail.add(total);
        }
        let us = total.as_micros().min(u32::MAX as u128) as u32;
        if g.window.len() < WINDOW {
            g.window.push(us);
        } else {
            let i = g.next;
            g.window[i] = us;
        }
        g.next = (g.next + 1) % WINDOW;
    }

    pub fn snapshot(&self) -> ModelStats {
        let g = self.lock();
        let mut s = g.s.clone();
        s.batch_stats = g.batches.values().copied().collect();
        let mut w = g.window.clone();
        drop(g);
        w.sort_unstable();
        let pct = |p: f64| -> u64 {
            if w.is_empty() {
                return 0;
            }
            let i = ((w.len() as f64 * p).ceil() as usize).clamp(1, w.len()) - 1;
            u64::from(w[i])
        };
        s.p50_us = pct(0.50);
        s.p95_us = pct(0.95);
        s.p99_us = pct(0.99);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_failures_batches_and_percentiles() {
        let st = Stats::new("m", 1, "CPU", "f32");
        let us = Duration::from_micros;
        for i in 1..=100u64 {
            st.request(true, 2, us(1), (us(1), us(i), us(1)), us(i));
        }
        st.request(false, 1, us(0), (us(0), us(0), us(0)), us(5000));
        st.execution(2, us(1), us(2), us(3));
        st.execution(2, us(1), us(2), us(3));
        st.execution(4, us(1), us(2), us(3));
        let s = st.snapshot();
        assert_eq!(s.success.count, 100);
        assert_eq!(s.inference_count, 200);
        assert_eq!(s.fail.count, 1);
        assert_eq!(s.execution_count, 3);
        assert_eq!(s.batch_stats.len(), 2);
        assert_eq!(s.batch_stats[0].batch_size, 2);
        assert_eq!(s.batch_stats[0].compute_infer.count, 2);
        assert_eq!(s.p50_us, 51);
        assert_eq!(s.p95_us, 96);
        assert_eq!(s.p99_us, 100);
        assert!(s.last_inference_ms > 0);
    }
}
