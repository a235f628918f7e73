//! The job queue: priority order (higher first, then submission order) with
//! budget-aware admission. The caller decides whether a job can start now through
//! [`Admission`], so this module knows nothing about the engine's ledger. Pure data.

use std::collections::BTreeMap;

/// The caller's answer for one queued job.
pub enum Admit<T> {
    /// Start it; `T` is what admission produced (e.g. the memory reservation).
    Start(T),
    /// Not now; the reason is shown as the job's state ("queued: waiting for 8.00 GiB").
    Wait(String),
}

/// One waiting job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: u64,
    pub priority: i32,
    pub memory_bytes: u64,
    /// Why it is still waiting (updated on each admission pass).
    pub waiting_for: String,
}

/// Priority queue keyed by (-priority, submission sequence).
#[derive(Debug, Default)]
pub struct JobQueue {
    seq: u64,
    items: BTreeMap<(i64, u64), Queued>,
}

impl JobQueue {
    pub fn new() -> JobQueue {
        JobQueue::default()
    }

    pub fn push(&mut self, id: u64, priority: i32, memory_bytes: u64) {
        self.seq += 1;
        self.items.insert(
            (-(priority as i64), self.seq),
            Queued {
                id,
                priority,
                memory_bytes,
                waiting_for: "queued".into(),
            },
        );
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let key = self.items.iter().find(|(_, q)| q.id == id).map(|(k, _)| *k);
        key.and_then(|k| self.items.remove(&k)).is_some()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Waiting jobs in the order they would be tried.
    pub fn waiting(&self) -> Vec<Queued> {
        self.items.values().cloned().collect()
    }

    /// One admission pass in priority order. A job that fits starts; one that does
    /// not stays queued with its reason and, so that big jobs are not starved, blocks
    /// every lower-priority job (equal priority may still backfill).
    pub fn admit<T>(&mut self, mut decide: impl FnMut(&Queued) -> Admit<T>) -> Vec<(u64, T)> {
        let mut started = Vec::new();
        let mut blocked_below: Option<i32> = None;
        let keys: Vec<(i64, u64)> = self.items.keys().copied().collect();
        for k in keys {
            let Some(q) = self.items.get_mut(&k) else {
                continue;
            };
            if let Some(p) = blocked_below
                && q.priority < p
            {
                q.waiting_for = "queued: behind a higher-priority job".into();
                continue;
            }
            match decide(q) {
                Admit::Start(t) => {
                    let id = q.id;
                    self.items.remove(&k);
                    started.push((id, t));
                }
                Admit::Wait(why) => {
                    q.waiting_for = why;
                    blocked_below.get_or_insert(q.priority);
                }
            }
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admission against a simple free-bytes counter.
    fn pass(q: &mut JobQueue, free: &mut u64) -> Vec<u64> {
        q.admit(|j| {
            if j.memory_bytes <= *free {
                *free -= j.memory_bytes;
                Admit::Start(())
            } else {
                Admit::Wait(format!("queued: waiting for {} bytes", j.memory_bytes))
            }
        })
        .into_iter()
        .map(|(id, _)| id)
        .collect()
    }

    #[test]
    fn priority_then_fifo_and_waits_for_memory() {
        let mut q = JobQueue::new();
        q.push(1, 0, 4);
        q.push(2, 10, 4);
        q.push(3, 0, 4);
        let mut free = 8;
        assert_eq!(pass(&mut q, &mut free), vec![2, 1]);
        assert_eq!(q.waiting()[0].id, 3);
        assert!(q.waiting()[0].waiting_for.contains("waiting for 4"));
        free += 4; // job 2 finished
        assert_eq!(pass(&mut q, &mut free), vec![3]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_big_job_blocks_lower_priority_but_not_equal() {
        let mut q = JobQueue::new();
        q.push(1, 5, 100);
        q.push(2, 5, 1);
        q.push(3, 0, 1);
        let mut free = 10;
        assert_eq!(pass(&mut q, &mut free), vec![2]);
        let w = q.waiting();
        assert_eq!(w.iter().map(|j| j.id).collect::<Vec<_>>(), vec![1, 3]);
        assert!(w[1].waiting_for.contains("higher-priority"));
        assert!(q.remove(1));
        assert!(!q.remove(1));
        assert_eq!(pass(&mut q, &mut free), vec![3]);
    }
}
