//! `kilnd probe`: read the machine (or a recorded tree) once through the
//! HAL, print the inventory, exit. No daemon, socket or state involved.

use crate::cli::Cli;
use kiln_engine::config;
use kiln_engine::devices::health_text;
use std::path::Path;
use std::process::ExitCode;

pub fn run(cli: &Cli, root: Option<&Path>, json: bool) -> ExitCode {
    let cfg = match config::load(&cli.sources()) {
        Ok(l) => l.config,
        Err(e) => {
            eprintln!("kilnd probe: configuration error:\n{e}");
            return ExitCode::from(1);
        }
    };
    let root = root.map(Path::to_path_buf).unwrap_or(cfg.hal.root.clone());
    let inv = match kiln_engine::devices::probe(&cfg, root) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("kilnd probe: {e}");
            return ExitCode::from(1);
        }
    };
    if json {
        match serde_json::to_string_pretty(&inv) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("kilnd probe: cannot encode the inventory: {e}");
                return ExitCode::from(1);
            }
        }
        return ExitCode::SUCCESS;
    }
    print!("{}", table(&inv));
    ExitCode::SUCCESS
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Human summary: one line per device group, memory and power.
pub fn table(inv: &kiln_engine::devices::Inventory) -> String {
    let mut out = format!("machine root: {}\n\n", inv.root);
    out.push_str(&format!(
        "{:<22} {:<6} {:<10} {:<10} {}\n",
        "DEVICE", "KIND", "ID", "HEALTH", "NAME / DETAIL"
    ));
    for d in inv.devices() {
        let (h, why) = health_text(&d.health);
        let hw = kiln_engine::devices::hw_id(&d);
        let kind = serde_json::to_value(d.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let detail = if why.is_empty() {
            d.identity.name.clone()
        } else {
            format!("{} — {why}", d.identity.name)
        };
        out.push_str(&format!(
            "{:<22} {:<6} {:<10} {:<10} {}\n",
            d.id, kind, hw, h, detail
        ));
    }
    let sets = inv.cpus.cpu_sets();
    out.push_str(&format!(
        "\ncpus: {} performance, {} efficiency, {} low-power\n",
        sets.performance.len(),
        sets.efficiency.len(),
        sets.low_power.len()
    ));
    let m = &inv.memory;
    out.push_str(&format!(
        "memory: {} total, {} available, budget {}\n",
        gib(m.total_bytes),
        gib(m.available_bytes),
        gib(m.budget_bytes)
    ));
    let power = serde_json::to_value(inv.power.source)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    out.push_str(&format!("power: {power}\n"));
    out
}
