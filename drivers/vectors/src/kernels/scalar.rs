//! Portable scalar kernels: the fallback on every CPU. Eight partial sums per pair keep
//! the order of additions close to the SIMD variants.

use super::Kind;

const LANES: usize = 8;

/// Exact score of one pair.
pub fn pair(kind: Kind, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += term(kind, x[l], y[l]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += term(kind, *x, *y);
    }
    s
}

#[inline(always)]
fn term(kind: Kind, x: f32, y: f32) -> f32 {
    match kind {
        Kind::Dot => x * y,
        Kind::L2 => (x - y) * (x - y),
    }
}

pub fn scores(kind: Kind, queries: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    let n = rows.len() / dim;
    for (qi, q) in queries.chunks_exact(dim).enumerate() {
        for (ri, r) in rows.chunks_exact(dim).enumerate() {
            out[qi * n + ri] = pair(kind, q, r);
        }
    }
}

pub fn scores_u8(queries: &[i8], codes: &[u8], stride: usize, out: &mut [i32]) {
    let n = codes.len() / stride;
    for (query, out) in queries.chunks_exact(stride).zip(out.chunks_exact_mut(n)) {
        for (o, row) in out.iter_mut().zip(codes.chunks_exact(stride)) {
            *o = row
                .iter()
                .zip(query)
                .map(|(&c, &q)| c as i32 * q as i32)
                .sum();
        }
    }
}

pub fn stream_sum(data: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = data.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}
