//! A std thread that keeps the inventory current: it rescans on an interval, on
//! kernel uevents (debounced, so a stick that re-enumerates while booting gives one
//! rescan) and on request, and hands every result to a callback.
//!
//! Owns one uevent socket and one eventfd; reads the tree through its [`Hal`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::uevent::UeventSocket;
use crate::{DeviceEvent, Hal, Inventory};

/// Quiet time after the last uevent before rescanning.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// A burst of uevents never delays a rescan by more than this.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// Starts monitors; see [`Monitor::spawn`].
pub struct Monitor;

struct Shared {
    wake: OwnedFd,
    stop: AtomicBool,
}

impl Shared {
    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Control of a running monitor. Dropping it stops the thread.
pub struct MonitorHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Hal>>,
    uevents: bool,
}

/// Monitor settings beyond the interval.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// Rescan at least this often (utilisation sampling).
    pub sample_interval: Duration,
    /// Listen to kernel uevents. [`Monitor::spawn`] sets this for the live machine only.
    pub uevents: bool,
    /// Quiet time after the last uevent before rescanning.
    pub debounce: Duration,
}

impl Monitor {
    /// Runs `hal` on a new thread: an immediate rescan, then one every
    /// `sample_interval`, after uevents (live machine) and after
    /// [`MonitorHandle::rescan_now`]. `on_change` gets every inventory and the device
    /// events since the previous one (often empty: utilisation is in the inventory).
    /// Without a uevent socket (e.g. in a container) it logs a warning and relies on
    /// the interval.
    pub fn spawn<F>(hal: Hal, sample_interval: Duration, on_change: F) -> io::Result<MonitorHandle>
    where
        F: FnMut(&Inventory, Vec<DeviceEvent>) + Send + 'static,
    {
        let uevents = hal.is_live();
        Self::spawn_with(
            hal,
            MonitorOptions {
                sample_interval,
                uevents,
                debounce: DEBOUNCE,
            },
            on_change,
        )
    }

    /// [`Monitor::spawn`] with explicit options.
    pub fn spawn_with<F>(
        hal: Hal,
        opts: MonitorOptions,
        mut on_change: F,
    ) -> io::Result<MonitorHandle>
    where
        F: FnMut(&Inventory, Vec<DeviceEvent>) + Send + 'static,
    {
        if opts.sample_interval.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "monitor sample interval must be positive, e.g. 1s",
            ));
        }
        // SAFETY: plain eventfd(2) call; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: efd is a fresh descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(efd) };
        let shared = Arc::new(Shared {
            wake,
            stop: AtomicBool::new(false),
        });
        let sock = if opts.uevents {
            match UeventSocket::open() {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(
                        "no uevent socket ({e}); hotplug is noticed only every {:?}",
                        opts.sample_interval
                    );
                    None
                }
            }
        } else {
            None
        };
        let uevents = sock.is_some();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("kiln-hal-monitor".into())
            .spawn(move || run(hal, &opts, sock, &thread_shared, &mut on_change))?;
        Ok(MonitorHandle {
            shared,
            thread: Some(thread),
            uevents,
        })
    }
}

impl MonitorHandle {
    /// Asks for a rescan now (e.g. after changing a recorded tree, or from a D-Bus call).
    pub fn rescan_now(&self) {
        self.shared.signal();
    }

    /// Whether uevents are being listened to.
    pub fn listening_to_uevents(&self) -> bool {
        self.uevents
    }

    /// Stops the thread and returns the HAL (with its sampling state); `None` if the
    /// callback panicked and took the thread down.
    pub fn stop(mut self) -> Option<Hal> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Option<Hal> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.signal();
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_inner();
        }
    }
}

fn run(
    mut hal: Hal,
    opts: &MonitorOptions,
    sock: Option<UeventSocket>,
    shared: &Shared,
    on_change: &mut dyn FnMut(&Inventory, Vec<DeviceEvent>),
) -> Hal {
    let mut next_sample = Instant::now();
    // (first uevent of the burst, last uevent)
    let mut pending: Option<(Instant, Instant)> = None;
    loop {
        let now = Instant::now();
        let due_uevent =
            pending.map(|(first, last)| (last + opts.debounce).min(first + DEBOUNCE_MAX));
        let deadline = due_uevent.map_or(next_sample, |d| d.min(next_sample));
        if now < deadline {
            let wait = deadline - now;
            let mut fds = vec![libc::pollfd {
                fd: shared.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if let Some(s) = &sock {
                fds.push(libc::pollfd {
                    fd: s.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: fds is a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if shared.stop.load(Ordering::SeqCst) {
                return hal;
            }
            if n > 0 {
                let mut requested = false;
                if fds[0].revents & libc::POLLIN != 0 {
                    let mut v: u64 = 0;
                    // SAFETY: reads 8 bytes into a valid u64 from our eventfd.
                    unsafe { libc::read(shared.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
                    requested = true;
                }
                if let (Some(s), Some(p)) = (&sock, fds.get(1))
                    && p.revents & libc::POLLIN != 0
                    && s.drain()
                {
                    let t = Instant::now();
                    pending = Some(pending.map_or((t, t), |(first, _)| (first, t)));
                }
                if !requested {
                    continue;
                }
            } else if n == 0 {
                continue;
            } else {
                // EINTR and the like: go round again.
                continue;
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            return hal;
        }
        pending = None;
        let (inv, events) = hal.rescan();
        on_change(&inv, events);
        next_sample = Instant::now() + opts.sample_interval;
    }
}
