//! The gRPC Unix socket on disk: refuse to start when another daemon answers
//! on it, replace a stale file nobody listens on, create it 0660 and hand it
//! to the configured group, and remove it on exit only if it is still ours.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A bound socket file and the identity (dev, inode) it had when we made it.
pub struct BoundSocket {
    pub path: PathBuf,
    pub listener: UnixListener,
    identity: (u64, u64),
}

pub fn bind(path: &Path, group: &str) -> Result<BoundSocket, String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            format!(
                "cannot create the socket directory {}: {e}; create it or pass --socket",
                parent.display()
            )
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(format!(
                    "another kilnd is already serving {}; stop it first (systemctl stop kilnd) or pass a different --socket",
                    path.display()
                ));
            }
            Err(e)
                if e.kind() == ErrorKind::ConnectionRefused || e.kind() == ErrorKind::NotFound =>
            {
                tracing::info!(socket = %path.display(), "replacing stale socket (nothing listens on it)");
                std::fs::remove_file(path)
                    .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
            }
            Err(e) => {
                return Err(format!(
                    "cannot check existing socket {}: {e}",
                    path.display()
                ));
            }
        },
        Ok(_) => {
            return Err(format!(
                "{} exists and is not a socket; move it away or pass a different --socket",
                path.display()
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    }
    // Bind with a umask that leaves no window where the socket is wider than 0660.
    // SAFETY: umask only swaps the process file-creation mask.
    let old = unsafe { libc::umask(0o117) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot set mode 0660 on {}: {e}", path.display()))?;
    give_to_group(path, group);
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot make {} non-blocking: {e}", path.display()))?;
    Ok(BoundSocket {
        path: path.to_path_buf(),
        listener,
        identity: (meta.dev(), meta.ino()),
    })
}

fn give_to_group(path: &Path, group: &str) {
    if group.is_empty() {
        return;
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => {
            // Under the unit the socket is already ours with group kiln, and
            // the syscall filter forbids chown: nothing to do then.
            let current = std::fs::metadata(path)
                .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
                .ok();
            if current == Some(g.gid.as_raw()) {
                return;
            }
            if let Err(e) = nix::unistd::chown(path, None, Some(g.gid)) {
                tracing::warn!(socket = %path.display(), group, error = %e, "cannot hand the socket to its group; only this user can connect");
            }
        }
        _ => tracing::warn!(
            socket = %path.display(),
            group,
            "group does not exist; the socket stays with this user's group (create the group or set daemon.socket_group)"
        ),
    }
}

impl BoundSocket {
    /// Remove the file if it is still the one we bound (a successor may own it).
    pub fn remove(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.identity
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_is_replaced_live_is_refused_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("kiln-sock-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.sock");
        // A stale socket: bound, then its listener dropped.
        drop(UnixListener::bind(&path).unwrap());
        let a = bind(&path, "").expect("stale socket replaced");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let e = bind(&path, "").err().expect("live socket refused");
        assert!(e.contains("already serving"), "{e}");
        a.remove();
        assert!(!path.exists());
        std::fs::write(&path, b"x").unwrap();
        let e = bind(&path, "").err().expect("regular file refused");
        assert!(e.contains("not a socket"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
