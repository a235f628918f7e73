//! Watches a root and prints one JSON line per device event, with the time since start:
//! `cargo run -p kiln-hal --example monitor -- [ROOT] [INTERVAL_SECS]`.

use std::time::{Duration, Instant};

use kiln_hal::{BudgetPolicy, Hal, Monitor};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = args.first().cloned().unwrap_or_else(|| "/".into());
    let secs: u64 = match args.get(1).map(|s| s.parse()) {
        None => 5,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("error: INTERVAL_SECS must be a positive whole number of seconds");
            std::process::exit(2);
        }
    };
    let hal = Hal::new(&root, BudgetPolicy::default()).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    let start = Instant::now();
    let handle = Monitor::spawn(hal, Duration::from_secs(secs), move |_inv, events| {
        for e in events {
            let line =
                serde_json::to_string(&e).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            println!("{:.3} {line}", start.elapsed().as_secs_f64());
        }
    })
    .unwrap_or_else(|e| {
        eprintln!("error: cannot start the monitor: {e}");
        std::process::exit(1);
    });
    eprintln!(
        "watching {root} (uevents: {}); Ctrl-C to stop",
        handle.listening_to_uevents()
    );
    loop {
        std::thread::park();
    }
}
