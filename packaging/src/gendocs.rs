//! Writes every generated documentation file of the package into one output
//! directory laid out as the package's asset sources: `man/` (uncompressed;
//! build-deb.sh gzips them) and `completions/<shell>/...`. Touches only that
//! directory.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Command;

use crate::DocError;
use crate::cli_docs::{self, SHELLS};
use crate::config_man;

/// The inputs: the two real CLI definitions and the annotated default config.
pub struct Inputs<'a> {
    pub kilnd: Command,
    pub kilnctl: Command,
    pub config_text: &'a str,
    /// Package version, printed in the page footers.
    pub version: &'a str,
}

/// Generates kilnd.8, kilnctl.1 (plus a page per subcommand), kiln.toml.5 and bash/zsh/fish completions of
/// both binaries under `out`; returns the files written.
pub fn generate(out: &Path, inputs: Inputs<'_>) -> Result<Vec<PathBuf>, DocError> {
    // Parse the config first: a broken config must not leave half the files.
    let config = config_man::parse_annotated(inputs.config_text)?;
    let mut written = Vec::new();
    let mut write = |rel: PathBuf, bytes: &[u8]| -> Result<(), DocError> {
        let path = out.join(rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|source| DocError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        fs::write(&path, bytes).map_err(|source| DocError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
        Ok(())
    };
    let io_err = |name: &str, source| DocError::Io {
        path: out.join("man").join(name),
        source,
    };

    for (cmd, section) in [(&inputs.kilnd, "8"), (&inputs.kilnctl, "1")] {
        let pages = cli_docs::man_pages(cmd.clone(), section)
            .map_err(|e| io_err(&format!("{}.{section}", cmd.get_name()), e))?;
        for (name, page) in pages {
            write(Path::new("man").join(name), &page)?;
        }
    }
    let conf_page = config_man::render_man(&config, inputs.version);
    write(PathBuf::from("man/kiln.toml.5"), conf_page.as_bytes())?;

    for (bin, cmd) in [("kilnd", &inputs.kilnd), ("kilnctl", &inputs.kilnctl)] {
        for shell in SHELLS {
            let rel = cli_docs::completion_path(bin, shell)
                .expect("SHELLS only lists shells with a path");
            let script = cli_docs::completion(cmd.clone(), bin, shell);
            write(Path::new("completions").join(rel), &script)?;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Arg;

    fn cmd(name: &'static str) -> Command {
        Command::new(name)
            .version("1.2.3")
            .about("demo")
            .arg(Arg::new("config").long("config").help("Config path"))
            .subcommand(Command::new("check-config").about("Check the config"))
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-gendocs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn writes_all_pages_and_completions() {
        let out = tmpdir("all");
        let files = generate(
            &out,
            Inputs {
                kilnd: cmd("kilnd"),
                kilnctl: cmd("kilnctl"),
                config_text: "# Demo.\n\n[daemon]\n# Verbosity.\nlog_level = \"info\"\n",
                version: "1.2.3",
            },
        )
        .unwrap();
        // kilnd.8 + kilnd-check-config.8, the same for kilnctl, kiln.toml.5.
        assert_eq!(files.len(), 5 + 2 * 3);
        assert!(out.join("man/kilnctl-check-config.1").is_file());
        let kilnd = fs::read_to_string(out.join("man/kilnd.8")).unwrap();
        assert!(kilnd.contains(".TH kilnd 8"));
        assert!(kilnd.contains("check\\-config"));
        let conf = fs::read_to_string(out.join("man/kiln.toml.5")).unwrap();
        assert!(conf.contains("log_level"));
        for rel in [
            "completions/bash-completion/completions/kilnctl",
            "completions/zsh/vendor-completions/_kilnd",
            "completions/fish/vendor_completions.d/kilnctl.fish",
        ] {
            let s = fs::read_to_string(out.join(rel)).unwrap();
            assert!(s.contains("check-config"), "{rel}");
        }
        fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn broken_config_writes_nothing() {
        let out = tmpdir("broken");
        let err = generate(
            &out,
            Inputs {
                kilnd: cmd("kilnd"),
                kilnctl: cmd("kilnctl"),
                config_text: "[daemon\n",
                version: "1",
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("not valid TOML"), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn unwritable_output_names_the_path() {
        let err = generate(
            Path::new("/proc/kiln-no-such-dir"),
            Inputs {
                kilnd: cmd("kilnd"),
                kilnctl: cmd("kilnctl"),
                config_text: "[a]\nx = 1\n",
                version: "1",
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("/proc/kiln-no-such-dir"), "{err}");
    }
}
