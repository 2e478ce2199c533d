//! The seeded pseudo-random generator behind every random choice (values, GUIDs, payload picks).
//!
//! xoshiro256** (Blackman & Vigna, <https://prng.di.unimi.it/>) seeded through SplitMix64, as the
//! authors recommend. Why not the `rand` crate: ~40 lines give us everything needed (uniform integers
//! and doubles) without adding its code and its `getrandom` dependency to the browser bundle, and a
//! fixed algorithm keeps runs reproducible across versions: the same seed always gives the same messages.

/// xoshiro256** state. Not cryptographic; never use it for keys or tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        Rng { s: [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x)] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)`; `0` when `n == 0`. Lemire's multiply-shift with rejection (no modulo bias).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in `[lo, hi)` like .NET's `Random.Next(lo, hi)`; `lo` when `hi <= lo`.
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo.wrapping_add(self.below(hi.wrapping_sub(lo) as u64) as i64)
    }
}

/// A per-device seed from a run seed and a device id (FNV-1a of the id mixed with the seed), so that
/// every device of a fleet gets its own reproducible sequence.
pub fn device_seed(run_seed: u64, device_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut x = h ^ run_seed;
    splitmix64(&mut x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_and_xoshiro_match_the_reference_outputs() {
        // SplitMix64 from 0: first output of the reference implementation.
        let mut x = 0;
        assert_eq!(splitmix64(&mut x), 0xE220_A839_7B1D_CDAF);
        // xoshiro256** with state [1, 2, 3, 4]: reference outputs 11520, 0, 1509978240, 1215971899390074240.
        let mut r = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(8);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ranges_stay_in_bounds_and_cover_them() {
        let mut r = Rng::new(1);
        let mut seen = [false; 3];
        for _ in 0..1000 {
            let v = r.range_i64(23, 26);
            assert!((23..26).contains(&v));
            seen[(v - 23) as usize] = true;
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        assert_eq!(seen, [true; 3]);
        assert_eq!(r.range_i64(5, 5), 5);
        assert_eq!(r.below(0), 0);
        let full = r.range_i64(i64::MIN, i64::MAX);
        assert!(full < i64::MAX);
    }

    #[test]
    fn device_seeds_differ_per_device_and_per_run() {
        assert_eq!(device_seed(1, "sim000001"), device_seed(1, "sim000001"));
        assert_ne!(device_seed(1, "sim000001"), device_seed(1, "sim000002"));
        assert_ne!(device_seed(1, "sim000001"), device_seed(2, "sim000001"));
    }
}
