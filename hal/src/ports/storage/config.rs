//! The `[storage]` config section: backend choice, pool, dir root, per-dataset profiles,
//! retention grid and scrub schedule, plus `validate()`. Pure data; touches nothing.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Dataset;
use super::error::{Result, StorageError};

/// Which backend holds the datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Plain directories under `root` (the embedded default).
    #[default]
    Dir,
    /// ZFS datasets under `<pool>/kiln/`.
    Zfs,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Dir => "dir",
            BackendKind::Zfs => "zfs",
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: BackendKind,
    /// ZFS pool holding `<pool>/kiln/…` (zfs backend).
    pub pool: String,
    /// Base directory of the dir backend (`<root>/kiln/…`); the daemon passes its data dir.
    pub root: PathBuf,
    /// `zfs` executable (name looked up in PATH, or a path).
    pub zfs_command: String,
    /// `zpool` executable.
    pub zpool_command: String,
    /// Seconds before a hung `zfs`/`zpool` call is killed.
    pub command_timeout_secs: u64,
    /// Root under which `proc/spl/kstat/zfs/arcstats` is read (recorded trees in tests).
    pub proc_root: PathBuf,
    pub profiles: Profiles,
    pub retention: RetentionConfig,
    pub scrub: ScrubConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: BackendKind::Dir,
            pool: "tank".into(),
            root: PathBuf::from("/var/lib/kiln"),
            zfs_command: "zfs".into(),
            zpool_command: "zpool".into(),
            command_timeout_secs: 120,
            proc_root: PathBuf::from("/"),
            profiles: Profiles::default(),
            retention: RetentionConfig::default(),
            scrub: ScrubConfig::default(),
        }
    }
}

/// `[storage.profiles.<dataset>]`; unset fields take the dataset's built-in default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Profiles {
    pub models: Profile,
    pub embeddings: Profile,
    pub checkpoints: Profile,
    pub logs: Profile,
}

/// One dataset's requested ZFS properties (strings as ZFS spells them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// `off|on|lzjb|gzip|gzip-N|zle|lz4|zstd|zstd-N|zstd-fast[-N]`.
    pub compression: Option<String>,
    /// Power of two, 512 to 16M, e.g. `128K`, `1M`.
    pub recordsize: Option<String>,
    /// `on|off`.
    pub atime: Option<String>,
    /// A size such as `500G`, or `none`.
    pub quota: Option<String>,
}

/// A profile with every field resolved (config over built-in defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedProfile {
    pub compression: String,
    pub recordsize: String,
    pub atime: String,
    pub quota: String,
}

impl Profiles {
    pub fn get(&self, ds: Dataset) -> &Profile {
        match ds {
            Dataset::Models => &self.models,
            Dataset::Embeddings => &self.embeddings,
            Dataset::Checkpoints => &self.checkpoints,
            Dataset::Logs => &self.logs,
        }
    }

    /// The profile for `ds` with the documented defaults filled in.
    pub fn resolve(&self, ds: Dataset) -> ResolvedProfile {
        let (c, r, q) = match ds {
            Dataset::Models => ("zstd-3", "1M", "none"),
            Dataset::Embeddings => ("lz4", "128K", "none"),
            Dataset::Checkpoints => ("zstd-3", "128K", "500G"),
            Dataset::Logs => ("zstd-9", "4K", "none"),
        };
        let p = self.get(ds);
        ResolvedProfile {
            compression: p.compression.clone().unwrap_or_else(|| c.into()),
            recordsize: p.recordsize.clone().unwrap_or_else(|| r.into()),
            atime: p.atime.clone().unwrap_or_else(|| "off".into()),
            quota: p.quota.clone().unwrap_or_else(|| q.into()),
        }
    }
}

/// `[storage.retention]`: keep the newest `keep_last`, plus the newest snapshot in each of
/// the last `hourly` hours, `daily` days and `weekly` weeks (UTC calendar buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub keep_last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_last: 3,
            hourly: 24,
            daily: 7,
            weekly: 4,
        }
    }
}

/// `[storage.scrub]`: scrub the pool when the last scrub is older than `interval_days`
/// (0 disables scheduled scrubs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubConfig {
    pub interval_days: u32,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig { interval_days: 30 }
    }
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> StorageError {
    StorageError::Config {
        key: key.into(),
        message: message.into(),
    }
}

impl StorageConfig {
    /// Check every value; the error names the key and what is expected.
    pub fn validate(&self) -> Result<()> {
        validate_pool_name(&self.pool).map_err(|m| bad("storage.pool", m))?;
        if self.backend == BackendKind::Dir && !self.root.is_absolute() {
            return Err(bad(
                "storage.root",
                format!(
                    "`{}` must be an absolute directory path, e.g. \"/var/lib/kiln\"",
                    self.root.display()
                ),
            ));
        }
        if self.zfs_command.trim().is_empty() {
            return Err(bad(
                "storage.zfs_command",
                "must name the zfs executable, e.g. \"zfs\"",
            ));
        }
        if self.zpool_command.trim().is_empty() {
            return Err(bad(
                "storage.zpool_command",
                "must name the zpool executable, e.g. \"zpool\"",
            ));
        }
        if self.command_timeout_secs == 0 {
            return Err(bad(
                "storage.command_timeout_secs",
                "must be at least 1 (seconds before a hung zfs call is killed), e.g. 120",
            ));
        }
        for ds in Dataset::ALL {
            let key = |f: &str| format!("storage.profiles.{}.{f}", ds.name());
            let p = self.profiles.resolve(ds);
            if !is_known_compression(&p.compression) {
                return Err(bad(
                    key("compression"),
                    format!(
                        "`{}` is not a ZFS compression; expected off, on, lzjb, gzip, gzip-1..9, \
                         zle, lz4, zstd, zstd-1..19 or zstd-fast[-N]",
                        p.compression
                    ),
                ));
            }
            let rs = parse_size(&p.recordsize).map_err(|m| bad(key("recordsize"), m))?;
            if !rs.is_power_of_two() || !(512..=16 << 20).contains(&rs) {
                return Err(bad(
                    key("recordsize"),
                    format!("`{}` must be a power of two from 512 to 16M", p.recordsize),
                ));
            }
            if p.atime != "on" && p.atime != "off" {
                return Err(bad(
                    key("atime"),
                    format!("`{}`: expected \"on\" or \"off\"", p.atime),
                ));
            }
            if p.quota != "none" {
                let q = parse_size(&p.quota).map_err(|m| bad(key("quota"), m))?;
                if q == 0 {
                    return Err(bad(key("quota"), "use \"none\" for no quota, not 0"));
                }
            }
        }
        Ok(())
    }
}

/// ZFS pool naming rules (letters first; letters, digits, `_ - . :`).
pub fn validate_pool_name(pool: &str) -> std::result::Result<(), String> {
    let ok_first = pool.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    let ok_rest = pool
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
    if pool.is_empty() || !ok_first || !ok_rest || pool.len() > 200 {
        return Err(format!(
            "`{pool}` is not a valid pool name; expected a letter followed by letters, digits, \
             `_`, `-`, `.` or `:` (e.g. \"tank\")"
        ));
    }
    Ok(())
}

/// True for every compression name some ZFS release knows.
pub fn is_known_compression(c: &str) -> bool {
    let num_in = |s: &str, lo: u32, hi: u32| s.parse::<u32>().is_ok_and(|n| (lo..=hi).contains(&n));
    match c {
        "off" | "on" | "lzjb" | "gzip" | "zle" | "lz4" | "zstd" | "zstd-fast" => true,
        _ => {
            if let Some(n) = c.strip_prefix("zstd-fast-") {
                num_in(n, 1, 1000)
            } else if let Some(n) = c.strip_prefix("zstd-") {
                num_in(n, 1, 19)
            } else if let Some(n) = c.strip_prefix("gzip-") {
                num_in(n, 1, 9)
            } else {
                false
            }
        }
    }
}

/// Parse `512`, `4K`, `128k`, `1M`, `500G`, `1.5T` (binary units) into bytes.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().trim_end_matches(['B', 'b']);
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        "E" => 60,
        _ => return Err(format!("`{s}` is not a size; expected e.g. 128K, 1M, 500G")),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; expected e.g. 128K, 1M, 500G"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_match_the_issue() {
        let c = StorageConfig::default();
        c.validate().unwrap();
        assert_eq!(c.backend, BackendKind::Dir);
        let m = c.profiles.resolve(Dataset::Models);
        assert_eq!(
            (m.compression.as_str(), m.recordsize.as_str()),
            ("zstd-3", "1M")
        );
        assert_eq!(m.atime, "off");
        let ck = c.profiles.resolve(Dataset::Checkpoints);
        assert_eq!(ck.quota, "500G");
        let l = c.profiles.resolve(Dataset::Logs);
        assert_eq!(
            (l.compression.as_str(), l.recordsize.as_str()),
            ("zstd-9", "4K")
        );
        let e = c.profiles.resolve(Dataset::Embeddings);
        assert_eq!(
            (e.compression.as_str(), e.recordsize.as_str()),
            ("lz4", "128K")
        );
    }

    #[test]
    fn toml_overrides_one_field_and_keeps_the_rest() {
        let c: StorageConfig = toml::from_str(
            "backend = \"zfs\"\npool = \"fast\"\n[profiles.models]\ncompression = \"gzip-5\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.backend, BackendKind::Zfs);
        let m = c.profiles.resolve(Dataset::Models);
        assert_eq!(m.compression, "gzip-5");
        assert_eq!(m.recordsize, "1M");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<StorageConfig>("pools = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("pools"), "{e}");
        let e =
            toml::from_str::<StorageConfig>("[profiles.models]\ncompresion = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("compresion"), "{e}");
    }

    #[test]
    fn validate_names_key_and_expectation() {
        let mut c = StorageConfig::default();
        c.profiles.logs.compression = Some("brotli".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("storage.profiles.logs.compression") && e.contains("brotli"),
            "{e}"
        );

        let mut c = StorageConfig::default();
        c.profiles.models.recordsize = Some("3K".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("storage.profiles.models.recordsize") && e.contains("power of two"),
            "{e}"
        );

        let mut c = StorageConfig::default();
        c.profiles.checkpoints.quota = Some("lots".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("storage.profiles.checkpoints.quota"), "{e}");

        let c = StorageConfig {
            pool: "1tank".into(),
            ..StorageConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("storage.pool")
        );

        let c = StorageConfig {
            root: PathBuf::from("relative/dir"),
            ..StorageConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("storage.root")
        );

        let mut c = StorageConfig::default();
        c.profiles.embeddings.atime = Some("maybe".into());
        assert!(c.validate().unwrap_err().to_string().contains("atime"));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("128K").unwrap(), 131072);
        assert_eq!(parse_size("128k").unwrap(), 131072);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("500G").unwrap(), 500 << 30);
        assert_eq!(
            parse_size("1.08M").unwrap(),
            (1.08 * 1048576.0f64).round() as u64
        );
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn compression_names() {
        for ok in ["off", "gzip-9", "zstd-19", "zstd-fast-10", "lz4", "zle"] {
            assert!(is_known_compression(ok), "{ok}");
        }
        for bad in ["gzip-0", "gzip-10", "zstd-20", "zstd-", "snappy", ""] {
            assert!(!is_known_compression(bad), "{bad}");
        }
    }
}
