//! Utilisation sampling: the state kept between samples and the deltas computed from it.
//!
//! Reads `npu_busy_time_us` / `npu_memory_utilization` (at most once a second per NPU),
//! GPU RC6/idle residency and `proc/stat` below the root.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::Inventory;
use crate::accel::read_counter;
use crate::device::{Health, Utilisation};
use crate::tree::{Fault, Node, Tree};

/// The kernel documents `npu_busy_time_us` as not to be polled faster than this.
pub(crate) const NPU_MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct NpuState {
    read_at: Instant,
    busy_us: u64,
    busy_percent: Option<f64>,
    memory: Option<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    npu: HashMap<String, NpuState>,
    gpu: HashMap<String, (Instant, u64)>,
    /// Per-CPU (busy, total) jiffies from the previous sample.
    cpu: Option<BTreeMap<usize, (u64, u64)>>,
}

fn add_fault(health: &mut Health, f: Fault) {
    let mut faults = match std::mem::replace(health, Health::Ok) {
        Health::Ok => Vec::new(),
        Health::Degraded { problems } => problems.into_iter().map(Fault::Bad).collect(),
        g @ Health::Gone { .. } => {
            *health = g;
            return;
        }
    };
    faults.push(f);
    *health = Health::from_faults(faults);
}

fn percent(delta: f64, span: f64) -> Option<f64> {
    (span > 0.0).then(|| (delta / span * 100.0).clamp(0.0, 100.0))
}

impl State {
    pub(crate) fn apply(&mut self, tree: &Tree, inv: &mut Inventory, now: Instant) {
        for npu in inv
            .npus
            .iter_mut()
            .filter(|n| !matches!(n.health, Health::Gone { .. }))
        {
            let prev = self.npu.get(&npu.id).cloned();
            if let Some(p) = prev
                .as_ref()
                .filter(|p| now.saturating_duration_since(p.read_at) < NPU_MIN_INTERVAL)
            {
                npu.utilisation = Some(Utilisation {
                    busy_percent: p.busy_percent,
                    memory_used_bytes: p.memory,
                    freq_mhz: None,
                });
                continue;
            }
            let dev = Node::at(&npu.dev_dir);
            let busy = match dev.u64("npu_busy_time_us") {
                Ok(b) => b,
                Err(f) => {
                    add_fault(&mut npu.health, f);
                    self.npu.remove(&npu.id);
                    continue;
                }
            };
            let memory = dev.opt_u64("npu_memory_utilization").unwrap_or_else(|f| {
                add_fault(&mut npu.health, f);
                None
            });
            let busy_percent = prev.filter(|p| busy >= p.busy_us).and_then(|p| {
                percent(
                    (busy - p.busy_us) as f64,
                    now.saturating_duration_since(p.read_at).as_micros() as f64,
                )
            });
            self.npu.insert(
                npu.id.clone(),
                NpuState {
                    read_at: now,
                    busy_us: busy,
                    busy_percent,
                    memory,
                },
            );
            npu.utilisation = Some(Utilisation {
                busy_percent,
                memory_used_bytes: memory,
                freq_mhz: None,
            });
        }
        self.npu
            .retain(|id, _| inv.npus.iter().any(|n| &n.id == id));

        for gpu in inv.gpus.iter_mut() {
            let freq_mhz = gpu.freq.as_ref().and_then(|f| f.act_mhz.or(f.cur_mhz));
            let mut busy_percent = None;
            if let Some(file) = &gpu.idle_ms_file {
                match read_counter(file) {
                    Ok(idle) => {
                        if let Some((t, prev)) = self.gpu.get(&gpu.id).copied()
                            && idle >= prev
                        {
                            let span = now.saturating_duration_since(t).as_millis() as f64;
                            busy_percent = percent(span - (idle - prev) as f64, span);
                        }
                        self.gpu.insert(gpu.id.clone(), (now, idle));
                    }
                    Err(f) => {
                        add_fault(&mut gpu.health, f);
                        self.gpu.remove(&gpu.id);
                    }
                }
            }
            gpu.utilisation = Some(Utilisation {
                busy_percent,
                memory_used_bytes: None,
                freq_mhz,
            });
        }
        self.gpu
            .retain(|id, _| inv.gpus.iter().any(|g| &g.id == id));

        let stat = crate::cpu::read_stat(tree);
        if let Some(prev) = &self.cpu {
            for c in inv.cpus.list.iter_mut() {
                if let (Some(&(b0, t0)), Some(&(b1, t1))) = (prev.get(&c.id), stat.get(&c.id))
                    && t1 > t0
                    && b1 >= b0
                {
                    c.busy_percent = percent((b1 - b0) as f64, (t1 - t0) as f64);
                }
            }
        }
        if !stat.is_empty() {
            self.cpu = Some(stat);
        }
    }
}
