//! Finds the OpenVINO C API library (`libopenvino_c.so*`) on disk: an explicitly configured
//! path first, then the pip wheel inside Python prefixes/venvs. Reads directories only; never
//! loads anything.

use std::path::{Path, PathBuf};

use crate::error::{OvError, Result};

/// Where to look for the OpenVINO runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LibrarySearch {
    /// Config `[openvino] library`: the library file itself or a directory holding it. When
    /// set it is authoritative: the Python prefixes are not consulted.
    pub library: Option<PathBuf>,
    /// Python prefixes or venv roots (e.g. `/opt/kiln/venv`, `<repo>/.venv`, `/usr/local`),
    /// searched in order for the pip wheel's `openvino/libs/libopenvino_c.so.<ver>`.
    pub python_prefixes: Vec<PathBuf>,
}

/// Python prefixes worth searching on an installed system when nothing else is configured:
/// a venv owned by the package, then the system interpreters' site/dist-packages.
pub const DEFAULT_PYTHON_PREFIXES: &[&str] =
    &["/var/lib/kiln/venv", "/opt/kiln/venv", "/usr/local", "/usr"];

impl LibrarySearch {
    /// The configured library (if any) plus [`DEFAULT_PYTHON_PREFIXES`].
    pub fn with_default_prefixes(library: Option<PathBuf>) -> Self {
        LibrarySearch {
            library,
            python_prefixes: DEFAULT_PYTHON_PREFIXES.iter().map(PathBuf::from).collect(),
        }
    }

    /// A search with an optional configured library and the given prefixes.
    pub fn new(library: Option<PathBuf>, python_prefixes: Vec<PathBuf>) -> Self {
        LibrarySearch {
            library,
            python_prefixes,
        }
    }

    /// Find the library, or explain every place that was searched.
    pub fn find(&self) -> Result<PathBuf> {
        let mut searched = Vec::new();
        if let Some(configured) = &self.library {
            if let Some(found) = find_configured(configured, &mut searched) {
                return Ok(found);
            }
            return Err(OvError::LibraryNotFound {
                configured: Some(configured.clone()),
                searched,
            });
        }
        for prefix in &self.python_prefixes {
            if let Some(found) = find_in_prefix(prefix, &mut searched) {
                return Ok(found);
            }
        }
        Err(OvError::LibraryNotFound {
            configured: None,
            searched,
        })
    }
}

/// Walk up from `start` to the first directory holding a `.venv` with a Python inside; returns
/// the venv root (usable as a Python prefix).
pub fn find_repo_venv(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        let venv = dir.join(".venv");
        venv.join("bin/python").exists().then_some(venv)
    })
}

const LIB_STEM: &str = "libopenvino_c.so";

fn find_configured(path: &Path, searched: &mut Vec<String>) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    if !path.is_dir() {
        searched.push(format!("{} (does not exist)", path.display()));
        return None;
    }
    // A directory: the library itself, or the Intel archive layout below it.
    for dir in [path.to_path_buf(), path.join("runtime/lib/intel64")] {
        searched.push(format!("{}/{LIB_STEM}*", dir.display()));
        if let Some(found) = best_library_in(&dir) {
            return Some(found);
        }
    }
    None
}

fn find_in_prefix(prefix: &Path, searched: &mut Vec<String>) -> Option<PathBuf> {
    // (directory below the prefix, whether its last component is a python3.* glob)
    const LAYOUTS: [(&str, &str); 5] = [
        ("lib", "site-packages"),
        ("lib64", "site-packages"),
        ("local/lib", "dist-packages"),
        ("lib", "dist-packages"),
        ("local/lib", "site-packages"),
    ];
    // The prefix may itself be a site-packages directory.
    let direct = prefix.join("openvino/libs");
    if direct.is_dir() {
        searched.push(format!("{}/{LIB_STEM}.*", direct.display()));
        if let Some(found) = best_library_in(&direct) {
            return Some(found);
        }
    }
    for (lib, site) in LAYOUTS {
        let base = prefix.join(lib);
        searched.push(format!(
            "{}/python3*/{site}/openvino/libs/{LIB_STEM}.*",
            base.display()
        ));
        let mut pythons: Vec<PathBuf> = read_dir_names(&base)
            .into_iter()
            .filter(|n| n == "python3" || n.starts_with("python3."))
            .map(|n| base.join(n))
            .collect();
        // Newest interpreter first (python3.12 before python3.11 before python3).
        pythons.sort_by_key(|p| std::cmp::Reverse(version_key(&p.to_string_lossy())));
        for py in pythons {
            if let Some(found) = best_library_in(&py.join(site).join("openvino/libs")) {
                return Some(found);
            }
        }
    }
    None
}

/// The highest-versioned `libopenvino_c.so.<ver>` in `dir` (or the unversioned name).
fn best_library_in(dir: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<(Vec<u64>, String)> = read_dir_names(dir)
        .into_iter()
        .filter_map(|name| {
            let rest = name.strip_prefix(LIB_STEM)?;
            if rest.is_empty() {
                return Some((Vec::new(), name));
            }
            let ver = rest.strip_prefix('.')?;
            let parts: Option<Vec<u64>> = ver.split('.').map(|p| p.parse().ok()).collect();
            parts.map(|p| (p, name))
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, name)| dir.join(name))
        .filter(|p| p.is_file())
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn version_key(s: &str) -> Vec<u64> {
    s.rsplit("python")
        .next()
        .unwrap_or("")
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("kiln-ov-discovery-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn picks_highest_wheel_version_in_venv() {
        let root = tempdir("venv");
        let libs = root.join("lib/python3.11/site-packages/openvino/libs");
        touch(&libs.join("libopenvino_c.so.2541"));
        touch(&libs.join("libopenvino_c.so.2641"));
        touch(&libs.join("libopenvino.so.2641"));
        let found = LibrarySearch::new(None, vec![root.clone()]).find().unwrap();
        assert_eq!(found, libs.join("libopenvino_c.so.2641"));
    }

    #[test]
    fn configured_directory_and_file() {
        let root = tempdir("configured");
        let lib = root.join("runtime/lib/intel64/libopenvino_c.so");
        touch(&lib);
        let by_dir = LibrarySearch::new(Some(root.clone()), vec![])
            .find()
            .unwrap();
        assert_eq!(by_dir, lib);
        let by_file = LibrarySearch::new(Some(lib.clone()), vec![])
            .find()
            .unwrap();
        assert_eq!(by_file, lib);
    }

    #[test]
    fn configured_path_is_authoritative() {
        let root = tempdir("authoritative");
        touch(&root.join("lib/python3.11/site-packages/openvino/libs/libopenvino_c.so.2641"));
        let err = LibrarySearch::new(Some(root.join("nope")), vec![root.clone()])
            .find()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("nope (does not exist)"), "{msg}");
        assert!(msg.contains("[openvino] library"), "{msg}");
    }

    #[test]
    fn error_lists_every_prefix_pattern() {
        let a = tempdir("empty-a");
        let b = tempdir("empty-b");
        let err = LibrarySearch::new(None, vec![a.clone(), b.clone()])
            .find()
            .unwrap_err();
        let msg = err.to_string();
        for prefix in [&a, &b] {
            assert!(
                msg.contains(&format!(
                    "{}/lib/python3*/site-packages/openvino/libs/libopenvino_c.so.*",
                    prefix.display()
                )),
                "{msg}"
            );
        }
        assert!(msg.contains(".venv/bin/pip install"), "{msg}");
    }

    #[test]
    fn finds_repo_venv_walking_up() {
        let root = tempdir("walk");
        touch(&root.join(".venv/bin/python"));
        let deep = root.join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(find_repo_venv(&deep), Some(root.join(".venv")));
    }
}
