//! Kernel uevents over a NETLINK_KOBJECT_UEVENT socket: the hotplug wake-up signal.
//!
//! Opens one netlink socket (kernel multicast group 1) and reads messages; touches
//! nothing else. A message only ever triggers a debounced rescan, so its content is
//! matched, not trusted.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Subsystems whose events can change the inventory.
const SUBSYSTEMS: &[&str] = &[
    "usb",
    "accel",
    "drm",
    "pci",
    "power_supply",
    "thermal",
    "cpu",
];

/// Kernel uevent multicast group.
pub(crate) const KERNEL_GROUP: u32 = 1;

pub(crate) struct UeventSocket {
    fd: OwnedFd,
}

impl UeventSocket {
    /// Opens a non-blocking socket bound to the kernel uevent group.
    pub(crate) fn open() -> io::Result<UeventSocket> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_KOBJECT_UEVENT,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid starting value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = KERNEL_GROUP;
        // SAFETY: addr is a valid sockaddr_nl of the given length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(UeventSocket { fd })
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads every pending message; true when one concerns a tracked subsystem.
    pub(crate) fn drain(&self) -> bool {
        let mut buf = vec![0u8; 16 * 1024];
        let mut relevant_seen = false;
        loop {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                // EAGAIN: drained. ENOBUFS: we lost events; rescanning covers that.
                let lost =
                    n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS);
                return relevant_seen || lost;
            }
            relevant_seen |= relevant(&buf[..n as usize]);
        }
    }
}

/// Parses `ACTION@DEVPATH\0KEY=VALUE\0...` and says whether it matters to the HAL.
pub(crate) fn relevant(msg: &[u8]) -> bool {
    let mut fields = msg.split(|&b| b == 0);
    let Some(head) = fields.next() else {
        return false;
    };
    if !head.contains(&b'@') {
        return false; // not a kernel uevent (e.g. a udev "libudev" message)
    }
    fields
        .filter_map(|f| f.strip_prefix(b"SUBSYSTEM="))
        .any(|s| SUBSYSTEMS.iter().any(|k| k.as_bytes() == s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_tracked_subsystems_only() {
        assert!(relevant(b"add@/devices/pci0000:00/0000:00:14.0/usb3/3-4\0ACTION=add\0SUBSYSTEM=usb\0DEVTYPE=usb_device\0"));
        assert!(relevant(
            b"change@/devices/x/drm/card0\0ACTION=change\0SUBSYSTEM=drm\0"
        ));
        assert!(!relevant(
            b"add@/devices/virtual/net/veth0\0ACTION=add\0SUBSYSTEM=net\0"
        ));
        assert!(!relevant(b"libudev\0\xfe\xed\xca\xfeSUBSYSTEM=usb\0"));
        assert!(!relevant(b""));
    }
}
