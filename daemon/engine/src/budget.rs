//! The UMA budget ledger. CPU, iGPU and NPU share one memory pool; every
//! model load, job and batch holds a `Reservation` against the budget the
//! HAL computed. A reservation that does not fit, or that arrives while
//! memory pressure (PSI) is high, is refused with the numbers. Releasing is
//! tied to `Drop`, so each reservation is returned exactly once, on error
//! paths too. Pure bookkeeping: reads nothing, touches nothing.

use crate::error::EngineError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

const GIB: f64 = (1u64 << 30) as f64;

/// Bytes as GiB with two decimals, for messages.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB)
}

/// Why the ledger refused a reservation, with the numbers. Callers branch on the variant;
/// the message (Display) is for people.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// PSI memory pressure is above `[admission] max_memory_pressure`: retry later.
    Pressure {
        owner: String,
        bytes: u64,
        pressure: f64,
        max: f64,
    },
    /// Not enough of the budget is free (`free` of `budget`, `reserved` held).
    Budget {
        owner: String,
        bytes: u64,
        budget: u64,
        reserved: u64,
        free: u64,
    },
    /// An existing reservation cannot grow to `bytes`.
    Grow {
        owner: String,
        bytes: u64,
        extra: u64,
        free: u64,
        budget: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Pressure {
                owner,
                bytes,
                pressure,
                max,
            } => write!(
                f,
                "cannot reserve {} for {owner}: memory pressure is high (PSI some avg10 {pressure:.1}% > {max:.1}%); retry when the machine is less loaded",
                gib(*bytes)
            ),
            Refusal::Budget {
                owner,
                bytes,
                budget,
                reserved,
                free,
            } => write!(
                f,
                "cannot reserve {} for {owner}: the UMA budget is {}, {} is reserved, {} is free; unload a model or wait for a job to finish, or raise the budget ([budget] mode = \"aggressive\")",
                gib(*bytes),
                gib(*budget),
                gib(*reserved),
                gib(*free)
            ),
            Refusal::Grow {
                owner,
                bytes,
                extra,
                free,
                budget,
            } => write!(
                f,
                "cannot grow the reservation of {owner} to {}: {} more needed, {} free of the {} budget",
                gib(*bytes),
                gib(*extra),
                gib(*free),
                gib(*budget)
            ),
        }
    }
}

impl From<Refusal> for EngineError {
    fn from(r: Refusal) -> EngineError {
        EngineError::exhausted(r.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReservationInfo {
    pub id: u64,
    pub owner: String,
    pub bytes: u64,
    pub since: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetStatus {
    pub budget_bytes: u64,
    pub reserved_bytes: u64,
    pub free_bytes: u64,
    /// PSI memory `some avg10`, percent, when the kernel reports it.
    pub pressure_some_avg10: Option<f64>,
    /// Above this pressure new reservations are refused.
    pub max_pressure: f64,
    pub reservations: Vec<ReservationInfo>,
}

struct State {
    budget: u64,
    pressure: Option<f64>,
    max_pressure: f64,
    next_id: u64,
    held: BTreeMap<u64, ReservationInfo>,
}

impl State {
    fn reserved(&self) -> u64 {
        self.held.values().map(|r| r.bytes).sum()
    }
}

struct Shared {
    state: Mutex<State>,
    freed: tokio::sync::Notify,
}

/// Cheap to clone; clones share one ledger.
#[derive(Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
}

/// Memory held against the budget until dropped.
pub struct Reservation {
    id: u64,
    bytes: u64,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reservation(#{} {} bytes)", self.id, self.bytes)
    }
}

impl Ledger {
    pub fn new(budget_bytes: u64, max_pressure: f64) -> Ledger {
        Ledger {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    budget: budget_bytes,
                    pressure: None,
                    max_pressure,
                    next_id: 1,
                    held: BTreeMap::new(),
                }),
                freed: tokio::sync::Notify::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New budget (the HAL recomputed it, or config changed). Existing
    /// reservations stay; new ones see the new figure.
    pub fn set_budget(&self, bytes: u64) {
        self.lock().budget = bytes;
        self.shared.freed.notify_waiters();
    }

    pub fn set_pressure(&self, some_avg10: Option<f64>) {
        let mut s = self.lock();
        let was_high = s.pressure.is_some_and(|p| p > s.max_pressure);
        s.pressure = some_avg10;
        let high = s.pressure.is_some_and(|p| p > s.max_pressure);
        drop(s);
        if was_high && !high {
            self.shared.freed.notify_waiters();
        }
    }

    pub fn set_max_pressure(&self, max: f64) {
        self.lock().max_pressure = max;
    }

    /// Reserve `bytes` for `owner` (e.g. "model minilm v1", "job 42").
    pub fn reserve(&self, owner: &str, bytes: u64) -> Result<Reservation, Refusal> {
        let mut s = self.lock();
        if let Some(p) = s.pressure.filter(|p| *p > s.max_pressure) {
            return Err(Refusal::Pressure {
                owner: owner.into(),
                bytes,
                pressure: p,
                max: s.max_pressure,
            });
        }
        let reserved = s.reserved();
        let free = s.budget.saturating_sub(reserved);
        if bytes > free {
            return Err(Refusal::Budget {
                owner: owner.into(),
                bytes,
                budget: s.budget,
                reserved,
                free,
            });
        }
        let id = s.next_id;
        s.next_id += 1;
        let since = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        s.held.insert(
            id,
            ReservationInfo {
                id,
                owner: owner.into(),
                bytes,
                since,
            },
        );
        Ok(Reservation {
            id,
            bytes,
            shared: self.shared.clone(),
        })
    }

    /// Wait until some memory is released (or the budget or pressure changes).
    pub async fn changed(&self) {
        self.shared.freed.notified().await
    }

    pub fn free_bytes(&self) -> u64 {
        let s = self.lock();
        s.budget.saturating_sub(s.reserved())
    }

    pub fn status(&self) -> BudgetStatus {
        let s = self.lock();
        let reserved = s.reserved();
        BudgetStatus {
            budget_bytes: s.budget,
            reserved_bytes: reserved,
            free_bytes: s.budget.saturating_sub(reserved),
            pressure_some_avg10: s.pressure,
            max_pressure: s.max_pressure,
            reservations: s.held.values().cloned().collect(),
        }
    }

    /// The largest batch whose `per_sample_bytes` fit in the free budget,
    /// clamped to `[min, max]`; `None` when not even `min` fits.
    pub fn batch_size(&self, per_sample_bytes: u64, min: usize, max: usize) -> Option<usize> {
        let free = self.free_bytes();
        let fit = free
            .checked_div(per_sample_bytes)
            .map_or(max, |n| n as usize);
        (fit >= min).then(|| fit.min(max))
    }
}

impl Reservation {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Change the amount held (e.g. corrected by a measured delta). Growing
    /// may be refused; shrinking always succeeds.
    pub fn resize(&mut self, bytes: u64) -> Result<(), Refusal> {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if bytes > self.bytes {
            let free = s.budget.saturating_sub(s.reserved());
            let extra = bytes - self.bytes;
            if extra > free {
                let owner = s
                    .held
                    .get(&self.id)
                    .map(|r| r.owner.clone())
                    .unwrap_or_default();
                return Err(Refusal::Grow {
                    owner,
                    bytes,
                    extra,
                    free,
                    budget: s.budget,
                });
            }
        }
        if let Some(r) = s.held.get_mut(&self.id) {
            r.bytes = bytes;
        }
        let shrank = bytes < self.bytes;
        self.bytes = bytes;
        drop(s);
        if shrank {
            self.shared.freed.notify_waiters();
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        s.held.remove(&self.id);
        drop(s);
        self.shared.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    #[test]
    fn reserve_until_full_then_refuse_with_numbers_and_release_on_drop() {
        let l = Ledger::new(10 * G, 50.0);
        let a = l.reserve("model a", 6 * G).unwrap();
        let e = l.reserve("model b", 5 * G).unwrap_err();
        assert_eq!(
            e,
            Refusal::Budget {
                owner: "model b".into(),
                bytes: 5 * G,
                budget: 10 * G,
                reserved: 6 * G,
                free: 4 * G
            }
        );
        let e = EngineError::from(e);
        assert_eq!(e.kind, crate::ErrorKind::ResourceExhausted);
        assert!(
            e.message.contains("model b")
                && e.message.contains("10.00 GiB")
                && e.message.contains("4.00 GiB is free"),
            "{}",
            e.message
        );
        assert_eq!(l.status().reserved_bytes, 6 * G);
        drop(a);
        assert_eq!(l.status().reserved_bytes, 0);
        let _b = l.reserve("model b", 5 * G).unwrap();
        assert_eq!(l.status().reservations.len(), 1);
    }

    #[test]
    fn released_exactly_once_even_when_a_later_step_fails() {
        fn load_then_fail(l: &Ledger) -> Result<Reservation, EngineError> {
            let _held = l.reserve("load", 3 * G)?;
            // A later step of the load fails: the reservation drops here.
            Err(EngineError::internal("compile failed"))
        }
        let l = Ledger::new(4 * G, 50.0);
        assert!(load_then_fail(&l).is_err());
        assert_eq!(l.free_bytes(), 4 * G);
        assert!(l.status().reservations.is_empty());
    }

    #[test]
    fn high_pressure_refuses_new_reservations() {
        let l = Ledger::new(4 * G, 20.0);
        l.set_pressure(Some(35.0));
        let e = l.reserve("job", 1).unwrap_err();
        assert!(
            matches!(e, Refusal::Pressure { pressure, max, .. } if pressure == 35.0 && max == 20.0)
        );
        assert!(e.to_string().contains("pressure"), "{e}");
        l.set_pressure(Some(5.0));
        assert!(l.reserve("job", 1).is_ok());
    }

    #[test]
    fn resize_grows_within_budget_and_shrinks_freely() {
        let l = Ledger::new(4 * G, 50.0);
        let mut r = l.reserve("model", G).unwrap();
        r.resize(3 * G).unwrap();
        assert!(r.resize(5 * G).is_err());
        assert_eq!(l.status().reserved_bytes, 3 * G);
        r.resize(G / 2).unwrap();
        assert_eq!(l.free_bytes(), 4 * G - G / 2);
    }

    #[test]
    fn batch_size_fits_free_budget_within_range() {
        let l = Ledger::new(G, 50.0);
        assert_eq!(l.batch_size(G / 100, 2, 64), Some(64));
        let _r = l.reserve("x", G - 10 * (G / 100)).unwrap();
        assert_eq!(l.batch_size(G / 100, 2, 64), Some(10));
        assert_eq!(l.batch_size(G / 4, 2, 64), None);
    }

    #[tokio::test]
    async fn waiters_wake_when_memory_is_freed() {
        let l = Ledger::new(G, 50.0);
        let r = l.reserve("x", G).unwrap();
        let l2 = l.clone();
        let waiter = tokio::spawn(async move {
            loop {
                if let Ok(r) = l2.reserve("y", G) {
                    return r.bytes();
                }
                l2.changed().await;
            }
        });
        tokio::task::yield_now().await;
        drop(r);
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
                .await
                .unwrap()
                .unwrap(),
            G
        );
    }
}
