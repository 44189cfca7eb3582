//! Stateless seeded hashing (splitmix64 finaliser): every random-looking quantity of the simulator is a
//! pure function of the seed and the quantity's coordinates, so any value can be recomputed in isolation.

/// The splitmix64 finaliser: a bijective 64-bit mixer with good avalanche.
#[inline]
pub(crate) const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Hashes a key made of several words; order matters.
#[inline]
pub(crate) fn hash(words: &[u64]) -> u64 {
    let mut h = GOLDEN;
    for &w in words {
        h = mix(h ^ w.wrapping_add(GOLDEN));
    }
    h
}

/// A value in `lo..=hi` from a hash (`lo` if the range is empty).
#[inline]
pub(crate) const fn range(h: u64, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        return lo;
    }
    let span = hi - lo;
    if span == u64::MAX {
        return h;
    }
    lo + h % (span + 1)
}

/// Whether an event of probability `p` (clamped to `[0, 1]`) happens, decided by a hash.
#[inline]
pub(crate) fn chance(h: u64, p: f64) -> bool {
    if p.is_nan() || p <= 0.0 {
        return false;
    }
    if p >= 1.0 {
        return true;
    }
    ((h >> 11) as f64) < p * (1u64 << 53) as f64
}

/// Picks an index by integer weights (the first index if the weights are all zero).
#[inline]
pub(crate) fn pick(h: u64, weights: &[u32]) -> usize {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return 0;
    }
    let mut x = h % total;
    for (i, w) in weights.iter().enumerate() {
        let w = u64::from(*w);
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.len().saturating_sub(1)
}

/// Field tags, so that different quantities of the same object draw independent hashes.
pub(crate) mod tag {
    pub const FLATS: u64 = 1;
    pub const REGION: u64 = 2;
    pub const MUNICIPALITY: u64 = 3;
    pub const STREET: u64 = 4;
    pub const NUMBER: u64 = 5;
    pub const FEEDER: u64 = 6;
    pub const TRANSFORMER: u64 = 7;
    pub const LOSS: u64 = 8;
    pub const COMMON: u64 = 9;
    pub const INSTALLED: u64 = 10;
    pub const RESIDENTS: u64 = 11;
    pub const AREA: u64 = 12;
    pub const POWER: u64 = 13;
    pub const PATTERN: u64 = 14;
    pub const HEATING: u64 = 15;
    pub const PV: u64 = 16;
    pub const AC: u64 = 17;
    pub const SCALE: u64 = 18;
    pub const NT_SHARE: u64 = 19;
    pub const R0: u64 = 20;
    pub const LOAD_KEY: u64 = 21;
    pub const VOLTAGE: u64 = 22;
    pub const BUILDING_VOLTAGE: u64 = 23;
    pub const LOAD_SIZE: u64 = 24;
    pub const MASTER_R0: u64 = 25;
    pub const LIFT: u64 = 26;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_respects_bounds() {
        assert!(!chance(u64::MAX, 0.0));
        assert!(chance(u64::MAX, 1.0));
        assert!(!chance(0, f64::NAN));
        let hits = (0..100_000u64).filter(|i| chance(mix(*i), 0.25)).count();
        assert!((23_000..27_000).contains(&hits), "{hits}");
    }

    #[test]
    fn pick_follows_weights() {
        let mut counts = [0u32; 3];
        for i in 0..30_000u64 {
            counts[pick(mix(i), &[1, 0, 2])] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!(counts[2] > counts[0] * 3 / 2, "{counts:?}");
        assert_eq!(pick(7, &[0, 0]), 0);
        assert_eq!(pick(7, &[]), 0);
    }

    #[test]
    fn range_is_inclusive_and_safe() {
        for i in 0..1000u64 {
            let v = range(mix(i), 20, 150);
            assert!((20..=150).contains(&v));
        }
        assert_eq!(range(5, 9, 3), 9);
        assert_eq!(range(u64::MAX, 0, u64::MAX), u64::MAX);
        assert_eq!(range(u64::MAX, 0, u64::MAX - 1), 0);
    }
}
