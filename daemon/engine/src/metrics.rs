//! Prometheus metrics: per-RPC counters and latency histograms for every
//! transport, plus process figures read from /proc/self at scrape time.
//! Transports record; the metrics listener in kilnd renders.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    transport: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    transport: String,
    method: String,
}

#[derive(Default)]
struct ProcessGauges {
    rss: Gauge<i64>,
    vsize: Gauge<i64>,
    fds: Gauge<i64>,
    threads: Gauge<i64>,
    cpu_seconds: Gauge<f64, AtomicU64>,
    start_time: Gauge<f64, AtomicU64>,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
    process: ProcessGauges,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "kiln_rpc_calls",
            "Calls handled, by transport, method and result code",
            calls.clone(),
        );
        registry.register(
            "kiln_rpc_duration_seconds",
            "Call latency, by transport and method",
            latency.clone(),
        );
        let process = ProcessGauges::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident set size",
            process.rss.clone(),
        );
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory size",
            process.vsize.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            process.fds.clone(),
        );
        registry.register("process_threads", "OS threads", process.threads.clone());
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time",
            process.cpu_seconds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time since the epoch",
            process.start_time.clone(),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        process.start_time.set(now);
        Metrics {
            registry: Mutex::new(registry),
            calls,
            latency,
            process,
        }
    }

    /// Record one finished call.
    pub fn observe_call(&self, transport: &str, method: &str, code: &str, elapsed: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                transport: transport.into(),
                method: method.into(),
                code: code.into(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                transport: transport.into(),
                method: method.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Add metrics produced at scrape time (e.g. storage command statistics).
    pub fn register_collector(&self, c: Box<dyn prometheus_client::collector::Collector>) {
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        reg.register_collector(c);
    }

    /// Text exposition format (OpenMetrics text, which Prometheus scrapes).
    pub fn render(&self) -> String {
        self.refresh_process();
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
            out.push_str("# encoding failed\n");
        }
        out
    }

    fn refresh_process(&self) {
        let page = page_size();
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            let mut f = statm
                .split_whitespace()
                .map(|v| v.parse::<i64>().unwrap_or(0));
            self.process.vsize.set(f.next().unwrap_or(0) * page);
            self.process.rss.set(f.next().unwrap_or(0) * page);
        }
        if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
            self.process.fds.set(rd.count() as i64);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the parenthesised command name; utime/stime are 14/15.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let tick = clock_ticks();
                let ut = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                let st = f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                self.process.cpu_seconds.set((ut + st) / tick);
                let threads = f.get(17).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                self.process.threads.set(threads);
            }
        }
    }
}

/// A counter family computed at scrape time: its name, help and the value of one item.
pub(crate) type CounterOf<T, V> = (&'static str, &'static str, fn(&T) -> V);

/// Encode one counter family per entry of `counters`, with a sample per item labelled by
/// `labels` (for collectors that read figures kept elsewhere).
pub(crate) fn encode_counters<T, V>(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder,
    items: &[T],
    labels: impl Fn(&T) -> Vec<(String, String)>,
    counters: &[CounterOf<T, V>],
) -> Result<(), std::fmt::Error>
where
    V: prometheus_client::encoding::EncodeCounterValue
        + prometheus_client::encoding::EncodeExemplarValue,
{
    for (name, help, value) in counters {
        let mut m = encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for item in items {
            m.encode_family(&labels(item))?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, V>(
                    &value(item),
                    None,
                )?;
        }
    }
    Ok(())
}

fn page_size() -> i64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 { v } else { 4096 }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_process_figures_are_exposed() {
        let m = Metrics::new();
        m.observe_call(
            "grpc",
            "/kiln.v1.Daemon/Status",
            "0",
            Duration::from_micros(300),
        );
        m.observe_call(
            "grpc",
            "/kiln.v1.Daemon/Status",
            "0",
            Duration::from_micros(300),
        );
        let text = m.render();
        assert!(
            text.contains(r#"kiln_rpc_calls_total{transport="grpc",method="/kiln.v1.Daemon/Status",code="0"} 2"#),
            "{text}"
        );
        assert!(text.contains("kiln_rpc_duration_seconds_count"), "{text}");
        let rss_line = text
            .lines()
            .find(|l| l.starts_with("process_resident_memory_bytes "))
            .unwrap();
        let rss: i64 = rss_line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(rss > 0);
    }
}
