//! A dbus-daemon of the test's own, configured like the system bus (EXTERNAL auth, deny
//! by default) plus the project's policy file, so calls meet the rules an installed kilnd
//! meets. Killed on drop. Needs apt `dbus`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The workspace root (this crate lives in `<root>/tests/kit`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// A dbus-daemon of our own, configured like the system bus plus our policy.
pub struct PrivateBus {
    pub address: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    /// A client connection to this bus.
    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .expect("connect to the private bus")
    }

    /// A proxy for `interface` at `path` of kilnd (org.kiln.Kiln1) on this bus.
    pub async fn kiln_proxy(&self, path: &str, interface: &str) -> zbus::Proxy<'static> {
        zbus::Proxy::new(
            &self.connect().await,
            "org.kiln.Kiln1",
            path.to_string(),
            interface.to_string(),
        )
        .await
        .expect("proxy")
    }

    pub fn start() -> PrivateBus {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("bus.sock");
        let template = std::fs::read_to_string(repo_root().join("configs/dbus-private.conf.in"))
            .expect("bus template");
        let owner = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "root".into());
        let conf = template
            .replace("@LISTEN@", &format!("unix:path={}", sock.display()))
            .replace("@OWNER@", &owner)
            .replace(
                "@POLICY_DIR@",
                &repo_root().join("packaging/dbus").display().to_string(),
            );
        let conf_path = dir.path().join("bus.conf");
        std::fs::write(&conf_path, conf).expect("write bus conf");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf_path.display()))
            .args(["--nofork", "--nopidfile", "--nosyslog", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon not found: apt-get install dbus (scripts/setup.sh does this)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("bus address");
        let address = line.trim().to_string();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        PrivateBus {
            address,
            child,
            _dir: dir,
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
