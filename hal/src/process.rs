//! Process handles that survive pid reuse: pidfds (pidfd_open(2)) and whether their
//! process has ended. Used by job supervision and by kilnd to pin a socket peer.
//! Touches only the fds it opens.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A pidfd for `pid`, if the process exists and the kernel has pidfds (Linux ≥ 5.3).
pub fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a new fd we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A pidfd is readable once its process has exited.
pub fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLIN != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_tells_when_its_process_has_exited() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let fd = pidfd_open(child.id() as i32).unwrap();
        assert!(!pidfd_exited(&fd));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(pidfd_exited(&fd), "readable once the process ended");
        assert!(pidfd_open(i32::MAX).is_none());
    }
}
