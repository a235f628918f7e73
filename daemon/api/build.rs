//! Compiles every .proto under proto/ with protox (pure Rust; no protoc).
//! Adding a service is adding a file; nothing here changes.

use std::path::{Path, PathBuf};

fn protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            protos(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "proto") {
            out.push(p);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    protos(Path::new("proto"), &mut files)?;
    files.sort();
    let rel: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix("proto").unwrap_or(f).to_path_buf())
        .collect();
    let fds = protox::compile(&rel, ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    Ok(())
}
