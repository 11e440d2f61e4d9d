//! The simulator's randomness: a small hand-written generator (SplitMix64).
//!
//! Hand-written rather than a crate so that a seed means the same run forever: a
//! replay must not depend on which version of an RNG crate the build picked up.
//! SplitMix64 passes BigCrush, is one multiply-xorshift chain per draw, and its
//! mixing function doubles as a hash ([`mix`]), which the network uses to derive a
//! delay from *which* message it is (connection, direction, sequence number) rather
//! than from the order in which a service happened to emit its outputs. That keeps
//! runs exact even though the services iterate `HashMap`s, whose order differs from
//! one process to the next.

/// The SplitMix64 finalizer: a bijective 64-bit mix, used as a hash of small tuples.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes a seed and a few numbers into one well-mixed value.
pub fn hash(seed: u64, parts: &[u64]) -> u64 {
    let mut h = mix(seed ^ 0x9e37_79b9_7f4a_7c15);
    for &p in parts {
        h = mix(h ^ p.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
    h
}

/// A seeded SplitMix64 stream.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// Uniform in `0..n` (`n > 0`); the tiny modulo bias does not matter here.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p` (0.0 to 1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_fixed_forever() {
        // Pinned values: a change here would silently change every recorded seed.
        let mut r = Rng::new(1234);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        let mut again = Rng::new(1234);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_eq!(mix(0), 0);
        assert_eq!(Rng::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_ne!(hash(1, &[2, 3]), hash(1, &[3, 2]));
        let mut r = Rng::new(7);
        assert!((0..1000).all(|_| r.range(5, 9) >= 5 && r.range(5, 9) <= 9));
        assert!((0..1000).any(|_| r.chance(0.5)) && (0..1000).any(|_| !r.chance(0.5)));
    }
}
