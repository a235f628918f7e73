//! `kiln-fuzz TARGET|all [SECONDS]`: mutate each target's seed corpus (bit and byte flips,
//! insertions, deletions, splices, interesting integers, repeats) for SECONDS (default 10)
//! per target, on a fixed seed, and run every input under `catch_unwind`. A panic is a
//! crash: its input is saved under `target/fuzz-crashes/<target>-<n>` and the run exits 1.
//! Prints one JSON line per target: runs, crashes, seconds, corpus size.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_fuzz::{Scratch, TARGETS, Target};
use kiln_testkit::Rng;

const MAX_LEN: usize = 64 << 10;

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next_u64() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                input.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                input.drain(i..i + n);
            }
            4 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = a + rng.below(other.len() - a + 1);
                    let i = rng.below(len + 1);
                    input.splice(i..i, other[a..b].iter().copied());
                }
            }
            5 if len >= 4 => {
                let i = rng.below(len - 3);
                let v: u32 = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, u32::MAX][rng.below(8)];
                input[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            6 if len > 0 => {
                // Repeat a slice: long runs find unbounded loops and allocations.
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                let piece = input[a..b].to_vec();
                for _ in 0..1 + rng.below(64) {
                    input.splice(b..b, piece.iter().copied());
                }
            }
            7 if len > 0 => input.truncate(rng.below(len)),
            _ => {
                let i = rng.below(len + 1);
                let s: &[u8] = [
                    &b"-1"[..],
                    b"\"",
                    b"[",
                    b"]",
                    b"{",
                    b"=",
                    b"\n",
                    b"\0",
                    b"99999999999999999999",
                ][rng.below(9)];
                input.splice(i..i, s.iter().copied());
            }
        }
    }
    input.truncate(MAX_LEN);
}

fn seeds(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.path(), std::fs::read(e.path()).ok()?)))
        .collect();
    v.sort();
    let mut out: Vec<Vec<u8>> = v.into_iter().map(|(_, b)| b).collect();
    out.push(Vec::new());
    out
}

fn run(target: &Target, seconds: f64, corpus: &Path, crashes: &Path) -> usize {
    let seeds = seeds(&corpus.join(target.name));
    let scratch = Scratch::new();
    let mut rng = Rng::new(target.name.len() as u64);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let (mut runs, mut crashed) = (0u64, 0usize);
    // Every seed as it is first, then mutations.
    let mut queue: Vec<Vec<u8>> = seeds.clone();
    while Instant::now() < deadline {
        let input = match queue.pop() {
            Some(s) => s,
            None => {
                let mut s = seeds[rng.below(seeds.len())].clone();
                mutate(&mut rng, &seeds, &mut s);
                s
            }
        };
        runs += 1;
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input, &scratch)));
        if r.is_err() {
            crashed += 1;
            if crashed > 5 {
                continue; // the first five inputs are kept; the count goes on
            }
            let _ = std::fs::create_dir_all(crashes);
            let p = crashes.join(format!("{}-{crashed}", target.name));
            let _ = std::fs::write(&p, &input);
            eprintln!(
                "kiln-fuzz: {} crashed; input saved as {}",
                target.name,
                p.display()
            );
        }
    }
    println!(
        "{{\"target\":\"{}\",\"runs\":{runs},\"crashes\":{crashed},\"seconds\":{seconds},\"seeds\":{}}}",
        target.name,
        seeds.len()
    );
    crashed
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("all");
    let seconds: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = here.join("corpus");
    let crashes = here.join("../../target/fuzz-crashes");
    let chosen: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| which == "all" || t.name == which)
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        eprintln!(
            "kiln-fuzz: no target {which:?}; targets: {}",
            names.join(", ")
        );
        std::process::exit(2);
    }
    // Panics are what we count; their messages go to stderr once per crash anyway.
    std::panic::set_hook(Box::new(|info| eprintln!("kiln-fuzz: panic: {info}")));
    let crashed: usize = chosen
        .iter()
        .map(|t| run(t, seconds, &corpus, &crashes))
        .sum();
    std::process::exit(if crashed > 0 { 1 } else { 0 });
}
