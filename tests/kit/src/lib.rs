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

/// Deterministic pseudo-random bytes (xorshift), for file contents that must compare exactly.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
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
