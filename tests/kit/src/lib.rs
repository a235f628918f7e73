//! Harnesses that more than one test suite uses: zfs-fuse pools, a private bus, fake ports,
//! a runtime. Each one owns what it starts and
//! stops it when dropped, also when the test fails, so no run depends on what an
//! earlier one left behind.

pub mod bus;
pub mod fakes;
pub mod zfs;

/// A current-thread tokio runtime with time and I/O, for a test's async calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A seeded xorshift generator: reproducible runs for file contents, fuzzers and drills.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Deterministic pseudo-random bytes, for file contents that must compare exactly.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| (r.next_u64() >> 24) as u8).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_deterministic_per_seed() {
        assert_eq!(super::bytes(7, 64), super::bytes(7, 64));
        assert_ne!(super::bytes(7, 64), super::bytes(8, 64));
        assert_eq!(super::bytes(1, 1000).len(), 1000);
    }
}
