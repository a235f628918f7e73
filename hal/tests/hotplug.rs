//! Hotplug: rescans of a changing tree emit Added/Removed/Changed; the monitor thread
//! rescans on request and on uevents.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;
use kiln_hal::{DeviceEvent, Monitor, MonitorOptions, diff};

fn ids(events: &[DeviceEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            DeviceEvent::Added(d) => format!("+{}", d.id),
            DeviceEvent::Removed(id) => format!("-{id}"),
            DeviceEvent::Changed(d) => format!("~{}", d.id),
        })
        .collect()
}

#[test]
fn ncs2_added_booted_and_removed() {
    let (_d, root) = scratch("latitude-5450");
    let mut h = hal(&root);
    let (_, first) = h.rescan();
    assert_eq!(
        first.len(),
        8,
        "everything is new at first: {:?}",
        ids(&first)
    );
    assert!(h.rescan().1.is_empty(), "nothing changed");

    plug_ncs2(&root, "3-4", "2485", "03e72485");
    let (inv, ev) = h.rescan();
    assert_eq!(ids(&ev), ["+ncs2-usb-3-4"]);
    assert_eq!(inv.ncs2.len(), 4);

    // The firmware boots: same port, new product id.
    write(&root, &format!("{XHCI}/usb3/3-4/idProduct"), "f63b\n");
    let (_, ev) = h.rescan();
    assert_eq!(ids(&ev), ["~ncs2-usb-3-4"]);
    let DeviceEvent::Changed(d) = &ev[0] else {
        unreachable!()
    };
    assert!(d.capabilities.contains(&"firmware_booted".to_string()));

    std::fs::remove_file(root.join("sys/bus/usb/devices/3-1")).unwrap();
    let (inv, ev) = h.rescan();
    assert_eq!(ids(&ev), ["-ncs2-usb-3-1"]);
    assert_eq!(inv.ncs2.len(), 3);
}

#[test]
fn diff_of_two_trees() {
    let a = hal(&fixture("latitude-5450")).probe().devices();
    let b = hal(&fixture("plain-desktop")).probe().devices();
    let ev = ids(&diff(&a, &b));
    assert_eq!(
        ev,
        [
            "-cpu-efficiency",
            "-cpu-low-power",
            "-npu0",
            "-gpu0",
            "-ncs2-usb-3-1",
            "-ncs2-usb-3-3.1",
            "-ncs2-usb-4-2",
            "~cpu-performance"
        ]
    );
}

type Seen = (usize, Vec<String>);

/// uevent tests share the kernel multicast group, so they take turns.
static UEVENTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn recv_until(rx: &mpsc::Receiver<Seen>, want: &str) -> Seen {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let got = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no event {want} within 10 s"));
        if got.1.iter().any(|e| e == want) {
            return got;
        }
    }
}

#[test]
fn monitor_rescans_on_request_and_stops() {
    let (_d, root) = scratch("latitude-5450");
    let (tx, rx) = mpsc::channel::<Seen>();
    let handle = Monitor::spawn(hal(&root), Duration::from_secs(3600), move |inv, ev| {
        let _ = tx.send((inv.ncs2.len(), ids(&ev)));
    })
    .unwrap();
    assert!(
        !handle.listening_to_uevents(),
        "trees do not listen by default"
    );
    let (n, first) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((n, first.len()), (3, 8));

    plug_ncs2(&root, "3-5", "2485", "03e72485");
    handle.rescan_now();
    let (n, ev) = recv_until(&rx, "+ncs2-usb-3-5");
    assert_eq!((n, ev.len()), (4, 1));

    let hal = handle.stop().expect("the thread hands the HAL back");
    assert_eq!(hal.probe().ncs2.len(), 4);
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "stopped"
    );
}

#[test]
fn zero_interval_is_refused() {
    let e = Monitor::spawn(hal(&fixture("plain-desktop")), Duration::ZERO, |_, _| {})
        .err()
        .unwrap();
    assert!(e.to_string().contains("interval"), "{e}");
}

/// Sends a kernel-format uevent to the kernel multicast group (needs CAP_NET_ADMIN).
fn send_uevent(msg: &[u8]) -> std::io::Result<()> {
    // SAFETY: plain socket/sendto calls on a local fd with a valid sockaddr_nl.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_KOBJECT_UEVENT,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = 1;
        let rc = libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 { Err(err) } else { Ok(()) }
    }
}

#[test]
fn monitor_rescans_after_a_usb_uevent() {
    let _turn = UEVENTS.lock().unwrap_or_else(|p| p.into_inner());
    let (_d, root) = scratch("latitude-5450");
    let (tx, rx) = mpsc::channel::<Seen>();
    let opts = MonitorOptions {
        sample_interval: Duration::from_secs(3600),
        uevents: true,
        debounce: Duration::from_millis(100),
    };
    let handle = Monitor::spawn_with(hal(&root), opts, move |inv, ev| {
        let _ = tx.send((inv.ncs2.len(), ids(&ev)));
    })
    .unwrap();
    if !handle.listening_to_uevents() {
        eprintln!("SKIPPED: no NETLINK_KOBJECT_UEVENT socket in this environment");
        return;
    }
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    plug_ncs2(&root, "3-7", "2485", "03e72485");
    let add = b"add@/devices/pci0000:00/0000:00:14.0/usb3/3-7\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:14.0/usb3/3-7\0SUBSYSTEM=usb\0DEVTYPE=usb_device\0SEQNUM=1\0";
    let sent = std::time::Instant::now();
    if let Err(e) = send_uevent(add) {
        eprintln!("SKIPPED: cannot send a test uevent here: {e}");
        return;
    }
    let (n, ev) = recv_until(&rx, "+ncs2-usb-3-7");
    let latency = sent.elapsed();
    eprintln!("uevent to callback: {latency:?} (debounce 100 ms)");
    assert_eq!((n, ev.len()), (4, 1));
    assert!(
        latency >= Duration::from_millis(100),
        "the debounce was skipped: {latency:?}"
    );
    handle.stop();
}

#[test]
fn a_burst_of_uevents_gives_one_rescan() {
    let _turn = UEVENTS.lock().unwrap_or_else(|p| p.into_inner());
    let (_d, root) = scratch("latitude-5450");
    let (tx, rx) = mpsc::channel::<Seen>();
    let opts = MonitorOptions {
        sample_interval: Duration::from_secs(3600),
        uevents: true,
        debounce: Duration::from_millis(150),
    };
    let handle = Monitor::spawn_with(hal(&root), opts, move |inv, ev| {
        let _ = tx.send((inv.ncs2.len(), ids(&ev)));
    })
    .unwrap();
    if !handle.listening_to_uevents() {
        eprintln!("SKIPPED: no NETLINK_KOBJECT_UEVENT socket in this environment");
        return;
    }
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // A stick booting: removed and re-added on the same port within a few ms.
    for (i, action) in ["remove", "add", "change", "add", "bind"]
        .iter()
        .enumerate()
    {
        let msg = format!(
            "{action}@/devices/pci0000:00/0000:00:14.0/usb3/3-1\0ACTION={action}\0SUBSYSTEM=usb\0SEQNUM={i}\0"
        );
        if let Err(e) = send_uevent(msg.as_bytes()) {
            eprintln!("SKIPPED: cannot send a test uevent here: {e}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // An unrelated subsystem does not wake it.
    send_uevent(b"add@/devices/virtual/net/veth9\0ACTION=add\0SUBSYSTEM=net\0").unwrap();
    rx.recv_timeout(Duration::from_secs(5))
        .expect("one rescan after the burst");
    assert!(
        rx.recv_timeout(Duration::from_millis(600)).is_err(),
        "only one rescan per burst"
    );
    handle.stop();
}
