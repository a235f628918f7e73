//! Standalone job shim (the same code `kilnd job-shim` runs); used by the crate's tests.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(kiln_jobs::shim::shim_main(&args));
}
