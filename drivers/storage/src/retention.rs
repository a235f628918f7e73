//! Retention grid (sanoid/zrepl style): keep the newest `keep_last` snapshots plus the
//! newest snapshot in each of the last N hourly, daily and weekly UTC buckets. Pure
//! function of the snapshot times and `now`; touches nothing.

use std::collections::BTreeSet;

use crate::RetentionConfig;

/// Why (or whether) one snapshot survives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub name: String,
    pub created: i64,
    /// Empty means the grid does not keep it.
    pub reasons: Vec<String>,
}

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

fn bucket(period: &str, t: i64) -> i64 {
    match period {
        "hourly" => t.div_euclid(HOUR),
        "daily" => t.div_euclid(DAY),
        // 1970-01-01 was a Thursday; shift so weeks start on Monday.
        _ => (t.div_euclid(DAY) + 3).div_euclid(7),
    }
}

/// Decide for every `(name, created)`, given oldest first, which grid rules keep it.
/// Output is newest first.
pub fn plan(snaps: &[(String, i64)], cfg: &RetentionConfig, now: i64) -> Vec<Decision> {
    let mut out: Vec<Decision> = snaps
        .iter()
        .rev()
        .map(|(n, t)| Decision {
            name: n.clone(),
            created: *t,
            reasons: Vec::new(),
        })
        .collect();
    // Newest first; snapshots of the same second keep their creation order (stable sort).
    out.sort_by_key(|d| std::cmp::Reverse(d.created));
    for (i, d) in out.iter_mut().enumerate() {
        if (i as u32) < cfg.keep_last {
            d.reasons.push(format!("last {}", cfg.keep_last));
        }
        if d.created > now {
            d.reasons.push("newer than now".into());
        }
    }
    for (period, count) in [
        ("hourly", cfg.hourly),
        ("daily", cfg.daily),
        ("weekly", cfg.weekly),
    ] {
        if count == 0 {
            continue;
        }
        let current = bucket(period, now);
        let mut taken = BTreeSet::new();
        for d in out.iter_mut().filter(|d| d.created <= now) {
            let b = bucket(period, d.created);
            if current - b < i64::from(count) && taken.insert(b) {
                d.reasons.push(format!("{period} {}", current - b));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(keep_last: u32, hourly: u32, daily: u32, weekly: u32) -> RetentionConfig {
        RetentionConfig {
            keep_last,
            hourly,
            daily,
            weekly,
        }
    }

    fn kept(d: &[Decision]) -> Vec<&str> {
        d.iter()
            .filter(|d| !d.reasons.is_empty())
            .map(|d| d.name.as_str())
            .collect()
    }

    // 2026-11-16 00:00:00 UTC is a Monday.
    const MON: i64 = 1_794_787_200;

    #[test]
    fn keep_last_only() {
        let s: Vec<_> = (0..5).map(|i| (format!("s{i}"), MON + i * 60)).collect();
        let d = plan(&s, &cfg(2, 0, 0, 0), MON + 3600);
        assert_eq!(kept(&d), ["s4", "s3"]);
    }

    #[test]
    fn hourly_keeps_newest_per_hour_within_window() {
        // Two snapshots in each of hours 0..4 of Monday; now is 04:30.
        let mut s = Vec::new();
        for h in 0..5 {
            s.push((format!("h{h}a"), MON + h * HOUR + 60));
            s.push((format!("h{h}b"), MON + h * HOUR + 120));
        }
        let d = plan(&s, &cfg(0, 3, 0, 0), MON + 4 * HOUR + 1800);
        assert_eq!(kept(&d), ["h4b", "h3b", "h2b"]);
    }

    #[test]
    fn daily_and_weekly_grid() {
        // One snapshot at noon every day for 30 days ending on day 29.
        let s: Vec<_> = (0..30)
            .map(|day| (format!("d{day:02}"), MON - 29 * DAY + day * DAY + 12 * HOUR))
            .collect();
        let now = MON + 13 * HOUR; // Monday 13:00, newest is d29 (Monday noon)
        let d = plan(&s, &cfg(1, 0, 3, 3), now);
        // daily: d29, d28, d27; weekly buckets: this week (d29), last week (Sun d28),
        // the week before (Sun d21).
        assert_eq!(kept(&d), ["d29", "d28", "d27", "d21"]);
        let d29 = d.iter().find(|x| x.name == "d29").unwrap();
        assert!(d29.reasons.iter().any(|r| r.starts_with("last")));
        assert!(d29.reasons.iter().any(|r| r.starts_with("daily")));
        assert!(d29.reasons.iter().any(|r| r.starts_with("weekly")));
    }

    #[test]
    fn same_second_snapshots_keep_their_creation_order() {
        // Made in this order within one second; by name "ckpt-10" would sort first.
        let s: Vec<_> = ["ckpt-9", "ckpt-10", "ckpt-11"]
            .iter()
            .map(|n| (n.to_string(), MON))
            .collect();
        let d = plan(&s, &cfg(1, 0, 0, 0), MON + 60);
        assert_eq!(kept(&d), ["ckpt-11"]);
        let order: Vec<&str> = d.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(order, ["ckpt-11", "ckpt-10", "ckpt-9"]);
    }

    #[test]
    fn future_snapshots_are_kept_and_empty_input_is_fine() {
        let d = plan(&[("f".into(), MON + DAY)], &cfg(0, 0, 0, 0), MON);
        assert_eq!(kept(&d), ["f"]);
        assert!(plan(&[], &cfg(3, 3, 3, 3), MON).is_empty());
    }
}
