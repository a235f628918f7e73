//! File-tree helpers: copy with progress (reflink first, then hardlink against an
//! unchanged earlier snapshot, then a byte copy), tree sizes, and atomic JSON writes.
//! Touches only the paths its callers pass.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::{Result, StorageError};

/// How a copy may share storage with its source.
#[derive(Debug, Clone, Copy)]
pub enum CopyMode<'a> {
    /// Independent bytes: reflink where the filesystem can, else a byte copy.
    Independent,
    /// A read-only snapshot: reflink, else hardlink to the same file in `link_dest` (an
    /// earlier read-only snapshot) when size and mtime match, else a byte copy.
    Snapshot { link_dest: Option<&'a Path> },
}

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub bytes: u64,
    pub reflinked: u64,
    pub hardlinked: u64,
    pub copied: u64,
}

const CHUNK: usize = 1 << 20;

/// Total bytes and regular files under `p` (a file or a directory; symlinks not followed).
pub fn tree_size(p: &Path) -> Result<(u64, u64)> {
    let md = fs::symlink_metadata(p).map_err(|e| StorageError::io("stat", p, e))?;
    if md.is_file() {
        return Ok((md.len(), 1));
    }
    if !md.is_dir() {
        return Ok((0, 0));
    }
    let mut total = (0, 0);
    for entry in fs::read_dir(p).map_err(|e| StorageError::io("read directory", p, e))? {
        let entry = entry.map_err(|e| StorageError::io("read directory", p, e))?;
        let (b, f) = tree_size(&entry.path())?;
        total.0 += b;
        total.1 += f;
    }
    Ok(total)
}

/// Copy `src` (file or directory) to `dst` (must not exist). `progress(copied, total)` is
/// called as bytes land; `total` is the source size measured up front.
pub fn copy_tree(
    src: &Path,
    dst: &Path,
    mode: CopyMode<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyStats> {
    let (total, _) = tree_size(src)?;
    let mut stats = CopyStats::default();
    progress(0, total);
    copy_rec(src, dst, mode, &mut stats, total, progress)?;
    Ok(stats)
}

fn copy_rec(
    src: &Path,
    dst: &Path,
    mode: CopyMode<'_>,
    stats: &mut CopyStats,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let md = fs::symlink_metadata(src).map_err(|e| StorageError::io("stat", src, e))?;
    let ft = md.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(|e| StorageError::io("read link", src, e))?;
        std::os::unix::fs::symlink(&target, dst)
            .map_err(|e| StorageError::io("create symlink", dst, e))?;
    } else if ft.is_dir() {
        fs::create_dir(dst).map_err(|e| StorageError::io("create directory", dst, e))?;
        let mut names: Vec<_> = fs::read_dir(src)
            .map_err(|e| StorageError::io("read directory", src, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| StorageError::io("read directory", src, e))?;
        names.sort();
        for n in names {
            let sub_mode = match mode {
                CopyMode::Snapshot { link_dest: Some(l) } => {
                    // Borrow-friendly: the joined path lives only for this call.
                    let joined = l.join(&n);
                    copy_rec(
                        &src.join(&n),
                        &dst.join(&n),
                        CopyMode::Snapshot {
                            link_dest: Some(&joined),
                        },
                        stats,
                        total,
                        progress,
                    )?;
                    continue;
                }
                m => m,
            };
            copy_rec(
                &src.join(&n),
                &dst.join(&n),
                sub_mode,
                stats,
                total,
                progress,
            )?;
        }
        fs::set_permissions(dst, md.permissions())
            .map_err(|e| StorageError::io("set permissions", dst, e))?;
    } else if ft.is_file() {
        copy_file(src, dst, &md, mode, stats, total, progress)?;
    } else {
        return Err(StorageError::io(
            "copy",
            src,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file, directory or symlink (devices, sockets and fifos cannot be stored)",
            ),
        ));
    }
    Ok(())
}

fn same_content_hint(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len() && a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec()
}

fn copy_file(
    src: &Path,
    dst: &Path,
    md: &fs::Metadata,
    mode: CopyMode<'_>,
    stats: &mut CopyStats,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    stats.files += 1;
    if let CopyMode::Snapshot {
        link_dest: Some(prev),
    } = mode
        && let Ok(pmd) = fs::symlink_metadata(prev)
        && pmd.is_file()
        && same_content_hint(md, &pmd)
        && fs::hard_link(prev, dst).is_ok()
    {
        stats.hardlinked += 1;
        stats.bytes += md.len();
        progress(stats.bytes, total);
        return Ok(());
    }
    let mut input = File::open(src).map_err(|e| StorageError::io("open", src, e))?;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| StorageError::io("create", dst, e))?;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open and valid.
    let cloned = unsafe { libc::ioctl(out.as_raw_fd(), FICLONE, input.as_raw_fd()) } == 0;
    if cloned {
        stats.reflinked += 1;
        stats.bytes += md.len();
        progress(stats.bytes, total);
    } else {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = input
                .read(&mut buf)
                .map_err(|e| StorageError::io("read", src, e))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(|e| StorageError::io("write", dst, e))?;
            stats.bytes += n as u64;
            progress(stats.bytes, total);
        }
        out.sync_all()
            .map_err(|e| StorageError::io("sync", dst, e))?;
        stats.copied += 1;
    }
    out.set_permissions(fs::Permissions::from_mode(md.permissions().mode()))
        .map_err(|e| StorageError::io("set permissions", dst, e))?;
    if let Ok(m) = md.modified() {
        out.set_modified(m)
            .map_err(|e| StorageError::io("set mtime", dst, e))?;
    }
    Ok(())
}

/// `_IOW(0x94, 9, int)`: share extents between files (btrfs, xfs, bcachefs).
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Remove write permission from every file and directory under `p` (snapshot copies).
pub fn make_read_only(p: &Path) -> Result<()> {
    let md = fs::symlink_metadata(p).map_err(|e| StorageError::io("stat", p, e))?;
    if md.file_type().is_symlink() {
        return Ok(());
    }
    if md.is_dir() {
        for e in fs::read_dir(p).map_err(|e| StorageError::io("read directory", p, e))? {
            let e = e.map_err(|e| StorageError::io("read directory", p, e))?;
            make_read_only(&e.path())?;
        }
    }
    let mode = md.permissions().mode() & !0o222;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| StorageError::io("set permissions", p, e))
}

/// Make a tree writable again (owner write) so it can be removed.
pub fn make_writable(p: &Path) -> Result<()> {
    let md = fs::symlink_metadata(p).map_err(|e| StorageError::io("stat", p, e))?;
    if md.file_type().is_symlink() {
        return Ok(());
    }
    let mode = md.permissions().mode() | 0o200;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| StorageError::io("set permissions", p, e))?;
    if md.is_dir() {
        for e in fs::read_dir(p).map_err(|e| StorageError::io("read directory", p, e))? {
            let e = e.map_err(|e| StorageError::io("read directory", p, e))?;
            make_writable(&e.path())?;
        }
    }
    Ok(())
}

/// Remove a tree this crate created (a staging dir, a snapshot copy).
pub fn remove_tree(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io("stat", p, e)),
        Ok(md) if !md.is_dir() => {
            return fs::remove_file(p).map_err(|e| StorageError::io("remove", p, e));
        }
        Ok(_) => {}
    }
    let first = make_writable(p)
        .and_then(|_| fs::remove_dir_all(p).map_err(|e| StorageError::io("remove", p, e)));
    match first {
        Err(e) if e.is_quota_full() => {
            // On a full ZFS quota with snapshots present, even an unlink needs space it
            // does not have; emptying the files first frees their blocks.
            truncate_files(p);
            make_writable(p)?;
            fs::remove_dir_all(p).map_err(|e| StorageError::io("remove", p, e))
        }
        r => r,
    }
}

/// Truncate every regular file below `p` to zero bytes, best effort.
fn truncate_files(p: &Path) {
    let Ok(md) = fs::symlink_metadata(p) else {
        return;
    };
    if md.is_file() {
        let _ = fs::OpenOptions::new()
            .write(true)
            .open(p)
            .and_then(|f| f.set_len(0));
    } else if md.is_dir() {
        for e in fs::read_dir(p).into_iter().flatten().flatten() {
            truncate_files(&e.path());
        }
    }
}

/// Write `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| StorageError::io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| StorageError::io("rename", path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Put the tree at `staging` in place of `live` so that a crash at any moment leaves
/// `live` whole or recoverable, never lost. With `live` present the two are exchanged in
/// one step (`renameat2(RENAME_EXCHANGE)`) and the old tree, now at `staging`, is removed.
/// Where the filesystem cannot exchange (FUSE, e.g. zfs-fuse), `live` is first renamed to
/// `.kiln-old-<name>` beside it, then `staging` to `live`; [`recover_swaps`] finishes or
/// undoes that at start. Both must be on one filesystem.
pub fn swap_in(staging: &Path, live: &Path) -> Result<()> {
    let dir = live.parent().unwrap_or(Path::new("."));
    if fs::symlink_metadata(live).is_err() {
        fs::rename(staging, live).map_err(|e| StorageError::io("rename", live, e))?;
        return sync_dir(dir);
    }
    match exchange(staging, live) {
        Ok(()) => {
            sync_dir(dir)?;
            remove_tree(staging)
        }
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
            ) =>
        {
            let name = live.file_name().unwrap_or_default().to_string_lossy();
            let old = dir.join(format!("{OLD_PREFIX}{name}"));
            if fs::symlink_metadata(&old).is_ok() {
                remove_tree(&old)?;
            }
            fs::rename(live, &old).map_err(|e| StorageError::io("rename", live, e))?;
            sync_dir(dir)?;
            if let Err(e) = fs::rename(staging, live) {
                let _ = fs::rename(&old, live);
                return Err(StorageError::io("rename", live, e));
            }
            sync_dir(dir)?;
            remove_tree(&old)
        }
        Err(e) => Err(StorageError::io("exchange", live, e)),
    }
}

/// Where [`swap_in`] keeps the old tree while it cannot exchange: `.kiln-old-<name>`.
const OLD_PREFIX: &str = ".kiln-old-";

fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Finish or undo swaps a crash interrupted in `dir`: an old tree whose live one is in
/// place is removed; one whose live one is missing goes back. Returns what it did.
pub fn recover_swaps(dir: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(done);
    };
    for e in rd.flatten() {
        let file = e.file_name();
        let Some(name) = file
            .to_string_lossy()
            .strip_prefix(OLD_PREFIX)
            .map(str::to_string)
        else {
            continue;
        };
        let (old, live) = (e.path(), dir.join(&name));
        if fs::symlink_metadata(&live).is_ok() {
            remove_tree(&old)?;
            done.push(format!("removed {} (its swap had finished)", old.display()));
        } else {
            fs::rename(&old, &live).map_err(|e| StorageError::io("rename", &old, e))?;
            sync_dir(dir)?;
            done.push(format!(
                "restored {} from {}",
                live.display(),
                old.display()
            ));
        }
    }
    Ok(done)
}

/// Remove what an interrupted [`swap_in`] or copy left in `dir`: entries whose names start
/// with one of `prefixes` (`.rollback-`, ...). Returns what was removed.
pub fn remove_leftovers(dir: &Path, prefixes: &[&str]) -> Result<Vec<std::path::PathBuf>> {
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(removed);
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if prefixes.iter().any(|p| name.starts_with(p)) {
            let p = e.path();
            remove_tree(&p)?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// Make a rename in `dir` durable (fsync of the directory). Filesystems that cannot sync a
/// directory (some FUSE ones answer EINVAL or ENOSYS) are left as they are.
pub fn sync_dir(dir: &Path) -> Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
            Err(StorageError::io("sync directory", dir, e))
        }
        _ => Ok(()),
    }
}

/// Free bytes available to unprivileged writers on the filesystem holding `p`.
pub fn available_bytes(p: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills a zeroed struct from a valid NUL-terminated path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_in_exchanges_and_interrupted_swaps_are_finished_or_undone() {
        let t = tempfile::tempdir().unwrap();
        let (live, staging) = (t.path().join("ds"), t.path().join(".rollback-1"));
        fs::create_dir_all(&live).unwrap();
        fs::write(live.join("f"), b"old").unwrap();
        fs::create_dir_all(&staging).unwrap();
        fs::write(staging.join("f"), b"new").unwrap();
        swap_in(&staging, &live).unwrap();
        assert_eq!(fs::read(live.join("f")).unwrap(), b"new");
        assert!(!staging.exists(), "the old tree is gone");
        // A crash after `live` moved aside: it comes back.
        fs::rename(&live, t.path().join(".kiln-old-ds")).unwrap();
        let done = recover_swaps(t.path()).unwrap();
        assert_eq!(fs::read(live.join("f")).unwrap(), b"new", "{done:?}");
        // A crash after the new tree was in place: the old one is removed.
        fs::create_dir_all(t.path().join(".kiln-old-ds")).unwrap();
        recover_swaps(t.path()).unwrap();
        assert!(!t.path().join(".kiln-old-ds").exists());
        assert_eq!(fs::read(live.join("f")).unwrap(), b"new");
    }

    #[test]
    fn copies_tree_with_progress_and_links_unchanged_files() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.bin"), vec![7u8; 3 * CHUNK + 5]).unwrap();
        fs::write(src.join("sub/b.txt"), b"hello").unwrap();
        std::os::unix::fs::symlink("a.bin", src.join("link")).unwrap();

        let mut calls = Vec::new();
        let s1 = copy_tree(
            &src,
            &t.path().join("s1"),
            CopyMode::Snapshot { link_dest: None },
            &mut |c, tot| calls.push((c, tot)),
        )
        .unwrap();
        assert_eq!((s1.files, s1.bytes), (2, 3 * CHUNK as u64 + 10));
        assert_eq!(calls.first(), Some(&(0, 3 * CHUNK as u64 + 10)));
        assert_eq!(calls.last().unwrap().0, 3 * CHUNK as u64 + 10);
        assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(fs::read(t.path().join("s1/sub/b.txt")).unwrap(), b"hello");
        assert_eq!(
            fs::read_link(t.path().join("s1/link")).unwrap(),
            Path::new("a.bin")
        );
        make_read_only(&t.path().join("s1")).unwrap();

        // Change one file; the other is hardlinked (or reflinked) against s1.
        fs::write(src.join("sub/b.txt"), b"changed").unwrap();
        let s1p = t.path().join("s1");
        let s2 = copy_tree(
            &src,
            &t.path().join("s2"),
            CopyMode::Snapshot {
                link_dest: Some(&s1p),
            },
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(s2.files, 2);
        assert_eq!(s2.hardlinked + s2.reflinked, 2 - s2.copied);
        if s2.reflinked == 0 {
            assert_eq!(s2.hardlinked, 1, "{s2:?}");
            let a1 = fs::metadata(t.path().join("s1/a.bin")).unwrap().ino();
            let a2 = fs::metadata(t.path().join("s2/a.bin")).unwrap().ino();
            assert_eq!(a1, a2);
        }
        assert_eq!(fs::read(t.path().join("s2/sub/b.txt")).unwrap(), b"changed");
        assert_eq!(fs::read(t.path().join("s1/sub/b.txt")).unwrap(), b"hello");
        remove_tree(&t.path().join("s1")).unwrap();
        assert!(!t.path().join("s1").exists());
    }

    #[test]
    fn rejects_special_files_and_missing_sources() {
        let t = tempfile::tempdir().unwrap();
        let e = copy_tree(
            &t.path().join("nope"),
            &t.path().join("x"),
            CopyMode::Independent,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let fifo = t.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = copy_tree(
            &fifo,
            &t.path().join("y"),
            CopyMode::Independent,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
