//! Reading a machine tree: the live `/` or a recorded directory laid out like it.
//!
//! Every read goes through here so that a missing, empty, garbled or vanished file
//! becomes a [`Fault`] naming the full path and the problem, never a panic. Touches
//! only files below the configured root, read-only.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What went wrong with one file of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Full path of the file (root included).
    pub path: String,
    /// What is wrong and, where there is one, what to do about it.
    pub reason: String,
}

/// A failed read: either the device vanished, or one file is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The device directory disappeared while we were reading it (unplugged).
    Gone(String),
    /// The file is missing, empty, unreadable or does not parse.
    Bad(Problem),
}

impl Fault {
    pub(crate) fn bad(path: &Path, reason: impl Into<String>) -> Self {
        Fault::Bad(Problem {
            path: path.display().to_string(),
            reason: reason.into(),
        })
    }
}

/// The root every path is resolved against.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    root: PathBuf,
}

impl Tree {
    pub(crate) fn new(root: PathBuf) -> Self {
        Tree { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Full path of `rel` (a path written without a leading `/`).
    pub(crate) fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    pub(crate) fn exists(&self, rel: impl AsRef<Path>) -> bool {
        self.path(rel).exists()
    }

    /// A device directory, so that reads below it can tell "gone" from "broken".
    pub(crate) fn node(&self, rel: impl AsRef<Path>) -> Node {
        Node {
            dir: self.path(rel),
        }
    }

    /// Sorted entry names of a directory; `Ok(vec![])` when it does not exist.
    pub(crate) fn list(&self, rel: impl AsRef<Path>) -> Result<Vec<String>, Fault> {
        let dir = self.path(rel);
        match fs::read_dir(&dir) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort_by(|a, b| natural_cmp(a, b));
                Ok(names)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Fault::bad(&dir, format!("cannot list directory: {e}"))),
        }
    }

    /// Reads a whole text file below the root (no device context).
    pub(crate) fn read(&self, rel: impl AsRef<Path>) -> Result<String, Fault> {
        read_text(&self.path(rel), None)
    }
}

/// One device directory in the tree.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    dir: PathBuf,
}

impl Node {
    pub(crate) fn at(dir: &Path) -> Node {
        Node {
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn child(&self, rel: impl AsRef<Path>) -> Node {
        Node {
            dir: self.dir.join(rel),
        }
    }

    pub(crate) fn has(&self, rel: impl AsRef<Path>) -> bool {
        self.dir.join(rel).exists()
    }

    /// Text of `file`, trimmed; missing, empty, non-text files are faults.
    pub(crate) fn text(&self, file: &str) -> Result<String, Fault> {
        let text = read_text(&self.dir.join(file), Some(&self.dir))?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Fault::bad(
                &self.dir.join(file),
                "file is empty (truncated?); re-record the tree or check the driver",
            ));
        }
        Ok(trimmed.to_string())
    }

    /// Like [`Node::text`] but a missing file is `Ok(None)`.
    pub(crate) fn opt_text(&self, file: &str) -> Result<Option<String>, Fault> {
        if !self.dir.join(file).exists() {
            return if self.dir.exists() {
                Ok(None)
            } else {
                Err(Fault::Gone(self.dir.display().to_string()))
            };
        }
        self.text(file).map(Some)
    }

    /// An unsigned decimal number.
    pub(crate) fn u64(&self, file: &str) -> Result<u64, Fault> {
        let t = self.text(file)?;
        parse_u64(&t).ok_or_else(|| {
            Fault::bad(
                &self.dir.join(file),
                format!("expected an unsigned integer, found {:?}", clip(&t)),
            )
        })
    }

    pub(crate) fn opt_u64(&self, file: &str) -> Result<Option<u64>, Fault> {
        match self.opt_text(file)? {
            None => Ok(None),
            Some(_) => self.u64(file).map(Some),
        }
    }

    /// A signed decimal number (temperatures can be negative).
    pub(crate) fn i64(&self, file: &str) -> Result<i64, Fault> {
        let t = self.text(file)?;
        t.parse::<i64>().map_err(|_| {
            Fault::bad(
                &self.dir.join(file),
                format!("expected an integer, found {:?}", clip(&t)),
            )
        })
    }

    /// A hex id such as `0x8086` (PCI) or `03e7` (USB), returned as 4 lower-case digits.
    pub(crate) fn hex_id(&self, file: &str) -> Result<String, Fault> {
        let t = self.text(file)?;
        let digits = t.strip_prefix("0x").unwrap_or(&t);
        match u16::from_str_radix(digits, 16) {
            Ok(v) if digits.bytes().all(|b| b.is_ascii_hexdigit()) && digits.len() <= 4 => {
                Ok(format!("{v:04x}"))
            }
            _ => Err(Fault::bad(
                &self.dir.join(file),
                format!("expected a 16-bit hex id like 0x8086, found {:?}", clip(&t)),
            )),
        }
    }

    /// Last component of a symlink target (e.g. the `driver` link gives the driver name).
    pub(crate) fn link_name(&self, file: &str) -> Result<Option<String>, Fault> {
        let path = self.dir.join(file);
        match fs::read_link(&path) {
            Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.dir.exists() {
                    Ok(None)
                } else {
                    Err(Fault::Gone(self.dir.display().to_string()))
                }
            }
            Err(e) => Err(Fault::bad(&path, format!("cannot read link: {e}"))),
        }
    }
}

fn read_text(path: &Path, anchor: Option<&Path>) -> Result<String, Fault> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            Fault::bad(
                path,
                "file is not UTF-8 text (garbage?); re-record the tree or check the driver",
            )
        }),
        Err(e) => {
            let gone_errno = e.raw_os_error() == Some(libc::ENODEV);
            let anchor_gone = anchor.is_some_and(|a| !a.exists());
            if gone_errno || (e.kind() == io::ErrorKind::NotFound && anchor_gone) {
                let what = anchor.unwrap_or(path);
                Err(Fault::Gone(what.display().to_string()))
            } else if e.kind() == io::ErrorKind::NotFound {
                Err(Fault::bad(
                    path,
                    "file is missing; check that the driver is loaded, or re-record the tree",
                ))
            } else {
                Err(Fault::bad(path, format!("cannot read: {e}")))
            }
        }
    }
}

pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// At most 40 characters of a bad value, for messages.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let s = s.trim();
    let mut out = Vec::new();
    if s.is_empty() {
        return Some(out);
    }
    for part in s.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().ok()?;
                let b: usize = b.trim().parse().ok()?;
                if b < a || b - a > 65_536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Orders `card2` before `card10` and `3-2` before `3-10`.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(s: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut text = String::new();
        let mut num = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
            } else {
                if !num.is_empty() {
                    out.push((std::mem::take(&mut text), num.parse().unwrap_or(u64::MAX)));
                    num.clear();
                }
                text.push(c);
            }
        }
        out.push((text, num.parse().unwrap_or(0)));
        out
    }
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        // Formatting is the inverse, in any order and with duplicates.
        assert_eq!(
            crate::format_cpu_list(&[3, 0, 1, 2, 8, 10, 11, 3]),
            "0-3,8,10-11"
        );
        assert_eq!(crate::format_cpu_list(&[]), "");
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["card10", "card2", "card1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["card1", "card2", "card10"]);
    }

    #[test]
    fn hex_ids() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::at(dir.path());
        for (text, want) in [
            ("0x8086\n", Some("8086")),
            ("03e7", Some("03e7")),
            ("0x+1", None),
            ("12345", None),
            ("0x", None),
        ] {
            std::fs::write(dir.path().join("id"), text).unwrap();
            assert_eq!(node.hex_id("id").ok().as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(" 42\n"), Some(42));
        assert_eq!(parse_u64("-1"), None);
        assert_eq!(parse_u64("12abc"), None);
    }
}
