//! Distance kernels over f32 and int8 with run-time ISA dispatch (scalar always, AVX2+FMA,
//! AVX-512 F+BW). Pure computation on caller-owned slices: no allocation beyond small
//! stack arrays, no I/O, no threads.
//!
//! Safety contract: an [`Isa`] other than `Scalar` is only executed after
//! [`Isa::is_supported`] confirmed it on the calling thread; the entry points below check
//! this and fall back to scalar otherwise, so they are safe to call from anywhere. Search
//! threads should still be pinned to CPUs that report the ISA (see `pool`), because on
//! hybrid parts the check is per CPU.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod scalar;

use serde::{Deserialize, Serialize};

/// Instruction-set level of a kernel. Ordered: a higher level needs more CPU features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    /// All levels, lowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// Whether the CPU running the calling thread supports this level.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best level the CPU running the calling thread supports.
    pub fn detect() -> Isa {
        *Isa::ALL
            .iter()
            .rev()
            .find(|isa| isa.is_supported())
            .unwrap_or(&Isa::Scalar)
    }

    /// The best level the CPU executing this instruction reports, read with CPUID and
    /// XGETBV right now rather than from the process-wide cache that
    /// `is_x86_feature_detected!` keeps (filled once, on whichever CPU asked first). Call
    /// it on a thread pinned to the CPU in question; the result is also capped by
    /// [`Isa::detect`], so it never claims more than the kernels' own check allows.
    pub fn detect_this_cpu() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            cpuid_level().min(Isa::detect())
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Isa::Scalar
        }
    }

    /// Lower-case name (`scalar`, `avx2`, `avx512`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// `self` if supported on this thread, else the best supported level below it.
    fn usable(self) -> Isa {
        if self.is_supported() {
            self
        } else {
            Isa::detect().min(self)
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn cpuid_level() -> Isa {
    use std::arch::x86_64::__cpuid_count;
    let leaf1 = __cpuid_count(1, 0);
    let max_leaf = __cpuid_count(0, 0).eax;
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    let avx = leaf1.ecx & (1 << 28) != 0;
    let fma = leaf1.ecx & (1 << 12) != 0;
    if !osxsave || !avx || max_leaf < 7 {
        return Isa::Scalar;
    }
    // SAFETY: OSXSAVE is set, so XGETBV is available and enabled by the OS.
    let xcr0 = unsafe { xgetbv0() };
    let leaf7 = __cpuid_count(7, 0);
    let ymm_state = xcr0 & 0b110 == 0b110;
    let zmm_state = xcr0 & 0b1110_0110 == 0b1110_0110;
    let avx2 = leaf7.ebx & (1 << 5) != 0;
    let avx512f = leaf7.ebx & (1 << 16) != 0;
    let avx512bw = leaf7.ebx & (1 << 30) != 0;
    if ymm_state && zmm_state && avx512f && avx512bw && avx2 && fma {
        Isa::Avx512
    } else if ymm_state && avx2 && fma {
        Isa::Avx2
    } else {
        Isa::Scalar
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller checked OSXSAVE.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a score kernel computes for a (query, row) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Inner product `q·x` (also cosine on normalised vectors).
    Dot,
    /// Squared Euclidean distance `|q-x|²`.
    L2,
}

/// Queries per micro-tile when several queries share a pass over the database.
pub(crate) const QUERY_GROUP: usize = 8;
/// Rows per micro-tile in that case (QUERY_GROUP x GROUP_ROWS accumulators).
pub(crate) const GROUP_ROWS: usize = 1;

/// Scores every query against every row.
///
/// `queries` holds `nq` vectors and `rows` holds `n` vectors, each `dim` floats, row-major.
/// Writes `out[q * n + r]`. Queries are processed in groups of 8 (then 4, then singly):
/// each row is loaded once and, while it sits in L1, every group scores it, so one pass
/// over memory serves all the queries.
///
/// Panics only on a programming error (slice lengths that do not match `dim`).
pub fn scores(isa: Isa, kind: Kind, queries: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    assert!(dim > 0 && queries.len().is_multiple_of(dim) && rows.len().is_multiple_of(dim));
    let nq = queries.len() / dim;
    let n = rows.len() / dim;
    assert_eq!(out.len(), nq * n);
    match isa.usable() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` confirmed AVX-512 F+BW on this thread.
        Isa::Avx512 => unsafe { avx512::scores(kind, queries, rows, dim, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` confirmed AVX2 and FMA on this thread.
        Isa::Avx2 => unsafe { avx2::scores(kind, queries, rows, dim, out) },
        _ => scalar::scores(kind, queries, rows, dim, out),
    }
}

/// Integer scores of quantised queries against quantised rows:
/// `out[q * n + r] = Σ query[q][i]·codes[r][i]`.
///
/// `codes` holds `n` rows of `stride` unsigned codes; `queries` holds rows of `stride`
/// signed codes whose magnitude is at most [`QUERY_CODE_MAX`] (so the AVX2/AVX-512 16-bit
/// pair sums cannot saturate and all variants agree exactly). Groups of four queries share
/// each row load. `stride` must be a multiple of [`CODE_ALIGN`].
pub fn scores_u8(isa: Isa, queries: &[i8], codes: &[u8], stride: usize, out: &mut [i32]) {
    assert!(
        stride > 0 && stride.is_multiple_of(CODE_ALIGN) && queries.len().is_multiple_of(stride)
    );
    assert!(codes.len().is_multiple_of(stride));
    assert_eq!(out.len(), queries.len() / stride * (codes.len() / stride));
    debug_assert!(
        queries
            .iter()
            .all(|&v| (v as i32).abs() <= QUERY_CODE_MAX as i32)
    );
    match isa.usable() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` confirmed AVX-512 F+BW on this thread.
        Isa::Avx512 => unsafe { avx512::scores_u8(queries, codes, stride, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` confirmed AVX2 and FMA on this thread.
        Isa::Avx2 => unsafe { avx2::scores_u8(queries, codes, stride, out) },
        _ => scalar::scores_u8(queries, codes, stride, out),
    }
}

/// Sum of all values, read as a stream: used to measure read bandwidth.
pub fn stream_sum(isa: Isa, data: &[f32]) -> f32 {
    match isa.usable() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` confirmed AVX-512 F+BW on this thread.
        Isa::Avx512 => unsafe { avx512::stream_sum(data) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `usable` confirmed AVX2 and FMA on this thread.
        Isa::Avx2 => unsafe { avx2::stream_sum(data) },
        _ => scalar::stream_sum(data),
    }
}

/// int8 code rows ahead of the current ones that scans prefetch.
pub(crate) const PREFETCH_CODE_ROWS: usize = 32;

/// Hints the cache to fetch `elems` elements from `p` (a hint: never faults, may be out
/// of bounds).
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T, elems: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let b = p as *const i8;
        let bytes = elems * std::mem::size_of::<T>();
        let mut o = 0;
        while o < bytes {
            // SAFETY: prefetch is a hint and does not fault on any address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(o)) };
            o += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, elems);
}

/// Quantised rows are padded with zero codes to a multiple of this many bytes.
pub const CODE_ALIGN: usize = 64;

/// Largest magnitude of a quantised query code (see [`scores_u8`]).
pub const QUERY_CODE_MAX: i8 = 63;

/// Exact score of one pair, scalar; used for reranking a few candidates.
pub fn pair(kind: Kind, a: &[f32], b: &[f32]) -> f32 {
    scalar::pair(kind, a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_probe_agrees_with_std_detection() {
        // On a uniform CPU (every test machine) the raw probe and std's cache agree.
        assert_eq!(Isa::detect_this_cpu(), Isa::detect());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            cpuid_level() >= Isa::Avx2,
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        );
    }
}
