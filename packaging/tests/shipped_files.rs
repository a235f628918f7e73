//! Checks the shipped integration files (unit, D-Bus policy, polkit actions
//! and rules, sysusers, tmpfiles, udev, package metadata) for the properties
//! the product depends on. Reads files under systemd/ and packaging/ only.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_packaging::unit::UnitFile;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn unit() -> UnitFile {
    UnitFile::parse(&read("systemd/kilnd.service")).unwrap()
}

#[test]
fn unit_is_a_notify_service_with_watchdog_reload_and_restart() {
    let u = unit();
    assert_eq!(u.get("Service", "Type"), Some("notify"));
    assert_eq!(u.get("Service", "NotifyAccess"), Some("main"));
    assert!(u.get("Service", "WatchdogSec").is_some());
    assert_eq!(u.get("Service", "Restart"), Some("on-failure"));
    let reload = u.values("Service", "ExecReload");
    assert!(
        reload.iter().any(|r| r.contains("kill -HUP $MAINPID")),
        "{reload:?}"
    );
    assert_eq!(u.get("Service", "User"), Some("kiln"));
    assert_eq!(u.get("Service", "Group"), Some("kiln"));
    for d in [
        "StateDirectory",
        "RuntimeDirectory",
        "ConfigurationDirectory",
        "LogsDirectory",
    ] {
        assert_eq!(u.get("Service", d), Some("kiln"), "{d}");
    }
    assert_eq!(u.get("Service", "RuntimeDirectoryMode"), Some("0750"));
    assert!(u.get("Service", "LoadCredential").is_some());
    assert_eq!(u.get("Install", "WantedBy"), Some("multi-user.target"));
}

#[test]
fn unit_sandbox_is_tight() {
    let u = unit();
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("DevicePolicy", "closed"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_NETLINK"),
        // OpenVINO's CPU plugin JITs; must be off, and said so.
        ("MemoryDenyWriteExecute", "no"),
    ] {
        assert_eq!(u.get("Service", k), Some(v), "{k}");
    }
    assert_eq!(
        u.values("Service", "SystemCallFilter")[0],
        "@system-service"
    );
    let devices = u.values("Service", "DeviceAllow");
    for d in ["char-accel rw", "char-drm rw", "char-usb_device rw"] {
        assert!(devices.contains(&d), "DeviceAllow {d}");
    }
    assert!(read("systemd/kilnd.service").contains("JIT"));
    // No network and no capability outside the tunnel drop-in.
    for e in &u.entries {
        assert!(!e.value.contains("CAP_NET_ADMIN"), "line {}", e.line);
        assert!(!e.value.contains("AF_INET"), "line {}", e.line);
    }
    let tunnel = UnitFile::parse(&read("packaging/dropins/kilnd-tunnel.conf")).unwrap();
    assert_eq!(
        tunnel.get("Service", "AmbientCapabilities"),
        Some("CAP_NET_ADMIN")
    );
}

#[test]
fn unit_exec_lines_use_only_paths_the_package_installs() {
    let u = unit();
    for key in ["ExecStartPre", "ExecStart", "ExecReload"] {
        for v in u.values("Service", key) {
            let argv = u
                .exec_argv(v, &[("STATE_DIRECTORY", "/var/lib/kiln"), ("MAINPID", "1")])
                .unwrap();
            assert!(argv[0].starts_with('/'), "{key}: {argv:?}");
            if argv[0].ends_with("/kilnd") {
                assert_eq!(argv[0], "/usr/bin/kilnd");
                let i = argv.iter().position(|a| a == "--config").unwrap();
                assert_eq!(argv[i + 1], "/etc/kiln/kiln.toml");
            }
        }
    }
    let start = u
        .exec_argv(
            u.get("Service", "ExecStart").unwrap(),
            &[("STATE_DIRECTORY", "/var/lib/kiln")],
        )
        .unwrap();
    assert!(
        start
            .windows(2)
            .any(|w| w == ["--socket", "/run/kiln/kiln.sock"])
    );
    assert!(
        start
            .windows(2)
            .any(|w| w == ["--state-dir", "/var/lib/kiln"])
    );
    assert!(start.windows(2).any(|w| w == ["--bus", "system"]));
}

#[test]
fn dbus_policy_lets_only_kiln_own_the_name() {
    let p = read("packaging/dbus/org.kiln.Kiln1.conf");
    let kiln = p.find("<policy user=\"kiln\">").unwrap();
    let own = p.find("<allow own=\"org.kiln.Kiln1\"/>").unwrap();
    let default = p.find("<policy context=\"default\">").unwrap();
    assert!(
        kiln < own && own < default,
        "own is granted inside the kiln policy"
    );
    assert_eq!(p.matches("<allow own=").count(), 1);
    assert!(p[default..].contains("<deny own=\"org.kiln.Kiln1\"/>"));
    assert!(p[default..].contains("<allow send_destination=\"org.kiln.Kiln1\"/>"));
}

#[test]
fn polkit_declares_five_actions_granted_to_group_kiln() {
    let p = read("packaging/polkit/org.kiln.policy");
    let ids: Vec<&str> = p
        .match_indices("<action id=\"")
        .map(|(i, m)| {
            let rest = &p[i + m.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert_eq!(
        ids,
        [
            "org.kiln.manage-models",
            "org.kiln.manage-jobs",
            "org.kiln.manage-storage",
            "org.kiln.manage-burst",
            "org.kiln.manage-daemon",
            "org.kiln.read-data"
        ]
    );
    assert_eq!(p.matches("auth_admin_keep").count(), 3 * ids.len());
    // kilnd runs as kiln, not root: polkit answers it only as the actions' owner.
    assert_eq!(
        p.matches("<annotate key=\"org.freedesktop.policykit.owner\">unix-user:kiln</annotate>")
            .count(),
        ids.len()
    );
    let rules = read("packaging/polkit/60-kiln.rules");
    assert!(rules.contains("subject.isInGroup(\"kiln\")"));
    assert!(rules.contains("action.id.indexOf(\"org.kiln.\") === 0"));
}

#[test]
fn sysusers_tmpfiles_and_udev_agree_on_kiln() {
    let s = read("packaging/sysusers/kiln.conf");
    assert!(s.lines().any(|l| l.starts_with("g kiln")));
    assert!(
        s.lines()
            .any(|l| l.starts_with("u kiln") && l.contains("/var/lib/kiln"))
    );
    let t = read("packaging/tmpfiles/kiln.conf");
    assert!(t.contains("/etc/kiln/credentials  0700 root root"));
    assert!(t.contains("/var/lib/kiln          0750 kiln kiln"));
    let udev = read("packaging/udev/60-kiln.rules");
    assert!(udev.contains("SUBSYSTEM==\"accel\"") && udev.contains("GROUP=\"kiln\""));
    assert!(udev.contains("ATTR{idVendor}==\"03e7\""));
}

#[test]
fn deb_metadata_ships_every_integration_file() {
    let cargo: toml::Table = toml::from_str(&read("packaging/Cargo.toml")).unwrap();
    let deb = &cargo["package"]["metadata"]["deb"];
    assert_eq!(deb["name"].as_str(), Some("kiln"));
    assert_eq!(deb["conf-files"][0].as_str(), Some("/etc/kiln/kiln.toml"));
    let units = &deb["systemd-units"];
    assert_eq!(units["unit-name"].as_str(), Some("kilnd"));
    assert_eq!(units["enable"].as_bool(), Some(true));
    assert_eq!(units["start"].as_bool(), Some(true));
    let assets: Vec<(String, String)> = deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a[0].as_str().unwrap().to_string(),
                a[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for dest in [
        "usr/bin/",
        "etc/kiln/kiln.toml",
        "usr/share/dbus-1/system.d/org.kiln.Kiln1.conf",
        "usr/share/polkit-1/actions/org.kiln.policy",
        "usr/share/polkit-1/rules.d/60-kiln.rules",
        "usr/lib/sysusers.d/kiln.conf",
        "usr/lib/tmpfiles.d/kiln.conf",
        "usr/lib/udev/rules.d/60-kiln.rules",
        "usr/share/man/man8/",
        "usr/share/man/man5/",
        "usr/share/man/man1/",
    ] {
        assert!(
            assets.iter().any(|(_, d)| d == dest),
            "no asset installs {dest}"
        );
    }
    // Every source outside target/ exists in the tree.
    for (src, _) in &assets {
        if !src.starts_with("target/") && !src.starts_with("../configs/") {
            let p = repo().join("packaging").join(src);
            assert!(p.is_file(), "asset source {} missing", p.display());
        }
    }
    // Maintainer scripts carry the token cargo-deb replaces, once.
    for s in ["postinst", "prerm", "postrm"] {
        let text = read(&format!("packaging/debian/{s}"));
        assert_eq!(text.matches("#DEBHELPER#").count(), 1, "{s}");
        assert!(text.starts_with("#!/bin/sh\n"), "{s}");
    }
}
