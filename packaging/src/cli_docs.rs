//! Man pages and shell completions generated from a clap command definition
//! (the daemon's and kilnctl's real `Cli` types). Pure: returns bytes, writes
//! nothing.

use std::io;
use std::path::PathBuf;

use clap::Command;
pub use clap_complete::Shell;

/// Shells we ship completions for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Renders `cmd` and each visible subcommand as man pages in `section`
/// (e.g. "8" for kilnd): `(file name, roff)` pairs such as `kilnctl.1` and
/// `kilnctl-status.1`, the page the main page's SUBCOMMANDS list points to.
pub fn man_pages(cmd: Command, section: &str) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let source = cmd.get_version().map(|v| format!("kiln {v}"));
    let mut pages = Vec::new();
    render_tree(cmd, section, source.as_deref(), &mut pages)?;
    Ok(pages)
}

fn render_tree(
    cmd: Command,
    section: &str,
    source: Option<&str>,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> io::Result<()> {
    let manual = match section {
        "1" => "User Commands",
        "8" => "System Administration",
        _ => "Kiln",
    };
    let subs: Vec<Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    // whatis/apropos (and lintian) need "name - summary" in NAME.
    let cmd = if cmd.get_about().is_none() {
        let summary = match cmd.get_bin_name() {
            Some(full) if full.contains(' ') => format!("the {full} subcommand"),
            _ => format!("the {} command", cmd.get_name()),
        };
        cmd.about(summary)
    } else {
        cmd
    };
    let mut man = clap_mangen::Man::new(cmd).section(section).manual(manual);
    if let Some(s) = source {
        man = man.source(s.to_string());
    }
    let mut out = Vec::new();
    man.render(&mut out)?;
    pages.push((man.get_filename(), out));
    for sub in subs {
        render_tree(sub, section, source, pages)?;
    }
    Ok(())
}

/// Renders the completion script of `bin` for `shell`.
pub fn completion(mut cmd: Command, bin: &str, shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut out);
    out
}

/// Where a completion script goes, relative to /usr/share.
pub fn completion_path(bin: &str, shell: Shell) -> Option<PathBuf> {
    let p = match shell {
        Shell::Bash => format!("bash-completion/completions/{bin}"),
        Shell::Zsh => format!("zsh/vendor-completions/_{bin}"),
        Shell::Fish => format!("fish/vendor_completions.d/{bin}.fish"),
        _ => return None,
    };
    Some(PathBuf::from(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};

    /// A CLI shaped like kilnctl's, to exercise the generators.
    #[derive(Parser)]
    #[command(name = "democtl", version = "9.8.7", about = "Drive the demo daemon")]
    struct Demo {
        /// Path of the daemon's socket.
        #[arg(long, default_value = "/run/demo.sock")]
        socket: PathBuf,
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Show the daemon's state.
        Status {
            /// Print JSON.
            #[arg(long)]
            json: bool,
        },
        Reload,
        /// Check the configuration.
        CheckConfig,
    }

    #[test]
    fn man_pages_document_options_and_subcommands() {
        let pages = man_pages(Demo::command(), "1").unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "democtl.1",
                "democtl-status.1",
                "democtl-reload.1",
                "democtl-check-config.1"
            ]
        );
        let page = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(page.contains(".TH democtl 1"), "{page}");
        assert!(page.contains("kiln 9.8.7"));
        assert!(page.contains("User Commands"));
        assert!(page.contains("socket"));
        assert!(page.contains("/run/demo.sock"));
        assert!(page.contains("status"));
        assert!(page.contains("democtl\\-reload(1)"));
        assert!(page.contains("Show the daemon"));
        assert!(!page.contains("democtl\\-help"));
        let status = String::from_utf8(pages[1].1.clone()).unwrap();
        assert!(status.contains(".TH democtl-status 1"), "{status}");
        assert!(status.contains("kiln 9.8.7"));
        assert!(status.contains("json"));
        // A subcommand without a doc comment still gets a NAME summary.
        let reload = String::from_utf8(pages[2].1.clone()).unwrap();
        assert!(
            reload.contains(".SH NAME\ndemoctl\\-reload \\- the democtl reload subcommand\n"),
            "{reload}"
        );
    }

    #[test]
    fn completions_know_the_subcommands_for_every_shell() {
        for shell in SHELLS {
            let script = String::from_utf8(completion(Demo::command(), "democtl", shell)).unwrap();
            assert!(script.contains("democtl"), "{shell}: {script}");
            assert!(script.contains("status"), "{shell}");
            assert!(script.contains("reload"), "{shell}");
            assert!(script.contains("socket"), "{shell}");
        }
        let zsh = String::from_utf8(completion(Demo::command(), "democtl", Shell::Zsh)).unwrap();
        assert!(zsh.starts_with("#compdef democtl"));
    }

    #[test]
    fn completion_paths_follow_debian_locations() {
        assert_eq!(
            completion_path("kilnctl", Shell::Bash).unwrap(),
            PathBuf::from("bash-completion/completions/kilnctl")
        );
        assert_eq!(
            completion_path("kilnctl", Shell::Zsh).unwrap(),
            PathBuf::from("zsh/vendor-completions/_kilnctl")
        );
        assert_eq!(
            completion_path("kilnctl", Shell::Fish).unwrap(),
            PathBuf::from("fish/vendor_completions.d/kilnctl.fish")
        );
        assert!(completion_path("kilnctl", Shell::Elvish).is_none());
    }
}
