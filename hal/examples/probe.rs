//! Prints the inventory of a root as JSON: `cargo run -p kiln-hal --example probe -- [ROOT] [--devices]`.

use kiln_hal::{BudgetPolicy, Hal};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "/".into());
    let hal = match Hal::new(&root, BudgetPolicy::default()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let inv = hal.probe();
    let json = if args.iter().any(|a| a == "--devices") {
        serde_json::to_string_pretty(&inv.devices())
    } else {
        serde_json::to_string_pretty(&inv)
    };
    match json {
        Ok(j) => println!("{j}"),
        Err(e) => {
            eprintln!("error: cannot serialise the inventory: {e}");
            std::process::exit(1);
        }
    }
}
