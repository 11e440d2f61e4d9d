//! Seeded randomness: a small fast generator and a Zipf sampler.
//!
//! The generator is SplitMix64 (a 64-bit counter passed through a strong mixing
//! function): one add and a few multiplies per draw, good enough statistically for
//! choosing ops and keys, and every run with the same `--seed` draws the same
//! sequence per client. [`mix64`] is its mixing function on its own, used to
//! derive value contents from `(seed, key, write counter)`.
//!
//! The Zipf sampler follows Gray et al., "Quickly generating billion-record
//! synthetic databases" (SIGMOD 1994), the method YCSB uses: after one pass to
//! compute the normalising constant `zeta(n, theta)`, each draw costs a `powf`.
//! It is exact for ranks 0 and 1 and a close approximation of the Zipf law for the
//! rest; it needs `0 < theta < 1`. For more than [`ZETA_EXACT`] keys the constant's
//! tail is approximated by an integral, which changes it by far less than one
//! part in a million.

/// Terms of `zeta(n, theta)` summed exactly; the rest is an integral.
pub const ZETA_EXACT: u64 = 10_000_000;

/// SplitMix64's finaliser: a bijective mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded SplitMix64 generator.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for `seed`; `stream` separates generators sharing a seed (one
    /// per client).
    pub fn new(seed: u64, stream: u64) -> Rng {
        Rng {
            state: mix64(seed ^ mix64(stream.wrapping_add(0x9e37_79b9_7f4a_7c15))),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// A draw in `0..n` (`n > 0`), by multiply-and-shift (bias below 2^-32 for any
    /// `n` this tool uses).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A draw in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws ranks `0..n` with probability proportional to `1 / (rank + 1)^theta`.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    half_pow: f64,
}

/// `sum_{i=1}^{n} i^-theta`, exact up to [`ZETA_EXACT`] terms.
pub fn zeta(n: u64, theta: f64) -> f64 {
    zeta_split(n, theta, ZETA_EXACT)
}

/// `zeta(n, theta)` with the first `exact` terms summed and the rest integrated.
fn zeta_split(n: u64, theta: f64, exact: u64) -> f64 {
    let m = n.min(exact);
    let mut sum = 0.0;
    for i in 1..=m {
        sum += (i as f64).powf(-theta);
    }
    if n > m {
        // sum_{i=m+1}^{n} f(i) ~ integral_m^n f + (f(n) - f(m)) / 2 (trapezoid).
        let (a, b) = (m as f64, n as f64);
        let integral = (b.powf(1.0 - theta) - a.powf(1.0 - theta)) / (1.0 - theta);
        sum += integral + (b.powf(-theta) - a.powf(-theta)) / 2.0;
    }
    sum
}

impl Zipf {
    /// A sampler over `n >= 1` ranks with `0 < theta < 1`.
    pub fn new(n: u64, theta: f64) -> Result<Zipf, String> {
        if n == 0 {
            return Err("zipf needs at least one key".into());
        }
        if !(theta > 0.0 && theta < 1.0) {
            return Err(format!("zipf theta must be in (0, 1), got {theta}"));
        }
        let zetan = zeta(n, theta);
        let zeta2 = 1.0 + 0.5f64.powf(theta);
        let eta = if n > 2 {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan)
        } else {
            0.0
        };
        Ok(Zipf {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
            half_pow: 0.5f64.powf(theta),
        })
    }

    /// The exponent.
    pub fn theta(&self) -> f64 {
        self.theta
    }

    /// One rank in `0..n`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zetan;
        if uz < 1.0 || self.n == 1 {
            return 0;
        }
        if uz < 1.0 + self.half_pow || self.n == 2 {
            return 1;
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        let mut a = Rng::new(7, 3);
        let mut b = Rng::new(7, 3);
        let mut c = Rng::new(7, 4);
        let xa: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let xc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut r = Rng::new(1, 0);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[r.below(10) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn zipf_is_skewed_as_the_law_says() {
        let n = 1000;
        let z = Zipf::new(n, 0.99).unwrap();
        let mut r = Rng::new(42, 0);
        let draws = 200_000;
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            counts[z.sample(&mut r) as usize] += 1;
        }
        // Rank 0 is drawn with probability 1/zeta(n), about 13% here; uniform
        // would give 0.1%.
        let p0 = 1.0 / zeta(n, 0.99);
        let got0 = counts[0] as f64 / draws as f64;
        assert!((got0 - p0).abs() < 0.01, "rank 0: {got0} vs {p0}");
        // The 10 hottest keys take far more than 1% of the draws...
        let top10: u64 = counts[..10].iter().sum();
        assert!(top10 as f64 / draws as f64 > 0.3, "top 10: {top10}");
        // ... and counts fall with rank.
        let head: u64 = counts[..100].iter().sum();
        let tail: u64 = counts[900..].iter().sum();
        assert!(head > 10 * tail, "head {head} tail {tail}");
        assert!(counts[0] > counts[1] && counts[1] > counts[5]);
        // Every rank stays in range, including with one or two keys.
        let one = Zipf::new(1, 0.5).unwrap();
        let two = Zipf::new(2, 0.5).unwrap();
        for _ in 0..1000 {
            assert_eq!(one.sample(&mut r), 0);
            assert!(two.sample(&mut r) < 2);
        }
    }

    #[test]
    fn zeta_tail_approximation_is_close() {
        // Half summed and half integrated, against all of it summed.
        let exact = zeta_split(2_000_000, 0.8, u64::MAX);
        let approx = zeta_split(2_000_000, 0.8, 1_000_000);
        assert!(approx != exact, "the split path was taken");
        assert!(
            ((approx - exact) / exact).abs() < 1e-6,
            "{approx} vs {exact}"
        );
        let short: f64 = (1..=10u64).map(|i| (i as f64).powf(-0.5)).sum();
        assert!((zeta(10, 0.5) - short).abs() < 1e-12);
    }
}
