//! Measures the storage API on a real backend: ensure, model import throughput, snapshot,
//! rollback_model, status, list and prune latency.
//!   cargo run --release -p kiln-storage --example measure -- dir <root> [MiB]
//!   cargo run --release -p kiln-storage --example measure -- zfs <pool> [MiB]
//! Writes only under `<root>/kiln` or `<pool>/kiln` (and a scratch file in the temp dir).

use std::time::Instant;

use kiln_storage::{BackendKind, Dataset, StorageConfig, StoragePolicy};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kind, target) = match (args.first().map(String::as_str), args.get(1)) {
        (Some("dir"), Some(t)) => (BackendKind::Dir, t.clone()),
        (Some("zfs"), Some(t)) => (BackendKind::Zfs, t.clone()),
        _ => {
            eprintln!("usage: measure dir <root>|zfs <pool> [MiB]");
            std::process::exit(2);
        }
    };
    let mib: usize = match args.get(2).map(|s| s.parse()) {
        None => 256,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("MiB must be a positive whole number");
            std::process::exit(2);
        }
    };
    let mut cfg = StorageConfig {
        backend: kind,
        ..StorageConfig::default()
    };
    match kind {
        BackendKind::Dir => cfg.root = target.into(),
        BackendKind::Zfs => cfg.pool = target,
    }
    let t = Instant::now();
    let s = match kiln_storage::open(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!("backend {}", kind.as_str());
    println!(
        "open+ensure            {:>9.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let src = std::env::temp_dir().join(format!("kiln-measure-{}.bin", std::process::id()));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&src, &data).expect("write scratch file");
    drop(data);
    let name = format!("bench{}", std::process::id());
    let run = || -> kiln_storage::Result<()> {
        let t = Instant::now();
        let mut ticks = 0u64;
        let imp = s.import_model(&src, &name, &mut |_, _| ticks += 1)?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "import {mib} MiB           {:>9.1} ms  ({:.0} MiB/s, {ticks} progress calls, v{})",
            secs * 1e3,
            mib as f64 / secs,
            imp.version
        );
        let t = Instant::now();
        s.snapshot(Dataset::Models, &format!("{name}-extra"), false)?;
        println!(
            "snapshot (models)      {:>9.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        s.rollback_model(&name, imp.version)?;
        println!(
            "rollback_model         {:>9.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        let st = s.status()?;
        println!(
            "status                 {:>9.1} ms  ({} datasets)",
            t.elapsed().as_secs_f64() * 1e3,
            st.datasets.len()
        );
        for i in 0..20 {
            s.snapshot_at(
                Dataset::Logs,
                &format!("{name}-l{i}"),
                false,
                1_700_000_000 + i * 600,
            )?;
        }
        let t = Instant::now();
        let n = s.list_snapshots(None)?.len();
        println!(
            "list_snapshots         {:>9.1} ms  ({n} snapshots)",
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        let r = s.prune(Dataset::Logs, 1_700_000_000 + 20 * 600)?;
        println!(
            "prune 20 -> {} kept     {:>9.1} ms  ({} removed)",
            r.kept.len(),
            t.elapsed().as_secs_f64() * 1e3,
            r.removed.len()
        );
        for m in s.command_metrics() {
            println!(
                "  {:<14} calls {:>4}  mean {:>7.2} ms",
                m.command,
                m.calls,
                m.total_seconds * 1e3 / m.calls.max(1) as f64
            );
        }
        Ok(())
    };
    let res = run();
    let _ = std::fs::remove_file(&src);
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
