//! Per-model Prometheus metrics, produced at scrape time from the loaded versions'
//! statistics (the same figures KServe `ModelStatistics` and `kilnctl models stats` show):
//! counters of samples, executions, successes, failures and time spent queued and computing,
//! and gauges of the recent latency percentiles, labelled model/version/device. Reads the
//! model table only.

use super::ModelsHub;
use super::stats::{Durations, ModelStats};
use crate::metrics::{CounterOf, encode_counters};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use std::sync::Weak;

pub(crate) struct ModelsCollector {
    pub(crate) hub: Weak<ModelsHub>,
}

impl std::fmt::Debug for ModelsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelsCollector")
    }
}

impl Collector for ModelsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(hub) = self.hub.upgrade() else {
            return Ok(());
        };
        let stats = hub.model_statistics("", "").unwrap_or_default();
        encode_model_stats(&stats, &mut encoder)
    }
}

fn secs(d: &Durations) -> f64 {
    d.ns as f64 / 1e9
}

pub(crate) fn encode_model_stats(
    stats: &[ModelStats],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    if stats.is_empty() {
        return Ok(());
    }
    let labels = |s: &ModelStats| {
        vec![
            ("model".to_string(), s.name.clone()),
            ("version".to_string(), s.version.to_string()),
            ("device".to_string(), s.device.clone()),
            ("precision".to_string(), s.precision.clone()),
        ]
    };
    let counts: [CounterOf<ModelStats, u64>; 4] = [
        (
            "kiln_model_inferences",
            "Samples inferred (a batched request of 4 counts 4)",
            |s| s.inference_count,
        ),
        (
            "kiln_model_executions",
            "Runtime executions (a merged batch counts 1)",
            |s| s.execution_count,
        ),
        ("kiln_model_requests_ok", "Requests that succeeded", |s| {
            s.success.count
        }),
        ("kiln_model_requests_failed", "Requests that failed", |s| {
            s.fail.count
        }),
    ];
    encode_counters(encoder, stats, labels, &counts)?;
    let times: [CounterOf<ModelStats, f64>; 4] = [
        (
            "kiln_model_queue_seconds",
            "Time requests waited in the model's queue",
            |s| secs(&s.queue),
        ),
        (
            "kiln_model_compute_input_seconds",
            "Time preparing input tensors",
            |s| secs(&s.compute_input),
        ),
        (
            "kiln_model_compute_infer_seconds",
            "Time in the runtime's inference",
            |s| secs(&s.compute_infer),
        ),
        (
            "kiln_model_compute_output_seconds",
            "Time reading output tensors",
            |s| secs(&s.compute_output),
        ),
    ];
    encode_counters(encoder, stats, labels, &times)?;
    let mut m = encoder.encode_descriptor(
        "kiln_model_request_latency_seconds",
        "End-to-end request latency over the last requests, by quantile",
        None,
        MetricType::Gauge,
    )?;
    for s in stats {
        for (q, us) in [("0.5", s.p50_us), ("0.95", s.p95_us), ("0.99", s.p99_us)] {
            let mut l = labels(s);
            l.push(("quantile".to_string(), q.to_string()));
            m.encode_family(&l)?.encode_gauge(&(us as f64 / 1e6))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Vec<ModelStats>);

    impl Collector for Fixed {
        fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_model_stats(&self.0, &mut e)
        }
    }

    #[test]
    fn model_figures_are_exposed_with_labels() {
        let s = ModelStats {
            name: "add_sub".into(),
            version: 2,
            device: "CPU".into(),
            precision: "f32".into(),
            inference_count: 12,
            execution_count: 3,
            success: Durations { count: 5, ns: 0 },
            fail: Durations { count: 1, ns: 0 },
            compute_infer: Durations {
                count: 3,
                ns: 1_500_000_000,
            },
            p99_us: 2500,
            ..Default::default()
        };
        let m = crate::metrics::Metrics::new();
        m.register_collector(Box::new(Fixed(vec![s])));
        let text = m.render();
        let l = r#"{model="add_sub",version="2",device="CPU",precision="f32"}"#;
        for want in [
            format!("kiln_model_inferences_total{l} 12"),
            format!("kiln_model_executions_total{l} 3"),
            format!("kiln_model_requests_ok_total{l} 5"),
            format!("kiln_model_requests_failed_total{l} 1"),
            format!("kiln_model_compute_infer_seconds_total{l} 1.5"),
            r#"kiln_model_request_latency_seconds{model="add_sub",version="2",device="CPU",precision="f32",quantile="0.99"} 0.0025"#.to_string(),
        ] {
            assert!(text.contains(&want), "missing {want} in:\n{text}");
        }
    }
}
