//! Pool health parsing: `zpool list` rows, the scrub line of `zpool status`, and ARC
//! figures from `<root>/proc/spl/kstat/zfs/arcstats` (OpenZFS) or the zfs-fuse kstat tree
//! `<root>/zfs-kstat/zfs/arcstats/`. Reads only those files; runs nothing.

use std::path::{Path, PathBuf};

use crate::parse_size;
pub use kiln_hal::ports::storage::{ArcStats, PoolHealth, ScrubStatus};

/// Parse one `zpool list -H -o name,size,allocated,free,capacity,health` row (sizes exact
/// with `-p`, or human like `1.08M` without it).
pub fn parse_pool_row(row: &[String], scrub: ScrubStatus) -> Result<PoolHealth, String> {
    if row.len() < 6 {
        return Err(format!("expected 6 fields, got {row:?}"));
    }
    let size = |s: &str| parse_size(s).map_err(|e| format!("size field: {e}"));
    Ok(PoolHealth {
        name: row[0].clone(),
        size_bytes: size(&row[1])?,
        allocated_bytes: size(&row[2])?,
        free_bytes: size(&row[3])?,
        capacity_percent: row[4]
            .trim_end_matches('%')
            .parse()
            .map_err(|_| format!("capacity field `{}` is not a percentage", row[4]))?,
        health: row[5].clone(),
        scrub,
    })
}

/// Find and parse the `scan:` / `scrub:` line of `zpool status` output.
pub fn parse_scrub(status: &str) -> ScrubStatus {
    let line = status
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("scan:") || l.starts_with("scrub:"))
        .unwrap_or("")
        .to_string();
    let text = line
        .split_once(':')
        .map(|(_, r)| r.trim())
        .unwrap_or("")
        .to_string();
    let errors = text
        .split(" with ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let when = text.rsplit_once(" on ").and_then(|(_, d)| parse_ctime(d));
    let state = if line.is_empty() {
        "unknown"
    } else if text.starts_with("none requested") {
        "none"
    } else if text.contains("in progress") {
        "in_progress"
    } else if text.contains("resilver") {
        "resilver"
    } else if text.contains("canceled") || text.contains("stopped") {
        "canceled"
    } else if text.contains("completed") || text.contains("repaired") {
        "finished"
    } else {
        "unknown"
    };
    ScrubStatus {
        state: state.into(),
        errors: if state == "finished" { errors } else { None },
        finished_at: if state == "finished" || state == "canceled" {
            when
        } else {
            None
        },
        line,
    }
}

/// Parse `Sat Nov 21 11:00:28 2026` (ctime format, local time) into unix seconds.
pub fn parse_ctime(s: &str) -> Option<i64> {
    let t: Vec<&str> = s.split_whitespace().collect();
    if t.len() != 5 {
        return None;
    }
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == t[1])?;
    let day: i32 = t[2].parse().ok()?;
    let hms: Vec<i32> = t[3]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let year: i32 = t[4].parse().ok()?;
    if hms.len() != 3 {
        return None;
    }
    // SAFETY: `tm` is a plain C struct fully initialised here; mktime only reads/normalises it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = year - 1900;
    tm.tm_mon = mon as i32;
    tm.tm_mday = day;
    tm.tm_hour = hms[0];
    tm.tm_min = hms[1];
    tm.tm_sec = hms[2];
    tm.tm_isdst = -1;
    // SAFETY: valid pointer to an initialised tm.
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(t)
}

type Lookup = Box<dyn Fn(&str) -> Option<u64>>;

/// Read ARC statistics under `root`, if either known location exists.
pub fn read_arcstats(root: &Path) -> Option<ArcStats> {
    let file = root.join("proc/spl/kstat/zfs/arcstats");
    let dir = root.join("zfs-kstat/zfs/arcstats");
    let (source, get): (PathBuf, Lookup) = if file.is_file() {
        let text = std::fs::read_to_string(&file).ok()?;
        let rows: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3).then(|| Some((f[0].to_string(), f[2].parse().ok()?)))?
            })
            .collect();
        (
            file,
            Box::new(move |k| rows.iter().find(|(n, _)| n == k).map(|(_, v)| *v)),
        )
    } else if dir.is_dir() {
        let d = dir.clone();
        (
            dir,
            Box::new(move |k| std::fs::read_to_string(d.join(k)).ok()?.trim().parse().ok()),
        )
    } else {
        return None;
    };
    let size = get("size")?;
    let hits = get("hits").unwrap_or(0);
    let misses = get("misses").unwrap_or(0);
    Some(ArcStats {
        source,
        size_bytes: size,
        target_bytes: get("c").unwrap_or(0),
        max_bytes: get("c_max").unwrap_or(0),
        hits,
        misses,
        hit_ratio: if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded from zfs-fuse 0.7.
    const FUSE_DONE: &str = "  pool: ktest1\n state: ONLINE\n scrub: scrub completed after 0h0m with 0 errors on Sat Nov 21 11:00:28 2026\nconfig:\n";
    const FUSE_NONE: &str = "  pool: ktest1\n state: ONLINE\n scrub: none requested\nconfig:\n";
    // OpenZFS 2.x format.
    const OZ_DONE: &str = "  pool: tank\n state: ONLINE\n  scan: scrub repaired 0B in 00:00:01 with 2 errors on Sun Nov 15 00:24:02 2026\n";
    const OZ_RUN: &str =
        "  pool: tank\n state: ONLINE\n  scan: scrub in progress since Sun Nov 15 00:24:02 2026\n";

    #[test]
    fn scrub_lines() {
        let s = parse_scrub(FUSE_DONE);
        assert_eq!((s.state.as_str(), s.errors), ("finished", Some(0)));
        assert_eq!(s.finished_at, parse_ctime("Sat Nov 21 11:00:28 2026"));
        assert!(s.finished_at.is_some());
        assert_eq!(parse_scrub(FUSE_NONE).state, "none");
        let o = parse_scrub(OZ_DONE);
        assert_eq!((o.state.as_str(), o.errors), ("finished", Some(2)));
        let r = parse_scrub(OZ_RUN);
        assert_eq!(
            (r.state.as_str(), r.errors, r.finished_at),
            ("in_progress", None, None)
        );
        assert_eq!(parse_scrub("garbage").state, "unknown");
    }

    #[test]
    fn ctime_is_ordered_and_rejects_garbage() {
        let a = parse_ctime("Sat Nov 21 11:00:28 2026").unwrap();
        let b = parse_ctime("Sun Nov 22 11:00:28 2026").unwrap();
        assert_eq!(b - a, 86_400);
        assert_eq!(parse_ctime("Foo 21 11:00 2026"), None);
        assert_eq!(parse_ctime("Sat Xyz 21 11:00:28 2026"), None);
    }

    #[test]
    fn pool_rows_exact_and_human() {
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = parse_pool_row(
            &r(&["t", "250M", "1.08M", "249M", "0%", "ONLINE"]),
            parse_scrub(FUSE_NONE),
        )
        .unwrap();
        assert_eq!(
            (p.size_bytes, p.capacity_percent, p.health.as_str()),
            (250 << 20, 0, "ONLINE")
        );
        let p = parse_pool_row(
            &r(&["t", "1000", "10", "990", "1", "DEGRADED"]),
            parse_scrub(""),
        )
        .unwrap();
        assert_eq!((p.allocated_bytes, p.health.as_str()), (10, "DEGRADED"));
        assert!(
            parse_pool_row(&r(&["t", "x", "1", "1", "1%", "ONLINE"]), parse_scrub("")).is_err()
        );
        assert!(parse_pool_row(&r(&["t"]), parse_scrub("")).is_err());
    }

    #[test]
    fn arcstats_file_and_dir_forms() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(read_arcstats(t.path()), None);
        let f = t.path().join("proc/spl/kstat/zfs");
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(
            f.join("arcstats"),
            "13 1 0x01 123 33456 1 2\nname                            type data\nhits                            4    300\nmisses                          4    100\nc                               4    2000\nc_max                           4    4000\nsize                            4    1500\n",
        )
        .unwrap();
        let a = read_arcstats(t.path()).unwrap();
        assert_eq!(
            (a.size_bytes, a.target_bytes, a.max_bytes),
            (1500, 2000, 4000)
        );
        assert!((a.hit_ratio - 0.75).abs() < 1e-9);

        let t2 = tempfile::tempdir().unwrap();
        let d = t2.path().join("zfs-kstat/zfs/arcstats");
        std::fs::create_dir_all(&d).unwrap();
        for (k, v) in [
            ("size", "849344"),
            ("c_max", "104857600"),
            ("hits", "5400"),
            ("misses", "0"),
        ] {
            std::fs::write(d.join(k), format!("{v}\n")).unwrap();
        }
        let a = read_arcstats(t2.path()).unwrap();
        assert_eq!(
            (a.size_bytes, a.max_bytes, a.hit_ratio),
            (849344, 104857600, 1.0)
        );
    }
}
