//! Prints the inventory of a root as JSON and times probes:
//! `cargo run -p kiln-hal --example probe -- [ROOT] [--devices] [--repeat N]`.

use std::time::Instant;

use kiln_hal::{BudgetPolicy, Hal};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut root = "/".to_string();
    let mut repeat = 0u32;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--devices" => {}
            "--repeat" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n) => repeat = n,
                None => fail("--repeat needs a count, e.g. --repeat 100"),
            },
            s if s.starts_with("--") => fail(&format!(
                "unknown option {s}; use [ROOT] [--devices] [--repeat N]"
            )),
            s => root = s.to_string(),
        }
    }
    let mut hal = Hal::new(&root, BudgetPolicy::default()).unwrap_or_else(|e| fail(&e.to_string()));
    let t = Instant::now();
    let inv = hal.probe();
    let first = t.elapsed();
    if repeat > 0 {
        let t = Instant::now();
        for _ in 0..repeat {
            std::hint::black_box(hal.probe());
        }
        let probe = t.elapsed() / repeat;
        let t = Instant::now();
        for _ in 0..repeat {
            std::hint::black_box(hal.sample());
        }
        let sample = t.elapsed() / repeat;
        eprintln!(
            "root {root}: first probe {first:?}, probe {probe:?}, sample {sample:?} (mean of {repeat})"
        );
    }
    let json = if args.iter().any(|a| a == "--devices") {
        serde_json::to_string_pretty(&inv.devices())
    } else {
        serde_json::to_string_pretty(&inv)
    };
    match json {
        Ok(j) => println!("{j}"),
        Err(e) => fail(&format!("cannot serialise the inventory: {e}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2);
}
