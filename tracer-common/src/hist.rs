//! Exponential latency histogram, shared by the kernel programs (which only
//! call [`bucket_index`]) and user space (which turns buckets back into
//! ranges and percentiles).
//!
//! Values are nanoseconds. The layout is the one of Prometheus native
//! histograms at schema 4 and OpenTelemetry exponential histograms at scale
//! 4: bucket `i` holds the values in `(2^((i-1)/16), 2^(i/16)]` (upper edge
//! inclusive), so consecutive edges differ by a factor of 2^(1/16), about
//! 4.4%. Exporting the buckets carries tracer's own counts with no
//! re-bucketing, and histograms from many hosts add up exactly.
//!
//! Slot 0 of [`LatencyHist::buckets`] counts zeros (the zero bucket); slot
//! `i + 1` is bucket `i` for `0 <= i <= MAX_INDEX`; the last slot counts
//! values above `2^MAX_EXP` ns (about 18 minutes).

/// log2 of the number of buckets per power of two (the schema, or scale).
pub const SCHEMA: u32 = 4;
/// Buckets per power of two.
pub const BUCKETS_PER_OCTAVE: u32 = 1 << SCHEMA;
/// Values up to `2^MAX_EXP` ns have their own bucket.
pub const MAX_EXP: u32 = 40;
/// Largest exponential bucket index with its own slot.
pub const MAX_INDEX: u32 = MAX_EXP * BUCKETS_PER_OCTAVE;
/// Number of slots: the zero bucket, buckets 0..=MAX_INDEX, the overflow.
pub const NBUCKETS: usize = MAX_INDEX as usize + 3;
/// Slot of values above `2^MAX_EXP` ns.
pub const OVERFLOW_SLOT: usize = NBUCKETS - 1;
/// Worst-case relative error of a value reported as its bucket's midpoint:
/// half a bucket's width relative to its lower edge, (2^(1/16) - 1) / 2.
pub const MAX_RELATIVE_ERROR: f64 = 0.0222;

/// `floor(2^(k/16) * 2^63)` for k = 1..=15, computed exactly with integer
/// arithmetic (`c^16 <= 2^(k + 63*16) < (c+1)^16`). `c >> (63 - e)` is then
/// exactly `floor(2^(e + k/16))`, so edges need no floating point, in the
/// kernel or here.
const FRACTIONS: [u64; 15] = [
    0x85aa_c367_cc48_7b14, // 2^(1/16)
    0x8b95_c1e3_ea8b_d6e6, // 2^(2/16)
    0x91c3_d373_ab11_c336, // 2^(3/16)
    0x9837_f051_8db8_a96f, // 2^(4/16)
    0x9ef5_3260_91a1_11ad, // 2^(5/16)
    0xa5fe_d6a9_b151_38ea, // 2^(6/16)
    0xad58_3eea_42a1_4ac6, // 2^(7/16)
    0xb504_f333_f9de_6484, // 2^(8/16)
    0xbd08_a39f_580c_36be, // 2^(9/16)
    0xc567_2a11_5506_dadd, // 2^(10/16)
    0xce24_8c15_1f84_80e3, // 2^(11/16)
    0xd744_fcca_d69d_6af4, // 2^(12/16)
    0xe0cc_deec_2a94_e111, // 2^(13/16)
    0xeac0_c6e7_dd24_392e, // 2^(14/16)
    0xf525_7d15_2486_cc2c, // 2^(15/16)
];

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

/// `floor(2^(exp + k/16))` for `exp <= 63 - 1`, `1 <= k <= 15`.
#[inline(always)]
fn fraction_edge(exp: u32, k: usize) -> u64 {
    FRACTIONS[k - 1] >> (63 - exp)
}

/// Slot of a value. Always `< NBUCKETS`.
#[inline(always)]
pub fn bucket_index(v: u64) -> usize {
    if v == 0 {
        return 0;
    }
    let exp = log2_u64(v);
    if exp >= MAX_EXP {
        return if v == 1 << MAX_EXP { MAX_INDEX as usize + 1 } else { OVERFLOW_SLOT };
    }
    if v == 1 << exp {
        return (exp * BUCKETS_PER_OCTAVE) as usize + 1;
    }
    // Edges passed within the octave, counted without a branch: a compare
    // per edge would double the paths the verifier walks 15 times (6.1's
    // gives up, "BPF program is too large"). Here v and every edge are below
    // 2^40, so `edge - v` wraps (top bit set) exactly when v > edge.
    let shift = 63 - exp;
    let mut passed = 0u64;
    macro_rules! step {
        ($($i:literal)*) => { $( passed += (FRACTIONS[$i] >> shift).wrapping_sub(v) >> 63; )* };
    }
    step!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14);
    (exp * BUCKETS_PER_OCTAVE + 1 + passed as u32) as usize + 1
}

/// The exponential bucket index of a slot (`None` for the zero bucket and
/// the overflow slot).
pub fn schema_index(slot: usize) -> Option<i32> {
    (1..=MAX_INDEX as usize + 1).contains(&slot).then(|| slot as i32 - 1)
}

/// The slot of exponential bucket index `index`, if it has one.
pub fn slot_of_index(index: i32) -> Option<usize> {
    (0..=MAX_INDEX as i32).contains(&index).then(|| index as usize + 1)
}

/// `floor(2^(index/16))`, the largest integer in bucket `index`.
pub fn floor_upper_edge(index: u32) -> u64 {
    let (exp, k) = (index / BUCKETS_PER_OCTAVE, (index % BUCKETS_PER_OCTAVE) as usize);
    if k == 0 { 1u64 << exp } else { fraction_edge(exp, k) }
}

/// Smallest and largest integer value counted in a slot (`first > last`
/// for the few buckets below 16 ns that hold no integer).
pub fn slot_values(slot: usize) -> (u64, u64) {
    match schema_index(slot) {
        None if slot == 0 => (0, 0),
        None => ((1 << MAX_EXP) + 1, u64::MAX),
        Some(0) => (1, 1),
        Some(index) => {
            let index = index as u32;
            (floor_upper_edge(index - 1) + 1, floor_upper_edge(index))
        }
    }
}

/// Real edges of a slot in ns, `(low, high]` as Prometheus and OTel read
/// them (the overflow slot's high edge is `u64::MAX`).
pub fn slot_edges_ns(slot: usize) -> (f64, f64) {
    match schema_index(slot) {
        None if slot == 0 => (0.0, 0.0),
        None => ((1u64 << MAX_EXP) as f64, u64::MAX as f64),
        Some(index) => (edge_ns(index - 1), edge_ns(index)),
    }
}

/// `2^(index/16)` in ns.
fn edge_ns(index: i32) -> f64 {
    let octave = index.div_euclid(BUCKETS_PER_OCTAVE as i32);
    let k = index.rem_euclid(BUCKETS_PER_OCTAVE as i32) as usize;
    let fraction = if k == 0 { 1.0 } else { FRACTIONS[k - 1] as f64 / (1u64 << 63) as f64 };
    fraction * pow2(octave)
}

/// 2^e for a small exponent, without `f64::powi` (not in `core`).
fn pow2(e: i32) -> f64 {
    if e >= 0 { (1u64 << e) as f64 } else { 1.0 / (1u64 << -e) as f64 }
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
                let (first, last) = slot_values(index);
                let mid = first + last.saturating_sub(first) / 2;
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

    /// `2^(index/16)` from std's exp2, to check the integer constants
    /// against an independent computation.
    fn reference_edge(index: u32) -> f64 {
        (index as f64 / 16.0).exp2()
    }

    #[test]
    fn edges_are_the_integers_at_2_to_the_i_over_16() {
        for index in 1..=MAX_INDEX {
            let edge = floor_upper_edge(index);
            let reference = reference_edge(index);
            // The floor of the real edge (f64 is exact enough away from
            // integers; the powers of two are exact).
            assert_eq!(edge, reference.floor() as u64, "index {index}");
            if edge == floor_upper_edge(index - 1) {
                continue; // below 16 ns: a bucket that holds no integer
            }
            // Upper-inclusive: the edge itself is in bucket `index`, the
            // next integer in a later one.
            assert_eq!(schema_index(bucket_index(edge)), Some(index as i32), "edge of {index}");
            let next = schema_index(bucket_index(edge + 1));
            assert!(next.is_none_or(|n| n > index as i32), "{edge}+1 after bucket {index}");
        }
    }

    #[test]
    fn powers_of_two_close_their_bucket() {
        for exp in 0..=MAX_EXP {
            assert_eq!(schema_index(bucket_index(1 << exp)), Some((exp * 16) as i32), "2^{exp}");
        }
        // From 32 ns on, every bucket holds an integer.
        for exp in 5..MAX_EXP {
            assert_eq!(schema_index(bucket_index((1 << exp) + 1)), Some((exp * 16 + 1) as i32));
        }
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index((1 << MAX_EXP) + 1), OVERFLOW_SLOT);
        assert_eq!(bucket_index(u64::MAX), OVERFLOW_SLOT);
    }

    #[test]
    fn slots_tile_the_integers_without_gaps() {
        let mut next = 0;
        for slot in 0..NBUCKETS {
            let (first, last) = slot_values(slot);
            if first > last {
                continue; // a bucket below 16 ns holding no integer
            }
            assert_eq!(first, next, "slot {slot}");
            next = last.wrapping_add(1);
        }
        assert_eq!(next, 0, "the overflow slot ends at u64::MAX");
    }

    #[test]
    fn every_value_lands_in_its_bucket() {
        let mut rng = Rng(42);
        for v in (0..5000u64).chain((0..200_000).map(|_| rng.next() >> (rng.next() % 64))) {
            let slot = bucket_index(v);
            assert!(slot < NBUCKETS);
            let (first, last) = slot_values(slot);
            assert!(first <= v && v <= last, "{v} in slot {slot}: [{first}, {last}]");
            let (low, high) = slot_edges_ns(slot);
            if let Some(index) = schema_index(slot) {
                assert!(low < v as f64 && v as f64 <= high * (1.0 + 1e-15), "{v} in bucket {index}");
                assert_eq!(slot_of_index(index), Some(slot));
            }
        }
    }

    #[test]
    fn buckets_are_a_sixteenth_of_an_octave() {
        for index in 1..=MAX_INDEX as i32 {
            let (low, high) = slot_edges_ns(slot_of_index(index).unwrap());
            assert!((high / low - reference_edge(1)).abs() < 1e-12, "bucket {index}");
        }
    }

    /// Two hosts' histograms merged equal the histogram of all their
    /// samples, bucket for bucket: what lets a fleet add them up exactly.
    #[test]
    fn merged_hosts_equal_the_union() {
        let mut rng = Rng(99);
        let host_a: Vec<u64> = (0..5000).map(|_| rng.next() % 50_000_000).collect();
        let host_b: Vec<u64> = (0..7000).map(|_| 1000 + rng.next() % 900_000).collect();
        let (mut a, mut b, mut union) = (LatencyHist::zeroed(), LatencyHist::zeroed(), LatencyHist::zeroed());
        host_a.iter().for_each(|&v| a.record(v));
        host_b.iter().for_each(|&v| b.record(v));
        host_a.iter().chain(&host_b).for_each(|&v| union.record(v));
        a.merge(&b);
        assert_eq!(a.buckets, union.buckets);
        assert_eq!((a.samples, a.sum_ns, a.max_ns), (union.samples, union.sum_ns, union.max_ns));
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
