//! Feature probing of the installed ZFS (compression algorithms, largest recordsize, JSON
//! output, holds, parsable `zpool list`) from its usage text, and the fallback ladder that
//! turns a requested profile into values this ZFS accepts, each change with a reason.
//! Runs `zfs`/`zpool` only through [`ZfsCmd`].

use serde::Serialize;

use crate::zfscmd::{Tool, ZfsCmd};
use crate::{ResolvedProfile, parse_size};
use crate::{Result, StorageError};
pub use kiln_hal::ports::storage::Features;

/// Probe the installed ZFS.
pub fn probe(cmd: &ZfsCmd) -> Result<Features> {
    let get = cmd.run_raw(Tool::Zfs, &["get"])?;
    let zfs = cmd.run_raw(Tool::Zfs, &[])?;
    let zpool = cmd.run_raw(Tool::Zpool, &[])?;
    let both = |r: &crate::zfscmd::RawOutput| format!("{}\n{}", r.stdout, r.stderr);
    let f = Features::from_usage(&both(&get), &both(&zfs), &both(&zpool)).map_err(|detail| {
        // No usage text usually means ZFS itself is not answering; say so if we can tell.
        match crate::zfscmd::classify("zfs get", &["get"], get.status, &get.stderr) {
            e @ StorageError::ZfsUnavailable { .. } => e,
            _ => StorageError::Parse {
                command: "zfs get".into(),
                detail,
            },
        }
    })?;
    tracing::info!(compression = ?f.compression, max_recordsize = f.max_recordsize,
        json = f.json, holds = f.holds, "probed ZFS features");
    Ok(f)
}

/// One property: what the profile asked for, what we apply, and why they differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PropPlan {
    pub property: String,
    pub requested: String,
    pub effective: String,
    pub reason: Option<String>,
}

/// Format bytes the way ZFS spells sizes (`4K`, `128K`, `1M`).
pub fn fmt_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Candidates for a compression value, best first (the documented ladder).
pub fn compression_ladder(c: &str) -> Vec<String> {
    let mut v = vec![c.to_string()];
    let gzip_for = |level: u32| format!("gzip-{}", level.clamp(1, 9));
    if c == "zstd" {
        v.push(gzip_for(3));
    } else if c.starts_with("zstd-fast") {
        v.push("lz4".into());
    } else if let Some(n) = c.strip_prefix("zstd-").and_then(|n| n.parse::<u32>().ok()) {
        v.push(gzip_for(n));
    }
    if c != "off" && c != "on" {
        if c != "lzjb" {
            v.push("lzjb".into());
        }
        v.push("on".into());
    }
    v
}

/// Map a requested profile onto what this ZFS accepts, recording each fallback's reason.
pub fn plan_profile(p: &ResolvedProfile, f: &Features) -> Vec<PropPlan> {
    let mut out = Vec::new();
    let ladder = compression_ladder(&p.compression);
    let chosen = ladder
        .iter()
        .find(|c| f.supports_compression(c))
        .cloned()
        .unwrap_or_else(|| "on".into());
    let reason = (chosen != p.compression).then(|| {
        format!(
            "compression {} is not supported by this ZFS (it offers: {}); fell back to {}",
            p.compression,
            f.compression.join(", "),
            chosen
        )
    });
    out.push(PropPlan {
        property: "compression".into(),
        requested: p.compression.clone(),
        effective: chosen,
        reason,
    });
    let rs = parse_size(&p.recordsize).unwrap_or(128 << 10);
    let (eff, reason) = if rs > f.max_recordsize {
        let m = fmt_size(f.max_recordsize);
        (
            m.clone(),
            Some(format!(
                "recordsize {} exceeds this ZFS's largest recordsize {m}; using {m}",
                p.recordsize
            )),
        )
    } else {
        (fmt_size(rs), None)
    };
    out.push(PropPlan {
        property: "recordsize".into(),
        requested: p.recordsize.clone(),
        effective: eff,
        reason,
    });
    for (name, val) in [("atime", &p.atime), ("quota", &p.quota)] {
        out.push(PropPlan {
            property: name.into(),
            requested: val.clone(),
            effective: val.clone(),
            reason: None,
        });
    }
    out
}

#[cfg(test)]
pub(crate) mod fixtures {
    /// `zfs get` usage property rows recorded from zfs-fuse 0.7 (Debian 12).
    pub const ZFS_FUSE_GET: &str = "\
	PROPERTY       EDIT  INHERIT   VALUES

	available        NO       NO   <size>
	atime           YES      YES   on | off
	compression     YES      YES   on | off | lzjb | gzip | gzip-[1-9] | zle
	recordsize      YES      YES   512 to 128k, power of 2
";
    /// `zfs` usage lines recorded from zfs-fuse 0.7.
    pub const ZFS_FUSE_USAGE: &str = "\
	list [-rH][-d max] [-o property[,...]] [-t type[,...]] [-s property] ...
	hold [-r] <tag> <snapshot> ...
	holds [-r] <snapshot> ...
";
    pub const ZFS_FUSE_ZPOOL_USAGE: &str = "\tlist [-H] [-o property[,...]] [pool] ...\n";
    /// OpenZFS 2.3 style rows (reconstructed from its documented usage format).
    pub const OPENZFS_GET: &str = "\
	compression     YES      YES   on | off | lzjb | gzip | gzip-[1-9] | zle | lz4 | zstd | zstd-[1-19] | zstd-fast | zstd-fast-[1-10,20,30,40,50,60,70,80,90,100,500,1000]
	recordsize      YES      YES   512 to 16M, power of 2
";
    pub const OPENZFS_USAGE: &str = "\
	list [-Hp] [-j [--json-int]] [-r|-d max] [-o property[,...]] [-s property]...
	hold [-r] <tag> <snapshot> ...
";
    pub const OPENZFS_ZPOOL_USAGE: &str =
        "\tlist [-gHLpPv] [-o property[,...]] [-T d|u] [pool] ...\n";
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::Dataset;
    use crate::Profiles;

    fn zfs_fuse() -> Features {
        Features::from_usage(ZFS_FUSE_GET, ZFS_FUSE_USAGE, ZFS_FUSE_ZPOOL_USAGE).unwrap()
    }

    #[test]
    fn probes_zfs_fuse() {
        let f = zfs_fuse();
        assert_eq!(f.max_recordsize, 128 << 10);
        assert!(!f.json && f.holds && !f.zfs_list_parsable && !f.zpool_list_parsable);
        assert!(f.supports_compression("gzip-3") && f.supports_compression("lzjb"));
        assert!(!f.supports_compression("lz4") && !f.supports_compression("zstd-3"));
        assert!(!f.supports_compression("gzip-10"));
    }

    #[test]
    fn probes_openzfs() {
        let f = Features::from_usage(OPENZFS_GET, OPENZFS_USAGE, OPENZFS_ZPOOL_USAGE).unwrap();
        assert_eq!(f.max_recordsize, 16 << 20);
        assert!(f.json && f.holds && f.zfs_list_parsable && f.zpool_list_parsable);
        assert!(f.supports_compression("zstd-19") && f.supports_compression("zstd-fast-500"));
        assert!(!f.supports_compression("zstd-fast-11"));
    }

    #[test]
    fn probe_reports_a_zfs_that_is_not_answering() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let fake = t.path().join("zfs");
        // What zfs-fuse's `zfs` prints when its daemon is not running.
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'connect: No such file or directory' >&2\necho 'Please make sure that the zfs-fuse daemon is running.' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = fake.to_str().unwrap();
        let e = probe(&ZfsCmd::new(exe, exe)).unwrap_err();
        assert!(matches!(e, StorageError::ZfsUnavailable { .. }), "{e}");
        assert!(e.to_string().contains("start the ZFS service"), "{e}");
        let e = probe(&ZfsCmd::new("/bin/true", "/bin/true")).unwrap_err();
        assert!(matches!(e, StorageError::Parse { .. }), "{e}");
    }

    #[test]
    fn missing_compression_row_is_an_error() {
        assert!(Features::from_usage("nothing here", "", "").is_err());
    }

    #[test]
    fn default_profiles_fall_back_on_zfs_fuse_with_reasons() {
        let f = zfs_fuse();
        let p = Profiles::default();
        let m = plan_profile(&p.resolve(Dataset::Models), &f);
        assert_eq!(m[0].effective, "gzip-3");
        assert!(m[0].reason.as_deref().unwrap().contains("zstd-3"));
        assert_eq!(m[1].effective, "128K");
        assert!(m[1].reason.as_deref().unwrap().contains("1M"));
        let e = plan_profile(&p.resolve(Dataset::Embeddings), &f);
        assert_eq!(e[0].effective, "lzjb");
        assert_eq!(e[1].reason, None);
        let l = plan_profile(&p.resolve(Dataset::Logs), &f);
        assert_eq!(
            (l[0].effective.as_str(), l[1].effective.as_str()),
            ("gzip-9", "4K")
        );
    }

    #[test]
    fn openzfs_needs_no_fallback() {
        let f = Features::from_usage(OPENZFS_GET, OPENZFS_USAGE, OPENZFS_ZPOOL_USAGE).unwrap();
        let p = Profiles::default();
        for ds in Dataset::ALL {
            for pp in plan_profile(&p.resolve(ds), &f) {
                assert_eq!(pp.reason, None, "{pp:?}");
                assert_eq!(
                    parse_size(&pp.effective).ok(),
                    parse_size(&pp.requested).ok()
                );
            }
        }
    }

    #[test]
    fn ladder_shapes() {
        assert_eq!(
            compression_ladder("zstd-19"),
            ["zstd-19", "gzip-9", "lzjb", "on"]
        );
        assert_eq!(compression_ladder("lz4"), ["lz4", "lzjb", "on"]);
        assert_eq!(
            compression_ladder("zstd-fast"),
            ["zstd-fast", "lz4", "lzjb", "on"]
        );
        assert_eq!(compression_ladder("off"), ["off"]);
        assert_eq!(fmt_size(131072), "128K");
        assert_eq!(fmt_size(1 << 20), "1M");
        assert_eq!(fmt_size(1000), "1000");
    }
}
