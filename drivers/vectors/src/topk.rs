//! Bounded top-k selection over (key, row) pairs, larger key is better. Pure data
//! structure; NaN keys order below every number (total order), so they never win.

/// Keeps the `k` entries with the largest keys seen so far.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    /// Min-heap on key: `heap[0]` is the weakest kept entry.
    heap: Vec<(f32, u32)>,
}

#[inline]
fn less(a: (f32, u32), b: (f32, u32)) -> bool {
    // Total order on key, ties broken by row so results are deterministic.
    match key_cmp(a.0, b.0) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => a.1 > b.1,
    }
}

#[inline]
fn key_cmp(a: f32, b: f32) -> std::cmp::Ordering {
    // NaN sorts lowest; otherwise numeric.
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

impl TopK {
    /// An empty selector for `k` entries (`k` may exceed the number pushed).
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: Vec::with_capacity(k.min(4096)),
        }
    }

    /// Current admission threshold: a key must beat this to enter once full.
    #[inline]
    pub fn threshold(&self) -> f32 {
        match self.heap.first() {
            Some(&(key, _)) if self.heap.len() >= self.k && !key.is_nan() => key,
            _ => f32::NEG_INFINITY,
        }
    }

    /// Offers one entry.
    #[inline]
    pub fn push(&mut self, key: f32, row: u32) {
        if self.k == 0 {
            return;
        }
        let e = (key, row);
        if self.heap.len() < self.k {
            self.heap.push(e);
            self.sift_up(self.heap.len() - 1);
        } else if less(self.heap[0], e) {
            self.heap[0] = e;
            self.sift_down(0);
        }
    }

    /// Offers a block of keys for rows `base..base + keys.len()`.
    #[inline]
    pub fn push_block(&mut self, keys: &[f32], base: u32) {
        let mut t = self.threshold();
        for (i, &key) in keys.iter().enumerate() {
            // Fast reject; ties and NaN go through the exact comparison.
            if key >= t || self.heap.len() < self.k {
                self.push(key, base + i as u32);
                t = self.threshold();
            }
        }
    }

    /// Merges another selector into this one.
    pub fn merge(&mut self, other: TopK) {
        for (key, row) in other.heap {
            self.push(key, row);
        }
    }

    /// The kept entries, best first.
    pub fn into_sorted(self) -> Vec<(f32, u32)> {
        let mut v = self.heap;
        v.sort_by(|a, b| {
            if less(*b, *a) {
                std::cmp::Ordering::Less
            } else if less(*a, *b) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        v
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if less(self.heap[i], self.heap[p]) {
                self.heap.swap(i, p);
                i = p;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let c = if r < n && less(self.heap[r], self.heap[l]) {
                r
            } else {
                l
            };
            if less(self.heap[c], self.heap[i]) {
                self.heap.swap(c, i);
                i = c;
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_largest_in_order_and_handles_small_inputs() {
        let keys = [3.0, -1.0, 7.5, 7.5, 0.0, f32::NAN, 2.0];
        let mut t = TopK::new(3);
        t.push_block(&keys, 10);
        let got = t.into_sorted();
        assert_eq!(got, vec![(7.5, 12), (7.5, 13), (3.0, 10)]);

        let mut t = TopK::new(100);
        t.push_block(&keys[..2], 0);
        assert_eq!(t.into_sorted(), vec![(3.0, 0), (-1.0, 1)]);

        let mut t = TopK::new(0);
        t.push(1.0, 0);
        assert!(t.into_sorted().is_empty());
    }
}
