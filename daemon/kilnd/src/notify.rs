//! The systemd notify protocol (sd_notify): datagrams to `$NOTIFY_SOCKET`.
//! Without that variable every call is a no-op, so the daemon behaves the
//! same under systemd and in a terminal.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Send newline-separated `KEY=VALUE` assignments. Errors are logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_bytes();
    let addr = match bytes.first() {
        // Abstract namespace socket.
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(&path)),
        _ => {
            tracing::warn!(socket = ?path, "NOTIFY_SOCKET is neither a path nor an abstract name; ignoring");
            return;
        }
    };
    let sent = addr.and_then(|addr| {
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// The interval to ping the watchdog at (half of WATCHDOG_USEC), if systemd
/// enabled the watchdog for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// CLOCK_MONOTONIC in microseconds, for `RELOADING=1` + `MONOTONIC_USEC=`.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_listening_notify_socket() {
        let dir = std::env::temp_dir().join(format!("kiln-notify-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        // SAFETY: set_var in a single test that owns this variable.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        notify("READY=1\nSTATUS=up");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
