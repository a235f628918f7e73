//! kiln-gendocs: writes the package's man pages (kilnd.8, kilnctl.1, a page
//! per subcommand, kiln.toml.5) and bash/zsh/fish completions into OUTDIR,
//! from the real CLI definitions and the annotated default config.
//! Reads the config file; writes only under OUTDIR.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use kiln_packaging::gendocs::{self, Inputs};

const USAGE: &str = "usage: kiln-gendocs [--config configs/kiln.toml] [--version X.Y.Z] OUTDIR";

struct Args {
    out: PathBuf,
    config: PathBuf,
    version: String,
}

fn parse_args() -> Result<Args, String> {
    let mut out = None;
    let mut config = PathBuf::from("configs/kiln.toml");
    let mut version = env!("CARGO_PKG_VERSION").to_string();
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config") => {
                config = it.next().ok_or("--config needs a path")?.into();
            }
            Some("--version") => {
                version = it
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or("--version needs a version string")?;
            }
            Some("-h" | "--help") => return Err(String::new()),
            Some(s) if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if out.is_none() => out = Some(PathBuf::from(a)),
            _ => return Err("more than one OUTDIR given".into()),
        }
    }
    let out = out.ok_or("OUTDIR is missing")?;
    Ok(Args {
        out,
        config,
        version,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kiln-gendocs: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config_text = match std::fs::read_to_string(&args.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "kiln-gendocs: cannot read {}: {e} (pass the annotated default config with --config)",
                args.config.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let inputs = Inputs {
        kilnd: kilnd::cli::Cli::command(),
        kilnctl: kilnctl::cli::Cli::command(),
        config_text: &config_text,
        version: &args.version,
    };
    match gendocs::generate(&args.out, inputs) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiln-gendocs: {e}");
            ExitCode::FAILURE
        }
    }
}
