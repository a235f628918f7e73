//! AVX2+FMA kernels (8 f32 lanes, 32 int8 lanes). Callers must have checked AVX2 and FMA
//! on the running CPU; see `kernels::Isa::is_supported`.

use std::arch::x86_64::*;

use super::{GROUP_ROWS, Kind, QUERY_GROUP};

const W: usize = 8;

/// # Safety
/// The CPU must support AVX2 and FMA; slice shapes as in `kernels::scores`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn scores(kind: Kind, queries: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    // SAFETY: same contract as this function.
    unsafe {
        match kind {
            Kind::Dot => scores_k::<false>(queries, rows, dim, out),
            Kind::L2 => scores_k::<true>(queries, rows, dim, out),
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn scores_k<const L2: bool>(queries: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    let nq = queries.len() / dim;
    // SAFETY: slice shapes checked by the caller.
    unsafe {
        let done = group_pass::<QUERY_GROUP, GROUP_ROWS, L2>(queries, rows, dim, out, 0);
        let done = group_pass::<4, 1, L2>(queries, rows, dim, out, done);
        single_pass::<L2>(queries, rows, dim, out, done, nq);
    }
}

/// Queries `q0..` in whole groups of `QG`, `RG` rows at a time with row blocks outer and
/// query groups inner: a row block is read from memory once and stays in L1 while every
/// group uses it. Returns the first query not handled.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_pass<const QG: usize, const RG: usize, const L2: bool>(
    queries: &[f32],
    rows: &[f32],
    dim: usize,
    out: &mut [f32],
    q0: usize,
) -> usize {
    let nq = queries.len() / dim;
    let n = rows.len() / dim;
    let groups = (nq - q0) / QG;
    let qp = queries.as_ptr();
    let rp = rows.as_ptr();
    // SAFETY: every pointer addresses a full vector inside `queries` or `rows`.
    unsafe {
        if groups > 0 {
            let mut r = 0;
            while r < n {
                let rn = (n - r).min(RG);
                for g in 0..groups {
                    let qa = q0 + g * QG;
                    let qs: [*const f32; QG] = std::array::from_fn(|a| qp.add((qa + a) * dim));
                    if rn == RG {
                        let rs: [*const f32; RG] = std::array::from_fn(|j| rp.add((r + j) * dim));
                        let t = tile::<QG, RG, L2>(qs, rs, dim);
                        for (a, ta) in t.iter().enumerate() {
                            out[(qa + a) * n + r..(qa + a) * n + r + RG].copy_from_slice(ta);
                        }
                    } else {
                        for j in 0..rn {
                            let t = tile::<QG, 1, L2>(qs, [rp.add((r + j) * dim)], dim);
                            for (a, ta) in t.iter().enumerate() {
                                out[(qa + a) * n + r + j] = ta[0];
                            }
                        }
                    }
                }
                r += rn;
            }
        }
    }
    q0 + groups * QG
}

/// Queries `q0..q1` one at a time; the rows are read as one sequential stream (this
/// measured faster than interleaving rows or software prefetch).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn single_pass<const L2: bool>(
    queries: &[f32],
    rows: &[f32],
    dim: usize,
    out: &mut [f32],
    q0: usize,
    q1: usize,
) {
    let n = rows.len() / dim;
    let qp = queries.as_ptr();
    let rp = rows.as_ptr();
    // SAFETY: every pointer addresses a full vector inside `queries` or `rows`.
    unsafe {
        for qi in q0..q1 {
            let q = [qp.add(qi * dim)];
            let o = &mut out[qi * n..(qi + 1) * n];
            for (r, o) in o.iter_mut().enumerate() {
                *o = row_stream::<L2>(q[0], rp.add(r * dim), dim);
            }
        }
    }
}

/// One query against one row, four independent accumulators so the row is read as a
/// plain sequential stream.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_stream<const L2: bool>(q: *const f32, r: *const f32, dim: usize) -> f32 {
    // SAFETY: both pointers address `dim` readable floats (caller contract).
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 4 * W <= dim {
            for (j, a) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(r.add(i + j * W));
                let qv = _mm256_loadu_ps(q.add(i + j * W));
                *a = if L2 {
                    let d = _mm256_sub_ps(x, qv);
                    _mm256_fmadd_ps(d, d, *a)
                } else {
                    _mm256_fmadd_ps(qv, x, *a)
                };
            }
            i += 4 * W;
        }
        while i + W <= dim {
            let x = _mm256_loadu_ps(r.add(i));
            let qv = _mm256_loadu_ps(q.add(i));
            acc[0] = if L2 {
                let d = _mm256_sub_ps(x, qv);
                _mm256_fmadd_ps(d, d, acc[0])
            } else {
                _mm256_fmadd_ps(qv, x, acc[0])
            };
            i += W;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut s = hsum(v);
        for t in i..dim {
            let (qv, xv) = (*q.add(t), *r.add(t));
            s += if L2 { (xv - qv) * (xv - qv) } else { qv * xv };
        }
        s
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const Q: usize, const R: usize, const L2: bool>(
    q: [*const f32; Q],
    r: [*const f32; R],
    dim: usize,
) -> [[f32; R]; Q] {
    // SAFETY: each pointer addresses `dim` readable floats (caller contract).
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); R]; Q];
        let mut i = 0;
        while i + W <= dim {
            let mut x = [_mm256_setzero_ps(); R];
            for j in 0..R {
                x[j] = _mm256_loadu_ps(r[j].add(i));
            }
            for a in 0..Q {
                let qv = _mm256_loadu_ps(q[a].add(i));
                for j in 0..R {
                    acc[a][j] = if L2 {
                        let d = _mm256_sub_ps(x[j], qv);
                        _mm256_fmadd_ps(d, d, acc[a][j])
                    } else {
                        _mm256_fmadd_ps(qv, x[j], acc[a][j])
                    };
                }
            }
            i += W;
        }
        let mut res = [[0.0f32; R]; Q];
        for a in 0..Q {
            for j in 0..R {
                let mut s = hsum(acc[a][j]);
                for t in i..dim {
                    let (qv, xv) = (*q[a].add(t), *r[j].add(t));
                    s += if L2 { (xv - qv) * (xv - qv) } else { qv * xv };
                }
                res[a][j] = s;
            }
        }
        res
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// # Safety
/// The CPU must support AVX2; shapes as in `kernels::scores_u8` (stride a multiple of 32).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn scores_u8(queries: &[i8], codes: &[u8], stride: usize, out: &mut [i32]) {
    let nq = queries.len() / stride;
    let n = codes.len() / stride;
    // SAFETY: shapes checked by the caller; each helper stays inside its slices.
    unsafe {
        let mut q = 0;
        while q + 4 <= nq {
            u8_group(
                &queries[q * stride..(q + 4) * stride],
                codes,
                stride,
                &mut out[q * n..(q + 4) * n],
            );
            q += 4;
        }
        while q < nq {
            u8_one(
                &queries[q * stride..(q + 1) * stride],
                codes,
                stride,
                &mut out[q * n..(q + 1) * n],
            );
            q += 1;
        }
    }
}

/// Four queries share each loaded code row.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn u8_group(queries: &[i8], codes: &[u8], stride: usize, out: &mut [i32]) {
    const B: usize = 32;
    let n = codes.len() / stride;
    let qp = queries.as_ptr();
    let cp = codes.as_ptr();
    let ones = _mm256_set1_epi16(1);
    // SAFETY: loads stay inside `queries` (4 * stride bytes) and `codes` (n * stride bytes).
    unsafe {
        for r in 0..n {
            let mut acc = [_mm256_setzero_si256(); 4];
            let mut i = 0;
            while i < stride {
                let x = _mm256_loadu_si256(cp.add(r * stride + i) as *const __m256i);
                for (a, acc) in acc.iter_mut().enumerate() {
                    let qv = _mm256_loadu_si256(qp.add(a * stride + i) as *const __m256i);
                    let p = _mm256_maddubs_epi16(x, qv);
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(p, ones));
                }
                i += B;
            }
            for (a, acc) in acc.iter().enumerate() {
                out[a * n + r] = hsum_i32(*acc);
            }
        }
    }
}

/// One query, four rows per step.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn u8_one(query: &[i8], codes: &[u8], stride: usize, out: &mut [i32]) {
    const B: usize = 32;
    let n = out.len();
    let qp = query.as_ptr();
    let cp = codes.as_ptr();
    let ones = _mm256_set1_epi16(1);
    // SAFETY: all loads stay inside `query` (stride bytes) and `codes` (n * stride bytes).
    unsafe {
        let mut r = 0;
        while r + 4 <= n {
            super::prefetch(
                cp.wrapping_add((r + super::PREFETCH_CODE_ROWS) * stride),
                4 * stride,
            );
            let mut acc = [_mm256_setzero_si256(); 4];
            let mut i = 0;
            while i < stride {
                let qv = _mm256_loadu_si256(qp.add(i) as *const __m256i);
                for (j, a) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_si256(cp.add((r + j) * stride + i) as *const __m256i);
                    // u8 x i8 pairs -> i16 (cannot saturate: |q| <= 63), then pairs -> i32.
                    let p = _mm256_maddubs_epi16(x, qv);
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(p, ones));
                }
                i += B;
            }
            for (j, a) in acc.iter().enumerate() {
                out[r + j] = hsum_i32(*a);
            }
            r += 4;
        }
        while r < n {
            let mut acc = _mm256_setzero_si256();
            let mut i = 0;
            while i < stride {
                let qv = _mm256_loadu_si256(qp.add(i) as *const __m256i);
                let x = _mm256_loadu_si256(cp.add(r * stride + i) as *const __m256i);
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, qv), ones));
                i += B;
            }
            out[r] = hsum_i32(acc);
            r += 1;
        }
    }
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn stream_sum(data: &[f32]) -> f32 {
    let p = data.as_ptr();
    let n = data.len();
    // SAFETY: loads stay inside `data`.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 4 * W <= n {
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, _mm256_loadu_ps(p.add(i + j * W)));
            }
            i += 4 * W;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        hsum(v) + data[i..].iter().sum::<f32>()
    }
}
