//! Stand-alone runner for `kiln_vectors::bench::run` (what `kiln-bench vectors` calls):
//! `cargo run --release -p kiln-vectors --example bench -- [--json] [--n N] [--dim D]
//! [--k K] [--threads T] [--cpus 0,2] [--seed S] [--queries Q]`.

use kiln_vectors::bench::{self, BenchOptions};

fn main() {
    let (opts, json) = match BenchOptions::from_args(std::env::args().skip(1)) {
        Ok(v) => v,
        Err(e) => fail(&e),
    };
    match bench::run(opts) {
        Ok(r) if json => match serde_json::to_string_pretty(&r) {
            Ok(s) => println!("{s}"),
            Err(e) => fail(&e.to_string()),
        },
        Ok(r) => println!("{r}"),
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2)
}
