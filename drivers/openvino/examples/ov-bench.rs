//! In-process OpenVINO throughput of one model version directory, through kiln-openvino's
//! request pool: `cargo run --release -p kiln-openvino --example ov-bench -- DIR [options]`.
//! Inputs are zeros; dynamic dimensions take `--dim` (default 1) except the last dimension of
//! rank-2 INT64 inputs (token ids), which takes `--seq` (default 128). Reads the model only.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kiln_openvino::{
    CompileHints, LibrarySearch, PerformanceHint, Precision, Runtime, Tensor, find_repo_venv,
};

struct Args {
    dir: PathBuf,
    device: String,
    iters: u64,
    threads: usize,
    dim: i64,
    seq: i64,
    throughput: bool,
    library: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        dir: PathBuf::new(),
        device: "CPU".into(),
        iters: 2000,
        threads: 1,
        dim: 1,
        seq: 128,
        throughput: false,
        library: None,
    };
    let num = |v: Option<String>, what: &str| -> Result<u64, String> {
        v.ok_or(format!("{what} needs a value"))?
            .parse()
            .map_err(|e| format!("{what}: {e}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--device" => a.device = it.next().ok_or("--device needs a value")?,
            "--iters" => a.iters = num(it.next(), "--iters")?,
            "--threads" => a.threads = num(it.next(), "--threads")? as usize,
            "--dim" => a.dim = num(it.next(), "--dim")? as i64,
            "--seq" => a.seq = num(it.next(), "--seq")? as i64,
            "--throughput" => a.throughput = true,
            "--library" => a.library = Some(it.next().ok_or("--library needs a value")?.into()),
            s if !s.starts_with('-') && a.dir.as_os_str().is_empty() => a.dir = s.into(),
            s => return Err(format!("unknown argument {s}")),
        }
    }
    if a.dir.as_os_str().is_empty() {
        return Err(
            "usage: ov-bench MODEL_VERSION_DIR [--device CPU] [--iters N] \
                    [--threads N] [--dim N] [--seq N] [--throughput] [--library PATH]"
                .into(),
        );
    }
    Ok(a)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ov-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let a = parse()?;
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    let prefixes = find_repo_venv(&cwd).into_iter().collect();
    let rt = Runtime::load(&LibrarySearch::new(a.library.clone(), prefixes))
        .map_err(|e| e.to_string())?;
    let model = rt.read_model(&a.dir).map_err(|e| e.to_string())?;
    let hints = CompileHints {
        performance: if a.throughput {
            PerformanceHint::Throughput
        } else {
            PerformanceHint::Latency
        },
        precision: Some(Precision::F32),
        pool_size: Some(a.threads.max(1)),
        ..CompileHints::default()
    };
    let compiled = Arc::new(
        rt.compile(&model, &a.device, &hints)
            .map_err(|e| e.to_string())?,
    );
    let inputs: Vec<(String, Tensor)> = compiled
        .inputs()
        .iter()
        .map(|p| {
            let n = p.shape.len();
            let shape: Vec<i64> = p
                .shape
                .iter()
                .enumerate()
                .map(|(i, &d)| match d {
                    d if d >= 0 => d,
                    _ if n == 2 && i == 1 && p.dtype == kiln_openvino::Dtype::I64 => a.seq,
                    _ => a.dim,
                })
                .collect();
            Tensor::zeros(p.dtype, &shape).map(|t| (p.name.clone(), t))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for _ in 0..10 {
        compiled.infer(&inputs).map_err(|e| e.to_string())?;
    }
    let done = AtomicU64::new(0);
    let start = Instant::now();
    let mut lat: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..a.threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut l = Vec::new();
                    while done.fetch_add(1, Ordering::Relaxed) < a.iters {
                        let t = Instant::now();
                        compiled.infer(&inputs).expect("infer");
                        l.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    l
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "OpenVINO {} from {}",
        rt.version(),
        rt.library_path().display()
    );
    println!(
        "{} on {} ({} precision, hint {}, pool {}, optimal {}): {} infers in {:.2}s = {:.0}/s, \
         p50 {:.3} ms, p99 {:.3} ms, compile RSS delta {} MiB",
        a.dir.display(),
        compiled.device(),
        compiled.precision(),
        compiled.performance_hint(),
        compiled.pool_size(),
        compiled.optimal_requests(),
        lat.len(),
        secs,
        lat.len() as f64 / secs,
        pct(0.5),
        pct(0.99),
        compiled.memory_delta_bytes() >> 20
    );
    Ok(())
}
