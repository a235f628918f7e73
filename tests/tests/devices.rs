//! The HAL through the daemon: `kilnd probe` on recorded trees and on this
//! machine, and NCS2 hotplug in a copied tree reaching D-Bus signals, device
//! objects and the gRPC Watch stream (via `kilnctl devices --watch`).

use futures_util::StreamExt;
use kiln_tests::{Kilnd, PrivateBus, Start, bin, repo_root, test_config};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn probe(args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin("kilnd"))
        .arg("probe")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kilnd probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("probe prints JSON")
}

fn isa_has(cpu: &serde_json::Value, flag: &str) -> bool {
    cpu["isa"]
        .as_array()
        .is_some_and(|a| a.iter().any(|f| f == flag))
}

#[test]
fn probe_of_the_latitude_5450_tree() {
    let root = repo_root().join("tests/fixtures/latitude-5450");
    let inv = probe(&["--root", root.to_str().unwrap()]);
    let cpus = inv["cpus"].as_array().expect("cpus is an array");
    assert_eq!(cpus.len(), 22);
    let perf: Vec<_> = cpus.iter().filter(|c| c["kind"] == "performance").collect();
    assert_eq!(perf.len(), 12);
    assert!(perf.iter().all(|c| isa_has(c, "avx512f")));
    assert_eq!(cpus.iter().filter(|c| !isa_has(c, "avx512f")).count(), 10);
    assert_eq!(cpus.iter().filter(|c| c["kind"] == "low-power").count(), 2);
    assert_eq!(inv["npus"][0]["pci_id"], "8086:7d1d");
    assert_eq!(inv["npus"][0]["driver"], "intel_vpu");
    assert_eq!(inv["gpus"][0]["pci_id"], "8086:7d55");
    assert_eq!(inv["gpus"][0]["driver"], "i915");
    let ncs2 = inv["ncs2"].as_array().unwrap();
    assert_eq!(ncs2.len(), 3);
    assert_eq!(ncs2.iter().filter(|s| s["state"] == "booted").count(), 1);
    assert!(
        ncs2.iter()
            .all(|s| s["usb_id"] == "03e7:2485" || s["usb_id"] == "03e7:f63b")
    );
    let total = inv["memory"]["total_bytes"].as_u64().unwrap();
    assert!(
        (66_000_000_000..67_000_000_000).contains(&total),
        "~62.26 GiB: {total}"
    );
    assert_eq!(inv["memory"]["budget_bytes"].as_u64().unwrap(), 48 << 30);
    assert_eq!(inv["power"]["source"], "ac");
}

#[test]
fn probe_of_this_machine_shows_real_cpus_and_no_accelerators() {
    let inv = probe(&[]);
    let online = std::thread::available_parallelism().unwrap().get();
    let cpus = inv["cpus"].as_array().unwrap();
    assert!(
        cpus.len() >= online,
        "{} cpus listed, {online} online",
        cpus.len()
    );
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    assert_eq!(isa_has(&cpus[0], "avx2"), avx2);
    assert_eq!(
        isa_has(&cpus[0], "avx512f"),
        std::arch::is_x86_feature_detected!("avx512f")
    );
    if !std::path::Path::new("/sys/class/accel").exists() {
        assert_eq!(inv["npus"].as_array().unwrap().len(), 0);
    }
    assert!(inv["memory"]["total_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn probe_of_a_missing_root_fails_clearly() {
    let out = Command::new(bin("kilnd"))
        .args(["probe", "--root", "/nonexistent/tree"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/tree") && !err.contains("panicked"),
        "{err}"
    );
}

/// Lines from a child's stdout, on a channel.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn expect_line(rx: &mpsc::Receiver<String>, want: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let v: serde_json::Value = serde_json::from_str(&l).unwrap();
                if v["event"] == want && v["id"] == "ncs2-usb-3-1" {
                    return v;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {want} event for ncs2-usb-3-1 on the Watch stream");
}

/// The next manager signal named `want`: (device id, object path).
async fn next_signal(signals: &mut zbus::MessageStream, want: &str) -> (String, String) {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), signals.next())
            .await
            .unwrap_or_else(|_| panic!("no {want} signal within 10 s"))
            .unwrap()
            .unwrap();
        let member = m
            .header()
            .member()
            .map(|m| m.to_string())
            .unwrap_or_default();
        if member == want {
            let (id, path): (String, zbus::OwnedObjectPath) = m.body().deserialize().unwrap();
            return (id, path.to_string());
        }
    }
}

#[test]
fn ncs2_hotplug_reaches_dbus_and_the_watch_stream() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    let st = Command::new("cp")
        .arg("-a")
        .arg(repo_root().join("tests/fixtures/latitude-5450"))
        .arg(&tree)
        .status();
    assert!(st.unwrap().success());
    let conf = t.path().join("kiln.toml");
    let hal = format!(
        "[hal]\nroot = \"{}\"\nsample_interval_ms = 200\n",
        tree.display()
    );
    std::fs::write(&conf, test_config(t.path(), &hal)).unwrap();
    let bus = PrivateBus::start();
    let k = Kilnd::start(Start {
        config: Some(conf),
        bus: Some(bus.address.clone()),
        ..Default::default()
    });

    let mut watch = Command::new(bin("kilnctl"))
        .arg("--socket")
        .arg(&k.socket)
        .args(["devices", "--watch", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let watch_lines = lines_of(&mut watch);

    let rt = kiln_tests::runtime();
    rt.block_on(async {
        let conn = bus.connect().await;
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.kiln.Kiln1.Manager")
            .path("/org/kiln/Kiln1")
            .build()
            .unwrap();
        let mut signals = zbus::MessageStream::for_match_rule(rule, &conn, None)
            .await
            .unwrap();
        let dev_path = "/org/kiln/Kiln1/devices/ncs2_2dusb_2d3_2d1";
        let health = |conn: zbus::Connection| async move {
            let p = zbus::Proxy::new(&conn, "org.kiln.Kiln1", dev_path, "org.kiln.Kiln1.Device")
                .await
                .unwrap();
            p.get_property::<String>("Health").await
        };
        assert_eq!(
            health(conn.clone()).await.unwrap(),
            "ok",
            "device object exported at start"
        );
        tokio::time::sleep(Duration::from_millis(400)).await; // let the Watch call reach the daemon

        let link = tree.join("sys/bus/usb/devices/3-1");
        let target = std::fs::read_link(&link).unwrap();
        std::fs::remove_file(&link).unwrap();
        let (id, path) = next_signal(&mut signals, "DeviceRemoved").await;
        assert_eq!((id.as_str(), path.as_str()), ("ncs2-usb-3-1", dev_path));
        assert!(
            health(conn.clone()).await.is_err(),
            "object removed with the device"
        );

        std::os::unix::fs::symlink(&target, &link).unwrap();
        let (id, path) = next_signal(&mut signals, "DeviceAdded").await;
        assert_eq!((id.as_str(), path.as_str()), ("ncs2-usb-3-1", dev_path));
        assert_eq!(health(conn.clone()).await.unwrap(), "ok");
    });
    expect_line(&watch_lines, "removed");
    let added = expect_line(&watch_lines, "added");
    assert_eq!(added["device"]["kind"], "ncs2");
    let _ = watch.kill();
    let _ = watch.wait();

    let listed = k.kilnctl(&["devices"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("ncs2-usb-3-1") && text.contains("npu0") && text.contains("8086:7d55"),
        "{text}"
    );
}

#[test]
fn the_bus_and_grpc_show_the_same_fields_for_every_device() {
    use kiln_api::kiln::v1::ListDevicesRequest;
    use kiln_api::kiln::v1::devices_client::DevicesClient;
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("kiln.toml");
    let tree = repo_root().join("tests/fixtures/latitude-5450");
    let hal = format!("[hal]\nroot = \"{}\"\n", tree.display());
    std::fs::write(&conf, test_config(t.path(), &hal)).unwrap();
    let bus = PrivateBus::start();
    let k = Kilnd::start(Start {
        config: Some(conf),
        bus: Some(bus.address.clone()),
        ..Default::default()
    });
    kiln_tests::runtime().block_on(async {
        let mut c = DevicesClient::new(kilnctl::client::connect(&k.socket).await.unwrap());
        let devices = c
            .list(ListDevicesRequest {})
            .await
            .unwrap()
            .into_inner()
            .devices;
        assert!(devices.len() >= 4, "{devices:?}");
        let conn = bus.connect().await;
        let without_utilisation = |s: &str| {
            let mut v: serde_json::Value = serde_json::from_str(s).unwrap();
            v.as_object_mut().unwrap().remove("utilisation");
            v
        };
        for d in devices {
            // Object path labels escape every byte outside [A-Za-z0-9] as _xx.
            let label: String =
                d.id.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() {
                            (b as char).to_string()
                        } else {
                            format!("_{b:02x}")
                        }
                    })
                    .collect();
            let path = format!("/org/kiln/Kiln1/devices/{label}");
            let p = zbus::Proxy::new(
                &conn,
                "org.kiln.Kiln1",
                path.clone(),
                "org.kiln.Kiln1.Device",
            )
            .await
            .unwrap();
            let s = |name: &'static str| {
                let p = p.clone();
                async move {
                    p.get_property::<String>(name)
                        .await
                        .unwrap_or_else(|e| panic!("{name}: {e}"))
                }
            };
            assert_eq!(s("Id").await, d.id, "{path}");
            assert_eq!(s("Kind").await, d.kind, "{}", d.id);
            assert_eq!(s("Name").await, d.name, "{}", d.id);
            assert_eq!(s("HwId").await, d.hw_id, "{}", d.id);
            assert_eq!(s("Driver").await, d.driver, "{}", d.id);
            assert_eq!(s("Health").await, d.health, "{}", d.id);
            assert_eq!(s("HealthDetail").await, d.health_detail, "{}", d.id);
            let caps: Vec<String> = p.get_property("Capabilities").await.unwrap();
            assert_eq!(caps, d.capabilities, "{}", d.id);
            assert_eq!(
                without_utilisation(&s("Json").await),
                without_utilisation(&d.json),
                "{}",
                d.id
            );
        }
    });
}
