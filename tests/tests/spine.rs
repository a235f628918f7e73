//! The spine, tested from outside: the real kilnd and kilnctl binaries, a
//! real dbus-daemon with our policy, systemd's notify protocol and signals.

use kiln_tests::{Kilnd, PrivateBus, Start, bin, kilnctl, repo_root, test_config};
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::Duration;

#[test]
fn dev_config_is_ready_and_reports_running() {
    let t = tempfile::tempdir().unwrap();
    let k = Kilnd::start(Start {
        config: Some(repo_root().join("configs/dev.toml")),
        state_dir: Some(t.path().join("state")),
        socket: Some(t.path().join("kiln.sock")),
        ..Default::default()
    });
    let s = k.status_json();
    assert_eq!(s["state"], "running");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(s["uptime_s"].is_u64());
    assert!(s["budget"]["budget_bytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(
        s["budget"]["free_bytes"].as_u64().unwrap()
            + s["budget"]["reserved_bytes"].as_u64().unwrap(),
        s["budget"]["budget_bytes"].as_u64().unwrap()
    );
    let mode = std::fs::metadata(&k.socket)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.unwrap(), 0o660, "socket must be 0660");
    let human = k.kilnctl(&["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("running") && text.contains("COMPONENT"),
        "{text}"
    );
}

#[test]
fn sigterm_drains_exits_zero_and_removes_the_socket() {
    let mut k = Kilnd::start(Start::default());
    assert!(k.socket.exists());
    k.signal(Signal::SIGTERM);
    assert!(
        k.wait_notify("STOPPING=1", Duration::from_secs(5))
            .is_some(),
        "no STOPPING=1"
    );
    let status = k
        .wait_exit(Duration::from_secs(5))
        .expect("kilnd must exit within 5 s of SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        k.stderr()
    );
    assert!(!k.socket.exists(), "socket must be removed on exit");
}

#[test]
fn sighup_reload_changes_a_live_value_and_lists_restart_keys() {
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("kiln.toml");
    std::fs::write(
        &conf,
        test_config(t.path(), "[daemon]\nlog_level = \"info\"\n"),
    )
    .unwrap();
    let k = Kilnd::start(Start {
        config: Some(conf.clone()),
        ..Default::default()
    });
    assert_eq!(k.status_json()["log_level"], "info");
    std::fs::write(
        &conf,
        test_config(
            t.path(),
            "[daemon]\nlog_level = \"debug\"\nmax_message_bytes = 1048576\n",
        ),
    )
    .unwrap();
    k.signal(Signal::SIGHUP);
    assert!(
        k.wait_notify("RELOADING=1", Duration::from_secs(5))
            .is_some(),
        "no RELOADING=1"
    );
    let ready = k
        .wait_notify("READY=1", Duration::from_secs(5))
        .expect("READY=1 after reload");
    assert!(
        ready.contains("restart needed for [\"daemon.max_message_bytes\"]"),
        "{ready}"
    );
    let s = k.status_json();
    assert_eq!(s["log_level"], "debug");
    assert_eq!(
        s["restart_required"],
        serde_json::json!(["daemon.max_message_bytes"])
    );
    assert_eq!(s["state"], "running");
    // A bad file on reload keeps the running configuration.
    std::fs::write(
        &conf,
        test_config(t.path(), "[daemon]\nlog_level = \"shouty\"\n"),
    )
    .unwrap();
    k.signal(Signal::SIGHUP);
    let after = k
        .wait_notify("READY=1", Duration::from_secs(5))
        .expect("READY=1 after failed reload");
    assert!(
        after.contains("reload failed") && after.contains("shouty"),
        "{after}"
    );
    assert_eq!(k.status_json()["log_level"], "debug");
}

#[test]
fn reload_over_the_socket_is_audited_with_peer_credentials() {
    let k = Kilnd::start(Start::default());
    let out = k.kilnctl(&["reload", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = rusqlite::Connection::open(k.state_dir.join("state.db")).unwrap();
    let (transport, uid, pid, action, result): (String, Option<u32>, Option<i32>, String, String) = db
        .query_row(
            "SELECT transport, caller_uid, caller_pid, action, result FROM audit ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        (transport.as_str(), action.as_str(), result.as_str()),
        ("grpc", "Reload", "ok")
    );
    assert_eq!(uid, Some(nix::unistd::geteuid().as_raw()));
    assert!(pid.unwrap_or(0) > 0, "peer pid recorded");
}

#[test]
fn bad_config_is_rejected_with_file_key_value_and_expectation() {
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("kiln.toml");
    std::fs::write(&conf, "[daemon]\nlog_level = \"info\"\n").unwrap();
    std::fs::create_dir(t.path().join("kiln.toml.d")).unwrap();
    let dropin = t.path().join("kiln.toml.d/10-bad.toml");
    std::fs::write(&dropin, "[metrics]\nlisten = \"0.0.0.0:9100\"\n").unwrap();
    let out = Command::new(bin("kilnd"))
        .arg("--config")
        .arg(&conf)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&dropin.display().to_string()), "{err}");
    assert!(
        err.contains("metrics.listen") && err.contains("0.0.0.0:9100") && err.contains("loopback"),
        "{err}"
    );

    std::fs::write(&dropin, "[daemon]\nsokcet = \"/x\"\n").unwrap();
    let out = Command::new(bin("kilnd"))
        .arg("--config")
        .arg(&conf)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sokcet") && err.contains("expected one of"),
        "{err}"
    );

    // The daemon itself refuses to start on the same file, exit 1, no panic.
    let r = Kilnd::try_start(Start {
        config: Some(conf.clone()),
        ..Default::default()
    });
    let e = r.err().expect("kilnd must refuse a bad config");
    assert!(
        e.contains("exit status: 1") && e.contains("sokcet") && !e.contains("panicked"),
        "{e}"
    );

    std::fs::remove_file(&dropin).unwrap();
    let out = Command::new(bin("kilnd"))
        .arg("--config")
        .arg(&conf)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn second_instance_on_the_same_socket_is_refused() {
    let first = Kilnd::start(Start::default());
    let e = Kilnd::try_start(Start {
        socket: Some(first.socket.clone()),
        ..Default::default()
    })
    .err()
    .expect("second kilnd must refuse");
    assert!(
        e.contains("already serving") && e.contains("exit status: 1"),
        "{e}"
    );
    assert_eq!(
        first.status_json()["state"],
        "running",
        "the first keeps serving"
    );
}

#[test]
fn stale_socket_is_replaced() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("kiln.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let k = Kilnd::start(Start {
        socket: Some(sock),
        ..Default::default()
    });
    assert_eq!(k.status_json()["state"], "running");
}

#[test]
fn kilnctl_without_a_daemon_exits_2_with_a_hint() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("nobody.sock");
    let out = kilnctl(&sock, &["status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&sock.display().to_string()) && err.contains("hint:"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    // A socket file nobody listens on behaves the same.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let out = kilnctl(&sock, &["reload"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_listener_serves_per_rpc_counters() {
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("kiln.toml");
    let msock = t.path().join("metrics.sock");
    std::fs::write(
        &conf,
        test_config(
            t.path(),
            &format!("[metrics]\nlisten = \"unix:{}\"\n", msock.display()),
        ),
    )
    .unwrap();
    let k = Kilnd::start(Start {
        config: Some(conf),
        ..Default::default()
    });
    assert!(k.kilnctl(&["status"]).status.success());
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&msock).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains(
            r#"kiln_rpc_calls_total{transport="grpc",method="/kiln.v1.Daemon/Status",code="0"} 1"#
        ),
        "{body}"
    );
    assert!(body.contains("process_resident_memory_bytes"), "{body}");
}

#[zbus::proxy(
    interface = "org.kiln.Kiln1.Manager",
    default_service = "org.kiln.Kiln1",
    default_path = "/org/kiln/Kiln1"
)]
trait Manager {
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn started_at(&self) -> zbus::Result<String>;
    fn reload(&self) -> zbus::Result<(Vec<String>, Vec<String>)>;
}

#[test]
fn dbus_properties_via_busctl_and_zbus_and_audited_reload() {
    let bus = PrivateBus::start();
    let k = Kilnd::start(Start {
        bus: Some(bus.address.clone()),
        ..Default::default()
    });
    let out = Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args([
            "get-property",
            "org.kiln.Kiln1",
            "/org/kiln/Kiln1",
            "org.kiln.Kiln1.Manager",
            "Version",
        ])
        .output()
        .expect("busctl (apt-get install systemd)");
    assert!(
        out.status.success(),
        "busctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("s \"{}\"", env!("CARGO_PKG_VERSION"))
    );

    let rt = kiln_tests::runtime();
    rt.block_on(async {
        let conn = bus.connect().await;
        let m = ManagerProxy::new(&conn).await.unwrap();
        assert_eq!(m.state().await.unwrap(), "running");
        assert_eq!(m.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
        assert!(m.started_at().await.unwrap().ends_with('Z'));
        let (applied, restart) = m.reload().await.unwrap();
        assert!(applied.is_empty() && restart.is_empty());
    });
    let db = rusqlite::Connection::open(k.state_dir.join("state.db")).unwrap();
    let (transport, sender, uid): (String, Option<String>, Option<u32>) = db
        .query_row(
            "SELECT transport, caller_name, caller_uid FROM audit ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(transport, "dbus");
    assert!(
        sender.unwrap_or_default().starts_with(':'),
        "sender's unique name recorded"
    );
    assert_eq!(uid, Some(nix::unistd::geteuid().as_raw()));
    assert_eq!(
        k.status_json()["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "dbus")
            .unwrap()["state"],
        "ok"
    );
}

#[test]
fn state_change_is_published_as_properties_changed() {
    use futures_util::StreamExt;
    let bus = PrivateBus::start();
    let k = Kilnd::start(Start {
        bus: Some(bus.address.clone()),
        ..Default::default()
    });
    let rt = kiln_tests::runtime();
    rt.block_on(async {
        let conn = bus.connect().await;
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path("/org/kiln/Kiln1")
            .build()
            .unwrap();
        let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, None)
            .await
            .unwrap();
        k.signal(Signal::SIGHUP);
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("PropertiesChanged within 5 s of SIGHUP")
            .expect("stream open")
            .unwrap();
        let (iface, changed, _): (
            String,
            std::collections::HashMap<String, zbus::OwnedVariant>,
            Vec<String>,
        ) = msg.body().deserialize().unwrap();
        assert_eq!(iface, "org.kiln.Kiln1.Manager");
        assert!(changed.contains_key("State"), "{changed:?}");
    });
}

#[test]
fn one_connection_holds_at_most_max_concurrent_streams_and_others_are_served() {
    use kiln_api::kiln::v1::daemon_client::DaemonClient;
    use kiln_api::kiln::v1::devices_client::DevicesClient;
    use kiln_api::kiln::v1::{StatusRequest, WatchDevicesRequest};
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("kiln.toml");
    std::fs::write(
        &conf,
        test_config(t.path(), "[daemon]\nmax_concurrent_streams = 4\n"),
    )
    .unwrap();
    let k = Kilnd::start(Start {
        config: Some(conf),
        ..Default::default()
    });
    let rt = kiln_tests::runtime();
    rt.block_on(async {
        let busy = kilnctl::client::connect(&k.socket).await.unwrap();
        // Four long-lived watches fill the connection's streams.
        let mut watches = Vec::new();
        for _ in 0..4 {
            let mut c = DevicesClient::new(busy.clone());
            watches.push(c.watch(WatchDevicesRequest {}).await.unwrap().into_inner());
        }
        // A fifth call on that connection has to wait for a free stream...
        let mut more = DaemonClient::new(busy.clone());
        let waited =
            tokio::time::timeout(Duration::from_millis(700), more.status(StatusRequest {})).await;
        assert!(
            waited.is_err(),
            "the fifth stream was not held back: {waited:?}"
        );
        // ...while another connection is served at once.
        let other = kilnctl::client::connect(&k.socket).await.unwrap();
        let st = tokio::time::timeout(
            Duration::from_secs(5),
            DaemonClient::new(other).status(StatusRequest {}),
        )
        .await
        .expect("a second connection is served")
        .unwrap();
        assert_eq!(st.into_inner().state, "running");
        // Closing one watch frees a stream for the waiting kind of call.
        watches.pop();
        let freed =
            tokio::time::timeout(Duration::from_secs(5), more.status(StatusRequest {})).await;
        assert!(
            freed.is_ok_and(|r| r.is_ok()),
            "a freed stream was not reused"
        );
    });
}

#[test]
fn a_header_flood_closes_that_connection_and_others_are_served() {
    use std::io::{Read, Write};
    let k = Kilnd::start(Start::default());
    let rss_kib = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", k.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    let before = rss_kib();
    let mut s = std::os::unix::net::UnixStream::connect(&k.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap(); // SETTINGS
    // HEADERS without END_HEADERS, then CONTINUATION frames that never end the block.
    let frame = |ty: u8, payload: &[u8]| {
        let n = payload.len();
        let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, ty, 0, 0, 0, 0, 1];
        f.extend_from_slice(payload);
        f
    };
    let mut sent = 0usize;
    let mut closed = s.write_all(&frame(0x1, &[0x00; 1000])).is_err();
    while !closed && sent < 64 << 20 {
        closed = s.write_all(&frame(0x9, &[0x00; 16_000])).is_err();
        sent += 16_009;
    }
    // kilnd ended that connection: writes fail, or a read sees its end.
    let mut buf = [0u8; 65536];
    let ended = closed
        || loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break true,
                Ok(_) => continue,
            }
        };
    assert!(
        ended,
        "the flooding connection stayed open after {sent} bytes"
    );
    assert!(
        sent < 8 << 20,
        "kilnd read {sent} bytes of one header block before closing"
    );
    // Everyone else is served, and kilnd holds no more than it did.
    let out = k.kilnctl(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 10 * 1024, "kilnd grew by {grown} KiB");
}

#[test]
fn connections_past_the_per_uid_limit_are_refused_with_the_key() {
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("kiln.toml");
    std::fs::write(
        &conf,
        test_config(t.path(), "[daemon]\nmax_connections_per_uid = 2\n"),
    )
    .unwrap();
    let k = Kilnd::start(Start {
        config: Some(conf),
        ..Default::default()
    });
    // Two idle connections hold this uid's allowance.
    let held: Vec<_> = (0..2)
        .map(|_| std::os::unix::net::UnixStream::connect(&k.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let out = k.kilnctl(&["status"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("daemon.max_connections_per_uid") && err.contains("(2)"),
        "{err}"
    );
    // Past twice the limit a connection is closed at once.
    let more: Vec<_> = (0..2)
        .map(|_| std::os::unix::net::UnixStream::connect(&k.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = std::os::unix::net::UnixStream::connect(&k.socket).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    use std::io::Read;
    assert_eq!(
        extra.read(&mut buf).unwrap_or(0),
        0,
        "closed without a word"
    );
    drop((held, more, extra));
    // Closed connections give their slots back; the uid is served again.
    let mut served = false;
    for _ in 0..50 {
        if k.kilnctl(&["status"]).status.success() {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served, "{}", k.stderr());
}

#[test]
fn a_wire_fuzz_leaves_kilnd_serving_and_bad_messages_are_invalid_argument() {
    // kiln-bench fuzz: mutated protobuf bodies to every unary method, one call in ten valid.
    let out = std::process::Command::new(kiln_tests::bin("kiln-bench"))
        .args(["fuzz", "--requests", "6000", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["requests"], 6000);
    assert_eq!(
        (r["crashes"].as_u64(), r["valid_failed"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    let by = r["by_status"].as_object().unwrap();
    assert!(
        by.get("Internal").is_none(),
        "undecodable bodies are the caller's error: {r}"
    );
    assert!(by["InvalidArgument"].as_u64().unwrap() > 1000, "{r}");
    assert!(by["Ok"].as_u64().unwrap() >= 600, "{r}");
    let grew =
        r["rss_end_bytes"].as_u64().unwrap() as i64 - r["rss_start_bytes"].as_u64().unwrap() as i64;
    assert!(grew < 64 << 20, "kilnd grew {grew} bytes: {r}");
}
