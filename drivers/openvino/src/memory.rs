//! Process memory readings used to correct a model's budget reservation after compile.
//! Reads `/proc/self/statm` only.

use crate::error::{OvError, Result};

/// Resident set size of this process in bytes (`/proc/self/statm` field 2 x page size).
pub fn process_rss_bytes() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").map_err(|e| OvError::Io {
        context: "reading /proc/self/statm".into(),
        source: e,
    })?;
    let pages = parse_statm_resident(&text).ok_or_else(|| {
        OvError::Unsupported(format!("unexpected /proc/self/statm content {text:?}"))
    })?;
    Ok(pages.saturating_mul(page_size()))
}

/// Resident pages (second field) of a statm line.
pub(crate) fn parse_statm_resident(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_parsing_and_growth() {
        assert_eq!(parse_statm_resident("100 42 7 1 0 30 0\n"), Some(42));
        assert_eq!(parse_statm_resident("100"), None);
        let before = process_rss_bytes().unwrap();
        assert!(before > 0);
        // Touch 64 MiB: RSS must grow by most of it.
        let mut v = vec![0u8; 64 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        let after = process_rss_bytes().unwrap();
        assert!(std::hint::black_box(&v)[4096] == 1);
        assert!(after >= before + (48 << 20), "{before} -> {after}");
    }
}
