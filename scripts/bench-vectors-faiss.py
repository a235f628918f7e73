#!/usr/bin/env python3
"""Run FAISS (IndexFlatIP and the 8-bit scalar quantiser) beside the kiln vector bench on
the same sizes, in one run, and print both with the ratios the vector-search goals use.

Kiln numbers come from one of:
  --kiln-cmd "CMD"   run CMD (it must print the kiln bench JSON), e.g.
                     "target/release/examples/bench --json" or "kiln-bench vectors --json";
                     --n/--dim/--k/--threads are appended
  --kiln-json FILE   read the JSON from FILE ('-' for stdin)
  --cpus LIST        pin FAISS (this process) and the kiln command to these CPUs
Without either, only FAISS runs.

Times are medians over the timed queries/batches, as in the kiln bench. Data is Gaussian
(numpy), the same distribution and size as kiln's (not the same numbers).
Needs: pip install -r scripts/requirements-bench.txt (faiss-cpu, numpy), in .venv.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time


def fail(msg):
    print(f"bench-vectors-faiss: {msg}", file=sys.stderr)
    sys.exit(2)


def kiln_numbers(args):
    if args.kiln_cmd:
        cmd = shlex.split(args.kiln_cmd) + [
            "--n", str(args.n), "--dim", str(args.dim), "--k", str(args.k),
            "--threads", str(args.threads),
        ] + (["--cpus", args.cpus] if args.cpus else [])
        try:
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            fail(f"kiln command failed: {e}; check --kiln-cmd")
        text = out[out.index("{"):] if "{" in out else out
    elif args.kiln_json:
        text = sys.stdin.read() if args.kiln_json == "-" else open(args.kiln_json).read()
    else:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"kiln output is not the bench JSON ({e}); run the bench with --json")


def timed(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def faiss_numbers(args):
    try:
        import faiss
        import numpy as np
    except ImportError:
        fail("faiss/numpy missing: .venv/bin/pip install -r scripts/requirements-bench.txt")
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    xb = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    xq = rng.standard_normal((max(args.queries, 16), args.dim), dtype=np.float32)
    nq = len(xq)

    flat = faiss.IndexFlatIP(args.dim)
    flat.add(xb)
    flat.search(xq[:1], args.k)  # warm-up
    exact = []
    t1 = []
    for i in range(nq):
        t = time.perf_counter()
        _, idx = flat.search(xq[i:i + 1], args.k)
        t1.append(time.perf_counter() - t)
        exact.append(set(idx[0].tolist()))
    batches = max(nq // 16, 3)
    starts = [(b * 16) % (nq - 15) for b in range(batches)]
    b16 = []
    for s in starts:
        t = time.perf_counter()
        flat.search(xq[s:s + 16], args.k)
        b16.append(time.perf_counter() - t)

    sq = faiss.IndexScalarQuantizer(args.dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    sq.train(xb)
    sq.add(xb)
    sq.search(xq[:1], args.k)
    tq = []
    hits = 0
    for i in range(nq):
        t = time.perf_counter()
        _, idx = sq.search(xq[i:i + 1], args.k)
        tq.append(time.perf_counter() - t)
        hits += len(exact[i] & set(idx[0].tolist()))
    return {
        "faiss_version": faiss.__version__,
        "flat_batch1_ms": statistics.median(t1) * 1e3,
        "flat_batch16_ms": statistics.median(b16) * 1e3,
        "sq8_ms": statistics.median(tq) * 1e3,
        "sq8_recall_at_10": hits / (nq * args.k),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--queries", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cpus", help="comma-separated CPUs to pin both benches to (e.g. 1)")
    p.add_argument("--kiln-cmd")
    p.add_argument("--kiln-json")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    if args.n < 1 or args.dim < 1 or args.k < 1 or args.threads < 1:
        fail("--n, --dim, --k and --threads must be at least 1")

    if args.cpus:
        try:
            cpus = {int(c) for c in args.cpus.split(",")}
            os.sched_setaffinity(0, cpus)
        except (ValueError, OSError) as e:
            fail(f"cannot pin to CPUs {args.cpus!r}: {e}; pass CPUs this machine has")
    kiln = kiln_numbers(args)
    f = faiss_numbers(args)
    out = {"n": args.n, "dim": args.dim, "k": args.k, "threads": args.threads, "faiss": f, "kiln": kiln}
    if kiln:
        out["ratios"] = {
            # > 1 means kiln is faster.
            "batch1_speedup": f["flat_batch1_ms"] / kiln["batch1_ms"],
            "batch16_speedup": f["flat_batch16_ms"] / kiln["batch16_ms"],
            "int8_speedup": f["sq8_ms"] / kiln["int8_ms"],
        }
        out["goals"] = {
            "batch16_at_least_4x_faiss": out["ratios"]["batch16_speedup"] >= 4.0,
            "batch1_share_at_least_85pct": kiln["batch1_bandwidth_share"] >= 0.85,
            "int8_at_most_2ms": kiln["int8_ms"] <= 2.0,
            "int8_recall_at_least_099": kiln["int8_recall_at_10"] >= 0.99,
        }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"n={args.n} dim={args.dim} k={args.k} threads={args.threads}  (medians, ms)")
    print(f"{'':24}{'FAISS ' + f['faiss_version']:>16}{'kiln':>12}{'speedup':>10}")
    rows = [
        ("exact batch 1", f["flat_batch1_ms"], kiln and kiln["batch1_ms"]),
        ("exact batch 16", f["flat_batch16_ms"], kiln and kiln["batch16_ms"]),
        ("int8 per query", f["sq8_ms"], kiln and kiln["int8_ms"]),
    ]
    for name, fv, kv in rows:
        ks = f"{kv:12.3f}{fv / kv:9.2f}x" if kv else ""
        print(f"{name:24}{fv:16.3f}{ks}")
    kr = f"{kiln['int8_recall_at_10']:12.4f}" if kiln else ""
    print(f"{'int8 recall@10':24}{f['sq8_recall_at_10']:16.4f}{kr}")
    if kiln:
        print(f"kiln read bandwidth {kiln['read_bandwidth_gbs']:.2f} GB/s, batch-1 share "
              f"{kiln['batch1_bandwidth_share'] * 100:.1f} %")
        for goal, ok in out["goals"].items():
            print(f"  {goal:32} {'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
