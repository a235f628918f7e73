//! `kiln-bench jobs`: submit → job process running. Starts the kilnd built beside this
//! binary, submits short jobs one after another over gRPC, and takes the time from just
//! before Submit to the moment the job's own process wrote its start time (CLOCK_REALTIME,
//! via `date +%s%N`, so it includes the shim, exec and one `date`). Goal p50/p99 ≤ 50 ms.

use kiln_api::kiln::v1::jobs_client::JobsClient;
use kiln_api::kiln::v1::{GetJobRequest, JobSpec, SubmitJobRequest};
use kiln_tests::{Kilnd, Start, test_config};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const GOAL_MS: f64 = 50.0;

pub struct Report {
    runs: usize,
    p50: f64,
    p99: f64,
    max: f64,
    rpc_p50: f64,
}

fn pct(v: &[f64], p: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

pub fn run(runs: usize) -> Result<Report, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let conf = dir.path().join("kiln.toml");
    std::fs::write(&conf, test_config(dir.path(), "")).map_err(|e| e.to_string())?;
    let k = Kilnd::try_start(Start {
        config: Some(conf),
        state_dir: Some(dir.path().join("state")),
        socket: Some(dir.path().join("kiln.sock")),
        ..Default::default()
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let out_dir = dir.path().join("marks");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut c = JobsClient::new(crate::infer::channel(&k.socket).await?);
        let mut lat = Vec::new();
        let mut rpc = Vec::new();
        for i in 0..runs + 3 {
            let mark = out_dir.join(format!("{i}"));
            let spec = JobSpec {
                argv: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("date +%s%N > {}", mark.display()),
                ],
                memory_bytes: 16 << 20,
                name: "bench".into(),
                ..Default::default()
            };
            let t0 = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| e.to_string())?;
            let i0 = Instant::now();
            let j = c
                .submit(SubmitJobRequest { spec: Some(spec) })
                .await
                .map_err(|e| format!("submit: {}", e.message()))?
                .into_inner();
            let rpc_ms = i0.elapsed().as_secs_f64() * 1000.0;
            if j.state != "running" && j.state != "succeeded" {
                return Err(format!("job {} is {}: {}", j.id, j.state, j.detail));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            let started_ns: u128 = loop {
                if let Some(n) = std::fs::read_to_string(&mark)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    break n;
                }
                if Instant::now() > deadline {
                    return Err(format!("job {} never wrote its start mark", j.id));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            // Wait for the end so runs do not overlap.
            loop {
                let s = c
                    .get(GetJobRequest { id: j.id })
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                if matches!(s.state.as_str(), "succeeded" | "failed" | "cancelled") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if i >= 3 {
                lat.push((started_ns as f64 - t0.as_nanos() as f64) / 1e6);
                rpc.push(rpc_ms);
            }
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        rpc.sort_by(|a, b| a.total_cmp(b));
        Ok(Report {
            runs,
            p50: pct(&lat, 0.5),
            p99: pct(&lat, 0.99),
            max: *lat.last().unwrap_or(&0.0),
            rpc_p50: pct(&rpc, 0.5),
        })
    })
}

impl Report {
    pub fn json(&self) -> String {
        json!({
            "runs": self.runs,
            "submit_to_running_p50_ms": self.p50,
            "submit_to_running_p99_ms": self.p99,
            "submit_to_running_max_ms": self.max,
            "submit_rpc_p50_ms": self.rpc_p50,
            "goal_ms": GOAL_MS,
            "p99_ratio_to_goal": self.p99 / GOAL_MS,
        })
        .to_string()
    }

    pub fn table(&self) -> String {
        format!(
            "jobs: submit → job process running, {} runs\n  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (goal ≤ {GOAL_MS} ms; p99/goal {:.2})\n  Submit RPC (returns once running) p50 {:.2} ms",
            self.runs,
            self.p50,
            self.p99,
            self.max,
            self.p99 / GOAL_MS,
            self.rpc_p50
        )
    }
}
