//! `kiln-bench startup`: start the kilnd built beside this binary the way
//! systemd does (NOTIFY_SOCKET), time spawn→READY=1, then read its resident
//! memory after it has idled for a second. Reports medians over several runs.

use kiln_tests::{Kilnd, Start, bin};
use serde_json::json;
use std::time::Duration;

const GOAL_READY_MS: f64 = 500.0;
const GOAL_RSS_BYTES: u64 = 40 * 1024 * 1024;

pub struct Report {
    kilnd: String,
    runs: usize,
    ready_ms: f64,
    ready_ms_max: f64,
    idle_rss_bytes: u64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rss_bytes(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read status of {pid}: {e}"))?;
    let kb = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("no VmRSS line")?;
    Ok(kb * 1024)
}

pub fn run(runs: usize) -> Result<Report, String> {
    let runs = runs.max(1);
    let kilnd = bin("kilnd");
    let mut ready = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let mut k = Kilnd::try_start(Start::default())?;
        ready.push(k.ready_after.as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_secs(1));
        rss.push(rss_bytes(k.child.id())? as f64);
        k.signal(nix::sys::signal::Signal::SIGTERM);
        match k.wait_exit(Duration::from_secs(5)) {
            Some(s) if s.success() => {}
            other => {
                return Err(format!(
                    "kilnd did not stop cleanly: {other:?}\n{}",
                    k.stderr()
                ));
            }
        }
    }
    let ready_ms_max = ready.iter().cloned().fold(0.0, f64::max);
    Ok(Report {
        kilnd: kilnd.display().to_string(),
        runs,
        ready_ms: median(&mut ready),
        ready_ms_max,
        idle_rss_bytes: median(&mut rss) as u64,
    })
}

impl Report {
    pub fn json(&self) -> String {
        json!({
            "kilnd": self.kilnd,
            "runs": self.runs,
            "ready_ms": self.ready_ms,
            "ready_ms_max": self.ready_ms_max,
            "idle_rss_bytes": self.idle_rss_bytes,
            "goal_ready_ms": GOAL_READY_MS,
            "goal_idle_rss_bytes": GOAL_RSS_BYTES,
            "ready_ratio_to_goal": self.ready_ms / GOAL_READY_MS,
            "rss_ratio_to_goal": self.idle_rss_bytes as f64 / GOAL_RSS_BYTES as f64,
        })
        .to_string()
    }

    pub fn table(&self) -> String {
        format!(
            "kilnd: {}\nruns: {}\nstart→READY   median {:>8.1} ms  (max {:.1})   goal ≤ {} ms   ratio {:.2}\nidle RSS      median {:>8.1} MiB               goal ≤ {} MiB    ratio {:.2}",
            self.kilnd,
            self.runs,
            self.ready_ms,
            self.ready_ms_max,
            GOAL_READY_MS,
            self.ready_ms / GOAL_READY_MS,
            self.idle_rss_bytes as f64 / 1048576.0,
            GOAL_RSS_BYTES / 1048576,
            self.idle_rss_bytes as f64 / GOAL_RSS_BYTES as f64
        )
    }
}
