//! The UMA budget rule: how much of the shared memory GPU/NPU work may reserve.
//!
//! Pure computation over numbers the memory probe found; touches no files. The daemon
//! embeds [`BudgetPolicy`] as its `[budget]` config table.
//!
//! The rule: `base = min(MemTotal, cgroup memory limit)`. For each mode,
//! `budget = fixed bytes if set, else fraction × base`, then capped at
//! `base − reserve_bytes` (memory always left to the OS and the daemon) and rounded
//! down to a multiple of `granularity_bytes`. The defaults reproduce the Latitude 5450
//! policy: of 62.26 GiB, 0.771 gives 48 GiB (conservative) and 0.836 gives 52 GiB
//! (aggressive); a 16 GiB machine gets 12.25 / 13.25 GiB.

use serde::{Deserialize, Serialize};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Which budget the daemon enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetMode {
    /// Leaves generous headroom for the desktop and page cache.
    #[default]
    Conservative,
    /// Gives accelerators more of the shared memory.
    Aggressive,
}

/// The `[budget]` config table. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetPolicy {
    /// `"conservative"` (default) or `"aggressive"`.
    pub mode: BudgetMode,
    /// Share of the base memory for the conservative budget, in (0, 1]. Default 0.771.
    pub conservative_fraction: f64,
    /// Share of the base memory for the aggressive budget, in (0, 1]. Default 0.836.
    pub aggressive_fraction: f64,
    /// Fixed conservative budget in bytes; overrides the fraction when set.
    pub conservative_bytes: Option<u64>,
    /// Fixed aggressive budget in bytes; overrides the fraction when set.
    pub aggressive_bytes: Option<u64>,
    /// Memory never budgeted, left to the OS and the daemon. Default 2 GiB.
    pub reserve_bytes: u64,
    /// Budgets are rounded down to a multiple of this. Default 256 MiB.
    pub granularity_bytes: u64,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy {
            mode: BudgetMode::Conservative,
            conservative_fraction: 0.771,
            aggressive_fraction: 0.836,
            conservative_bytes: None,
            aggressive_bytes: None,
            reserve_bytes: 2 * GIB,
            granularity_bytes: 256 * MIB,
        }
    }
}

/// The computed budgets, as reported in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// The mode in force; `budget_bytes` in the memory section is this mode's figure.
    pub mode: BudgetMode,
    /// `min(MemTotal, cgroup limit)`: what the fractions apply to.
    pub base_bytes: u64,
    pub conservative_bytes: u64,
    pub aggressive_bytes: u64,
}

impl BudgetPolicy {
    /// Checks the values; the message names the bad field and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("conservative_fraction", self.conservative_fraction),
            ("aggressive_fraction", self.aggressive_fraction),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!(
                    "[budget] {name} = {v} is out of range: use a fraction of total memory in (0, 1], e.g. 0.771"
                ));
            }
        }
        if self.conservative_fraction > self.aggressive_fraction {
            return Err(format!(
                "[budget] conservative_fraction ({}) is larger than aggressive_fraction ({}): the conservative budget must not exceed the aggressive one",
                self.conservative_fraction, self.aggressive_fraction
            ));
        }
        for (name, v) in [
            ("conservative_bytes", self.conservative_bytes),
            ("aggressive_bytes", self.aggressive_bytes),
        ] {
            if v == Some(0) {
                return Err(format!(
                    "[budget] {name} = 0 would forbid all accelerator work: remove it to use the fraction, or give a size in bytes"
                ));
            }
        }
        if let (Some(c), Some(a)) = (self.conservative_bytes, self.aggressive_bytes)
            && c > a
        {
            return Err(format!(
                "[budget] conservative_bytes ({c}) is larger than aggressive_bytes ({a}): the conservative budget must not exceed the aggressive one"
            ));
        }
        if self.granularity_bytes == 0 {
            return Err(
                "[budget] granularity_bytes = 0 is invalid: use a positive size such as 268435456 (256 MiB)"
                    .to_string(),
            );
        }
        Ok(())
    }

    /// Applies the rule to `total_bytes` (MemTotal) and an optional cgroup limit.
    pub fn compute(&self, total_bytes: u64, cgroup_limit: Option<u64>) -> Budget {
        let base = cgroup_limit.map_or(total_bytes, |l| l.min(total_bytes));
        let cap = base.saturating_sub(self.reserve_bytes);
        let gran = self.granularity_bytes.max(1);
        let one = |fixed: Option<u64>, fraction: f64| {
            let want = fixed.unwrap_or_else(|| (base as f64 * fraction.clamp(0.0, 1.0)) as u64);
            let b = want.min(cap);
            b - b % gran
        };
        Budget {
            mode: self.mode,
            base_bytes: base,
            conservative_bytes: one(self.conservative_bytes, self.conservative_fraction),
            aggressive_bytes: one(self.aggressive_bytes, self.aggressive_fraction),
        }
    }
}

impl Budget {
    /// The figure for the mode in force.
    pub fn in_force(&self) -> u64 {
        match self.mode {
            BudgetMode::Conservative => self.conservative_bytes,
            BudgetMode::Aggressive => self.aggressive_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMTOTAL_5450: u64 = 65_284_668 * 1024;

    #[test]
    fn defaults_reproduce_the_5450_policy() {
        let b = BudgetPolicy::default().compute(MEMTOTAL_5450, None);
        assert_eq!(b.conservative_bytes, 48 * GIB);
        assert_eq!(b.aggressive_bytes, 52 * GIB);
        assert_eq!(b.in_force(), 48 * GIB);
    }

    #[test]
    fn scales_with_memory_and_cgroup_limit() {
        let p = BudgetPolicy::default();
        let b = p.compute(16 * GIB, None);
        assert_eq!(b.conservative_bytes, 12 * GIB + 256 * MIB);
        assert_eq!(b.aggressive_bytes, 13 * GIB + 256 * MIB);
        // A cgroup limit below MemTotal is the base.
        let b = p.compute(MEMTOTAL_5450, Some(8 * GIB));
        assert_eq!(b.base_bytes, 8 * GIB);
        assert_eq!(b.conservative_bytes, 6 * GIB);
        // The reserve caps a fraction of 1.
        let all = BudgetPolicy {
            conservative_fraction: 1.0,
            aggressive_fraction: 1.0,
            ..p
        };
        assert_eq!(all.compute(16 * GIB, None).aggressive_bytes, 14 * GIB);
        // Tiny machines get zero rather than underflow.
        assert_eq!(p.compute(GIB, None).aggressive_bytes, 0);
    }

    #[test]
    fn fixed_bytes_override_fractions() {
        let p = BudgetPolicy {
            conservative_bytes: Some(40 * GIB),
            mode: BudgetMode::Aggressive,
            ..BudgetPolicy::default()
        };
        let b = p.compute(MEMTOTAL_5450, None);
        assert_eq!(b.conservative_bytes, 40 * GIB);
        assert_eq!(b.in_force(), 52 * GIB);
    }

    #[test]
    fn validate_names_the_bad_field() {
        let bad = |p: BudgetPolicy| p.validate().unwrap_err();
        let d = BudgetPolicy::default;
        assert!(
            bad(BudgetPolicy {
                conservative_fraction: 0.0,
                ..d()
            })
            .contains("conservative_fraction")
        );
        assert!(
            bad(BudgetPolicy {
                aggressive_fraction: 1.5,
                ..d()
            })
            .contains("(0, 1]")
        );
        assert!(
            bad(BudgetPolicy {
                aggressive_fraction: f64::NAN,
                ..d()
            })
            .contains("aggressive_fraction")
        );
        assert!(
            bad(BudgetPolicy {
                conservative_fraction: 0.9,
                ..d()
            })
            .contains("larger than")
        );
        assert!(
            bad(BudgetPolicy {
                granularity_bytes: 0,
                ..d()
            })
            .contains("granularity_bytes")
        );
        assert!(
            bad(BudgetPolicy {
                aggressive_bytes: Some(0),
                ..d()
            })
            .contains("aggressive_bytes")
        );
        assert!(
            bad(BudgetPolicy {
                conservative_bytes: Some(9),
                aggressive_bytes: Some(8),
                ..d()
            })
            .contains("conservative_bytes")
        );
        assert_eq!(d().validate(), Ok(()));
    }

    #[test]
    fn config_table_parses_and_rejects_unknown_keys() {
        #[derive(Deserialize)]
        struct Cfg {
            budget: BudgetPolicy,
        }
        let c: Cfg =
            toml::from_str("[budget]\nmode = \"aggressive\"\naggressive_fraction = 0.9\n").unwrap();
        assert_eq!(c.budget.mode, BudgetMode::Aggressive);
        assert_eq!(c.budget.aggressive_fraction, 0.9);
        assert_eq!(c.budget.conservative_fraction, 0.771);
        let err = toml::from_str::<Cfg>("[budget]\nconservative_fracton = 0.5\n")
            .err()
            .unwrap();
        assert!(err.to_string().contains("conservative_fracton"), "{err}");
        let err = toml::from_str::<Cfg>("[budget]\nmode = \"yolo\"\n")
            .err()
            .unwrap();
        assert!(err.to_string().contains("yolo"), "{err}");
    }
}
