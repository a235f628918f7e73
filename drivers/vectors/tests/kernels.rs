//! Kernels and searches against a plain f64 reference, for every ISA level the CPU has;
//! levels it lacks are reported as skipped (they cannot be run here).

use kiln_vectors::bench::gaussian;
use kiln_vectors::kernels::{self, Isa, Kind};
use kiln_vectors::{FlatIndex, Metric, PoolConfig, Quantisation, SearchPool};

fn levels() -> Vec<Isa> {
    let mut v = Vec::new();
    for isa in Isa::ALL {
        if isa.is_supported() {
            v.push(isa);
        } else {
            println!("SKIPPED: {isa} kernels not tested: this CPU does not report {isa}");
        }
    }
    v
}

/// Reference score and the magnitude that bounds its rounding error.
fn reference(kind: Kind, q: &[f32], x: &[f32]) -> (f64, f64) {
    let mut s = 0.0f64;
    let mut mag = 0.0f64;
    for (a, b) in q.iter().zip(x) {
        let t = match kind {
            Kind::Dot => *a as f64 * *b as f64,
            Kind::L2 => (*a as f64 - *b as f64).powi(2),
        };
        s += t;
        mag += t.abs();
    }
    (s, mag)
}

#[test]
fn f32_scores_match_reference_on_odd_shapes() {
    for isa in levels() {
        for &dim in &[
            1usize, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 127, 384, 385,
        ] {
            for &nq in &[1usize, 3, 4, 5, 8, 9, 12, 17] {
                for &n in &[1usize, 2, 3, 5, 17] {
                    let q = gaussian(nq, dim, (dim * 1000 + nq) as u64);
                    let x = gaussian(n, dim, (dim * 7 + n) as u64 + 99);
                    for kind in [Kind::Dot, Kind::L2] {
                        let mut out = vec![f32::NAN; nq * n];
                        kernels::scores(isa, kind, &q, &x, dim, &mut out);
                        let mut scalar = vec![f32::NAN; nq * n];
                        kernels::scores(Isa::Scalar, kind, &q, &x, dim, &mut scalar);
                        for qi in 0..nq {
                            for r in 0..n {
                                let (want, mag) = reference(
                                    kind,
                                    &q[qi * dim..(qi + 1) * dim],
                                    &x[r * dim..(r + 1) * dim],
                                );
                                let got = out[qi * n + r] as f64;
                                let sc = scalar[qi * n + r] as f64;
                                assert!(
                                    (got - sc).abs() <= 1e-5 * (mag + 1.0),
                                    "{isa} vs scalar {kind:?} dim={dim} nq={nq} n={n}: {got} vs {sc}"
                                );
                                assert!(
                                    (got - want).abs() <= 1e-5 * (mag + 1.0),
                                    "{isa} {kind:?} dim={dim} nq={nq} n={n} q={qi} r={r}: got {got}, want {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn int8_scores_are_exact() {
    let mut seed = 12345u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    for isa in levels() {
        for &stride in &[64usize, 128, 448] {
            for &n in &[1usize, 3, 4, 5, 9, 40] {
                for &nq in &[1usize, 2, 4, 5, 9] {
                    let codes: Vec<u8> = (0..n * stride).map(|_| next() as u8).collect();
                    // Include the extremes the kernels must not saturate on.
                    let mut q: Vec<i8> = (0..nq * stride)
                        .map(|_| (next() % 127) as i8 - 63)
                        .collect();
                    q[0] = 63;
                    q[1] = -63;
                    let mut out = vec![0i32; nq * n];
                    kernels::scores_u8(isa, &q, &codes, stride, &mut out);
                    for qi in 0..nq {
                        for r in 0..n {
                            let want: i64 = codes[r * stride..(r + 1) * stride]
                                .iter()
                                .zip(&q[qi * stride..(qi + 1) * stride])
                                .map(|(&c, &v)| c as i64 * v as i64)
                                .sum();
                            assert_eq!(
                                out[qi * n + r] as i64,
                                want,
                                "{isa} stride={stride} n={n} nq={nq} q={qi} r={r}"
                            );
                        }
                    }
                }
            }
        }
        // All-max codes against all-max query: the largest pair sums.
        let stride = 128;
        let codes = vec![255u8; stride * 2];
        for nq in [1, 4] {
            let q = vec![63i8; stride * nq];
            let mut out = vec![0i32; 2 * nq];
            kernels::scores_u8(isa, &q, &codes, stride, &mut out);
            assert_eq!(
                out,
                vec![255 * 63 * stride as i32; 2 * nq],
                "{isa} saturated"
            );
        }
    }
}

#[test]
fn stream_sum_matches() {
    for isa in levels() {
        for &len in &[0usize, 1, 31, 32, 33, 1000, 4097] {
            let v: Vec<f32> = (0..len).map(|i| (i % 5) as f32).collect();
            let want: f32 = v.iter().sum();
            assert_eq!(kernels::stream_sum(isa, &v), want, "{isa} len={len}");
        }
    }
}

/// Reference top-k: scores sorted best first (smaller is better for L2).
fn reference_topk(metric: Metric, data: &[f32], q: &[f32], dim: usize, k: usize) -> Vec<f64> {
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let qn = norm(q);
    let mut s: Vec<f64> = data
        .chunks_exact(dim)
        .map(|x| match metric {
            Metric::InnerProduct => reference(Kind::Dot, q, x).0,
            Metric::Cosine => reference(Kind::Dot, q, x).0 / (qn * norm(x)),
            Metric::L2 => reference(Kind::L2, q, x).0,
        })
        .collect();
    s.sort_by(|a, b| {
        if metric == Metric::L2 {
            a.total_cmp(b)
        } else {
            b.total_cmp(a)
        }
    });
    s.truncate(k);
    s
}

fn check_search(
    isa: Isa,
    metric: Metric,
    quant: Quantisation,
    n: usize,
    dim: usize,
    nq: usize,
    k: usize,
) {
    let pool = SearchPool::new(PoolConfig::threads(2)).unwrap();
    let mut data = gaussian(n, dim, 7 + n as u64);
    let raw = data.clone();
    let mut index = FlatIndex::new(dim, metric, quant);
    index.prepare(&mut data).unwrap();
    index.push(&data).unwrap();
    let mut q = gaussian(nq, dim, 99);
    let rawq = q.clone();
    index.prepare(&mut q).unwrap();
    let res = if quant == Quantisation::Int8 {
        index.search_int8(&pool, &q, k, isa).unwrap()
    } else {
        index.search_exact(&pool, &q, k, isa).unwrap()
    };
    assert_eq!(res.len(), nq);
    for (qi, hits) in res.iter().enumerate() {
        let want = reference_topk(metric, &raw, &rawq[qi * dim..(qi + 1) * dim], dim, k);
        assert_eq!(hits.len(), k.min(n), "{isa} {metric:?} k={k} n={n}");
        for (i, (row, score)) in hits.iter().enumerate() {
            let tol = 1e-4 * (want[i].abs() + 1.0);
            assert!(
                (*score as f64 - want[i]).abs() <= tol,
                "{isa} {metric:?} {quant:?} n={n} dim={dim} q={qi} rank {i}: got {score} want {}",
                want[i]
            );
            // The reported score belongs to the reported row.
            let own = reference_topk(
                metric,
                index.row(*row as usize),
                &q[qi * dim..(qi + 1) * dim],
                dim,
                1,
            )[0];
            assert!((own - *score as f64).abs() <= tol, "score/row mismatch");
        }
    }
}

#[test]
fn exact_topk_matches_reference_for_every_metric_and_isa() {
    for isa in levels() {
        for metric in [Metric::InnerProduct, Metric::Cosine, Metric::L2] {
            for &(n, dim, nq, k) in &[
                (1000, 33, 1, 10),
                (1000, 33, 16, 10),
                (777, 64, 5, 1),
                (3000, 384, 17, 25),
                (7, 9, 3, 50), // k larger than the collection
            ] {
                check_search(isa, metric, Quantisation::None, n, dim, nq, k);
            }
        }
    }
}

#[test]
fn int8_search_reranks_to_exact_scores() {
    for isa in levels() {
        for metric in [Metric::InnerProduct, Metric::Cosine, Metric::L2] {
            // 100 candidates out of 400-500 rows: the true top-k are among them here, so
            // the reranked results equal exact ones (scores included).
            check_search(isa, metric, Quantisation::Int8, 400, 17, 4, 10);
            check_search(isa, metric, Quantisation::Int8, 500, 33, 19, 3);
            // Fewer rows than candidates: answered by the exact scan.
            check_search(isa, metric, Quantisation::Int8, 5, 65, 2, 10);
        }
    }
}

#[test]
fn int8_recall_at_10_is_high() {
    let pool = SearchPool::new(PoolConfig::threads(1)).unwrap();
    let (n, dim, nq, k) = (10_000, 96, 30, 10);
    for isa in levels() {
        for metric in [Metric::InnerProduct, Metric::Cosine, Metric::L2] {
            let mut data = gaussian(n, dim, 5);
            let mut index = FlatIndex::new(dim, metric, Quantisation::Int8);
            index.prepare(&mut data).unwrap();
            index.push(&data).unwrap();
            let mut q = gaussian(nq, dim, 6);
            index.prepare(&mut q).unwrap();
            let exact = index.search_exact(&pool, &q, k, isa).unwrap();
            let approx = index.search_int8(&pool, &q, k, isa).unwrap();
            let mut hit = 0;
            for (e, a) in exact.iter().zip(&approx) {
                hit += a
                    .iter()
                    .filter(|(r, _)| e.iter().any(|(x, _)| x == r))
                    .count();
            }
            let recall = hit as f64 / (nq * k) as f64;
            assert!(recall >= 0.99, "{isa} {metric:?} recall {recall}");
        }
    }
}

#[test]
fn int8_index_survives_growth_and_deletes() {
    // Later batches widen the value range (requantisation) and deletes move rows.
    let pool = SearchPool::new(PoolConfig::threads(1)).unwrap();
    let dim = 24;
    let mut index = FlatIndex::new(dim, Metric::L2, Quantisation::Int8);
    let a = gaussian(300, dim, 1);
    let b: Vec<f32> = gaussian(300, dim, 2).iter().map(|v| v * 10.0).collect();
    index.push(&a).unwrap();
    index.push(&b).unwrap();
    for r in (0..600).step_by(3).rev() {
        index.swap_remove(r);
    }
    assert_eq!(index.len(), 400);
    for r in [0usize, 17, 399] {
        let q = index.row(r).to_vec();
        let res = index.search_int8(&pool, &q, 1, Isa::detect()).unwrap();
        assert_eq!(res[0][0].0 as usize, r);
        assert!(res[0][0].1.abs() < 1e-6);
    }
}
