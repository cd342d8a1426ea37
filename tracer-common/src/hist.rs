//! Log-linear latency histogram, shared by the kernel programs (which only
//! call [`bucket_index`]) and user space (which turns buckets back into
//! ranges and percentiles).
//!
//! Values are nanoseconds. Below `2^SUB_BITS` every value has its own bucket;
//! above, each power of two is split into `2^SUB_BITS` equal sub-buckets, so a
//! bucket is never wider than 1/16 of its lower edge. Reporting a bucket's
//! midpoint is therefore within [`MAX_RELATIVE_ERROR`] of any value in it.

/// log2 of the number of sub-buckets per power of two.
pub const SUB_BITS: u32 = 4;
/// Sub-buckets per power of two.
pub const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// Largest exponent with its own buckets; bigger values (about 550 s and up)
/// are counted in the last bucket.
pub const MAX_EXP: u32 = 39;
/// Number of buckets.
pub const NBUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as usize) * SUB_BUCKETS;
/// Worst-case relative error of a value reported as its bucket's midpoint.
pub const MAX_RELATIVE_ERROR: f64 = 1.0 / (2 * SUB_BUCKETS) as f64;

/// Floor of log2 for v > 0, written without loops or `leading_zeros` so that
/// it compiles to straight-line BPF the verifier accepts on every kernel.
#[inline(always)]
pub fn log2_u64(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Bucket of a value. Always `< NBUCKETS`.
#[inline(always)]
pub fn bucket_index(v: u64) -> usize {
    if v < SUB_BUCKETS as u64 {
        return v as usize;
    }
    let exp = log2_u64(v);
    if exp > MAX_EXP {
        return NBUCKETS - 1;
    }
    let shift = exp - SUB_BITS;
    let sub = ((v >> shift) as usize) & (SUB_BUCKETS - 1);
    (((exp - SUB_BITS + 1) as usize) << SUB_BITS) | sub
}

/// Inclusive lower edge of a bucket.
pub fn bucket_low(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let exp = (index >> SUB_BITS) as u32 + SUB_BITS - 1;
    let sub = (index & (SUB_BUCKETS - 1)) as u64;
    (1u64 << exp) + (sub << (exp - SUB_BITS))
}

/// Exclusive upper edge of a bucket (the last bucket also holds everything
/// above it; its nominal edge is returned).
pub fn bucket_high(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64 + 1;
    }
    let exp = (index >> SUB_BITS) as u32 + SUB_BITS - 1;
    bucket_low(index) + (1u64 << (exp - SUB_BITS))
}

/// Latency distribution as the kernel keeps it: one per aggregation row and
/// CPU, summed in user space.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LatencyHist {
    /// Number of timed samples (equals the sum of `buckets`).
    pub samples: u64,
    /// Sum of all samples, ns.
    pub sum_ns: u64,
    /// Largest sample, ns (exact, not bucketed).
    pub max_ns: u64,
    pub buckets: [u64; NBUCKETS],
}

impl LatencyHist {
    pub const fn zeroed() -> Self {
        Self { samples: 0, sum_ns: 0, max_ns: 0, buckets: [0; NBUCKETS] }
    }

    /// Records one sample. Callers in the kernel own a per-CPU copy, so
    /// plain adds are race-free.
    #[inline(always)]
    pub fn record(&mut self, ns: u64) {
        let index = bucket_index(ns);
        if let Some(bucket) = self.buckets.get_mut(index) {
            *bucket += 1;
        }
        self.samples += 1;
        self.sum_ns += ns;
        if ns > self.max_ns {
            self.max_ns = ns;
        }
    }

    /// Adds another histogram into this one (per-CPU merge).
    pub fn merge(&mut self, other: &Self) {
        self.samples += other.samples;
        self.sum_ns += other.sum_ns;
        if other.max_ns > self.max_ns {
            self.max_ns = other.max_ns;
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += *theirs;
        }
    }

    /// `self - earlier`, for per-interval deltas of cumulative kernel
    /// counters. `max_ns` cannot be differenced; the caller supplies the
    /// interval's max when it knows one, else the cumulative max is kept.
    pub fn delta_since(&self, earlier: &Self) -> Self {
        let mut out = *self;
        out.samples = self.samples.saturating_sub(earlier.samples);
        out.sum_ns = self.sum_ns.saturating_sub(earlier.sum_ns);
        for (o, e) in out.buckets.iter_mut().zip(earlier.buckets.iter()) {
            *o = o.saturating_sub(*e);
        }
        if out.samples == 0 {
            out.max_ns = 0;
        }
        out
    }

    /// Value at quantile `ppm` (parts per million: 990_000 is p99), as the
    /// midpoint of the bucket holding it, clamped to the exact maximum.
    /// `None` without samples.
    pub fn quantile_ns(&self, ppm: u64) -> Option<u64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // 1-based rank of the smallest sample with at least `ppm` of all
        // samples at or below it.
        let rank = (ppm as u128 * total as u128).div_ceil(1_000_000) as u64;
        let rank = rank.clamp(1, total);
        let mut seen = 0;
        for (index, &count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let low = bucket_low(index);
                let mid = low + (bucket_high(index) - low) / 2;
                return Some(if self.max_ns > 0 { mid.min(self.max_ns) } else { mid });
            }
        }
        None
    }
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self::zeroed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic samples without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    #[test]
    fn log2_matches_leading_zeros() {
        let mut rng = Rng(7);
        for _ in 0..100_000 {
            let v = rng.next() >> (rng.next() % 64);
            if v > 0 {
                assert_eq!(log2_u64(v), 63 - v.leading_zeros(), "{v}");
            }
        }
        assert_eq!(log2_u64(1), 0);
        assert_eq!(log2_u64(u64::MAX), 63);
    }

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        assert_eq!(bucket_low(0), 0);
        for i in 0..NBUCKETS - 1 {
            assert_eq!(bucket_high(i), bucket_low(i + 1), "gap after bucket {i}");
            assert!(bucket_low(i) < bucket_high(i));
        }
        assert_eq!(NBUCKETS, 592);
    }

    #[test]
    fn every_value_lands_in_its_bucket() {
        for v in 0..5000u64 {
            let i = bucket_index(v);
            assert!(bucket_low(i) <= v && v < bucket_high(i), "{v} in {i}");
        }
        let mut rng = Rng(42);
        let limit = bucket_high(NBUCKETS - 1);
        for _ in 0..200_000 {
            let v = rng.next() >> (rng.next() % 64);
            let i = bucket_index(v);
            assert!(i < NBUCKETS);
            if v < limit {
                assert!(bucket_low(i) <= v && v < bucket_high(i), "{v} in {i}");
            } else {
                assert_eq!(i, NBUCKETS - 1, "{v} clamps into the last bucket");
            }
        }
    }

    #[test]
    fn buckets_are_at_most_a_sixteenth_wide() {
        for i in SUB_BUCKETS..NBUCKETS {
            let (low, high) = (bucket_low(i), bucket_high(i));
            assert!((high - low) * SUB_BUCKETS as u64 <= low, "bucket {i}: [{low}, {high})");
        }
    }

    fn exact_quantile(sorted: &[u64], ppm: u64) -> u64 {
        let rank = ((ppm as u128 * sorted.len() as u128).div_ceil(1_000_000) as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// The stated error bound holds against exact quantiles of the samples,
    /// for several shapes of distribution.
    #[test]
    fn percentiles_are_within_the_stated_error() {
        let mut rng = Rng(1234);
        let shapes: [&dyn Fn(&mut Rng) -> u64; 4] = [
            &|r| 1 + r.next() % 2_000_000,                      // uniform up to 2 ms
            &|r| 1000 << (r.next() % 20),                       // powers of two
            &|r| (r.next() % 1000 + 1) * (r.next() % 1000 + 1), // skewed
            &|r| if r.next() % 100 == 0 { 50_000_000 } else { 20_000 + r.next() % 5000 }, // outliers
        ];
        for shape in shapes {
            for n in [1usize, 7, 100, 10_000] {
                let mut samples: Vec<u64> = (0..n).map(|_| shape(&mut rng)).collect();
                let mut hist = LatencyHist::zeroed();
                for &s in &samples {
                    hist.record(s);
                }
                samples.sort_unstable();
                assert_eq!(hist.samples, n as u64);
                assert_eq!(hist.max_ns, *samples.last().unwrap());
                for ppm in [500_000, 900_000, 990_000, 999_000, 1_000_000] {
                    let exact = exact_quantile(&samples, ppm) as f64;
                    let est = hist.quantile_ns(ppm).unwrap() as f64;
                    let err = (est - exact).abs() / exact;
                    assert!(err <= MAX_RELATIVE_ERROR, "ppm {ppm} n {n}: est {est} exact {exact} err {err}");
                }
            }
        }
    }

    #[test]
    fn merge_and_delta_are_inverse() {
        let mut a = LatencyHist::zeroed();
        let mut b = LatencyHist::zeroed();
        for v in [10, 2000, 30_000] {
            a.record(v);
        }
        for v in [5, 70_000] {
            b.record(v);
        }
        let mut sum = a;
        sum.merge(&b);
        assert_eq!(sum.samples, 5);
        assert_eq!(sum.max_ns, 70_000);
        let back = sum.delta_since(&a);
        assert_eq!(back.samples, b.samples);
        assert_eq!(back.sum_ns, b.sum_ns);
        assert_eq!(back.buckets, b.buckets);
        assert_eq!(LatencyHist::zeroed().quantile_ns(500_000), None);
    }
}
