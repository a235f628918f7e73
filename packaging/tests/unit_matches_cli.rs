//! The unit drives the real binaries: every kilnd command line in
//! kilnd.service must parse with kilnd's own CLI, and kilnctl's default
//! socket must be the one the unit gives kilnd. Reads systemd/kilnd.service.

use std::path::Path;

use clap::Parser;
use kiln_packaging::unit::UnitFile;

fn unit() -> UnitFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/kilnd.service");
    UnitFile::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_kilnd_command_line_in_the_unit_parses() {
    let u = unit();
    let mut seen = 0;
    for key in ["ExecStartPre", "ExecStart", "ExecReload"] {
        for v in u.values("Service", key) {
            let argv = u
                .exec_argv(v, &[("STATE_DIRECTORY", "/var/lib/kiln"), ("MAINPID", "1")])
                .unwrap();
            if argv[0] != "/usr/bin/kilnd" {
                continue;
            }
            seen += 1;
            let cli =
                kilnd::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{key}={v}: {e}"));
            assert_eq!(
                cli.config.as_deref(),
                Some(Path::new("/etc/kiln/kiln.toml")),
                "{key}"
            );
            let check = matches!(cli.command, Some(kilnd::cli::Command::CheckConfig));
            assert_eq!(check, key != "ExecStart", "{key} runs check-config");
        }
    }
    assert_eq!(seen, 3, "ExecStartPre, ExecStart and ExecReload run kilnd");
}

#[test]
fn kilnctl_defaults_to_the_units_socket() {
    let u = unit();
    let env = u.environment();
    let sock = env.iter().find(|(k, _)| k == "KILN_SOCKET").unwrap();
    assert_eq!(sock.1, kilnctl::cli::DEFAULT_SOCKET);
    let start = u
        .exec_argv(
            u.get("Service", "ExecStart").unwrap(),
            &[("STATE_DIRECTORY", "/var/lib/kiln")],
        )
        .unwrap();
    let cli = kilnd::cli::Cli::try_parse_from(&start).unwrap();
    assert_eq!(
        cli.socket.as_deref(),
        Some(Path::new(kilnctl::cli::DEFAULT_SOCKET))
    );
    assert_eq!(cli.bus.as_deref(), Some("system"));
}

#[test]
fn the_unit_bounds_kilnd_s_memory_below_the_whole_machine() {
    let u = unit();
    let pct = |key: &str| -> u32 {
        let v = u
            .get("Service", key)
            .unwrap_or_else(|| panic!("{key} missing"));
        v.strip_suffix('%')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{key}={v}: expected a share of RAM such as 90%"))
    };
    let (high, max) = (pct("MemoryHigh"), pct("MemoryMax"));
    assert!(
        high < max && max < 100,
        "MemoryHigh={high}% MemoryMax={max}%"
    );
}
