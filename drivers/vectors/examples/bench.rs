//! Stand-alone runner for `kiln_vectors::bench::run` (what `kiln-bench vectors` calls):
//! `cargo run --release -p kiln-vectors --example bench -- [--json] [--n N] [--dim D]
//! [--k K] [--threads T] [--cpus 0,2] [--seed S] [--queries Q]`.

use kiln_vectors::bench::{self, BenchOptions};

fn main() {
    let mut opts = BenchOptions::default();
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--json" {
            json = true;
            continue;
        }
        let Some(v) = args.next() else {
            fail(&format!("{a} needs a value"));
        };
        let num = |v: &str| -> usize {
            v.parse()
                .unwrap_or_else(|_| fail(&format!("{a} expects a whole number, got `{v}`")))
        };
        match a.as_str() {
            "--n" => opts.n = num(&v),
            "--dim" => opts.dim = num(&v),
            "--k" => opts.k = num(&v),
            "--threads" => opts.threads = num(&v),
            "--seed" => opts.seed = num(&v) as u64,
            "--queries" => opts.queries = num(&v),
            "--cpus" => opts.cpus = v.split(',').map(num).collect(),
            _ => fail(&format!("unknown option {a}")),
        }
    }
    match bench::run(opts) {
        Ok(r) if json => println!(
            "{}",
            serde_json::to_string_pretty(&r).expect("report serialises")
        ),
        Ok(r) => println!("{r}"),
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!(
        "bench: {msg}\nusage: bench [--json] [--n N] [--dim D] [--k K] [--threads T] [--cpus LIST] [--seed S] [--queries Q]"
    );
    std::process::exit(2)
}
