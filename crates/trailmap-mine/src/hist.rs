//! Durations as a mergeable log-linear histogram.
//!
//! Exact quantiles over millions of transitions would mean keeping every duration, which is
//! neither bounded nor mergeable. Log-linear buckets (32 per power of two, as HdrHistogram
//! lays them out) keep relative error under 1.6% with at most 1,920 counters, merge by
//! adding counts, and cost a few bit operations per value. Count, sum (so the mean), minimum
//! and maximum are exact.

use serde::Serialize;

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

/// Bucket of a value: values below 64 have their own bucket; above, each power of two is cut
/// into 32 equal buckets.
#[inline]
fn bucket(v: u64) -> u32 {
    if v < SUB {
        return v as u32;
    }
    let e = 63 - v.leading_zeros();
    ((e - SUB_BITS + 1) as u64 * SUB + ((v >> (e - SUB_BITS)) & (SUB - 1))) as u32
}

/// Lowest value and width of a bucket.
fn bucket_range(b: u32) -> (u64, u64) {
    let (octave, sub) = (u64::from(b) / SUB, u64::from(b) % SUB);
    if octave == 0 {
        (sub, 1)
    } else {
        ((SUB + sub) << (octave - 1), 1 << (octave - 1))
    }
}

/// Durations in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurationHistogram {
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
    /// Bucket of `counts[0]`; the vector covers only the buckets between the smallest and
    /// largest value seen, so a rare transition costs a few counters, not 1,920.
    first: u32,
    counts: Vec<u64>,
}

impl DurationHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one duration; negative ones (which ordered journeys never produce) count as 0.
    #[inline]
    pub fn record(&mut self, micros: i64) {
        let v = micros.max(0) as u64;
        // The common case, a bucket inside the range already kept, is one bounds check
        // (a bucket below `first` wraps around to a large index).
        match self
            .counts
            .get_mut(bucket(v).wrapping_sub(self.first) as usize)
        {
            Some(c) => {
                *c += 1;
                self.count += 1;
                self.sum += u128::from(v);
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
            None => self.record_n(micros, 1),
        }
    }

    /// Records `n` equal durations.
    #[inline(never)]
    pub fn record_n(&mut self, micros: i64, n: u64) {
        if n == 0 {
            return;
        }
        let v = micros.max(0) as u64;
        let b = bucket(v);
        if self.counts.is_empty() {
            self.first = b;
            self.counts.push(0);
            self.min = v;
            self.max = v;
        }
        if b < self.first {
            let grow = (self.first - b) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.first = b;
        } else if (b - self.first) as usize >= self.counts.len() {
            self.counts.resize((b - self.first) as usize + 1, 0);
        }
        self.counts[(b - self.first) as usize] += n;
        self.count += n;
        self.sum += u128::from(v) * u128::from(n);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &DurationHistogram) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let first = self.first.min(other.first);
        let last = (self.first as usize + self.counts.len())
            .max(other.first as usize + other.counts.len());
        let mut counts = vec![0; last - first as usize];
        for (src_first, src) in [(self.first, &self.counts), (other.first, &other.counts)] {
            let at = (src_first - first) as usize;
            for (c, x) in counts[at..].iter_mut().zip(src) {
                *c += x;
            }
        }
        self.first = first;
        self.counts = counts;
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the durations, µs (exact).
    pub fn sum(&self) -> u128 {
        self.sum
    }

    /// How many durations are at most `micros`: exact at bucket edges, else counting the
    /// bucket holding `micros` whole (so within the buckets' 1.6%), as Prometheus
    /// histogram buckets (`le`) are read.
    pub fn count_at_most(&self, micros: i64) -> u64 {
        if micros < 0 || self.count == 0 {
            return 0;
        }
        let b = bucket(micros as u64);
        if b < self.first {
            return 0;
        }
        let upto = ((b - self.first) as usize + 1).min(self.counts.len());
        self.counts[..upto].iter().sum()
    }

    /// Exact mean, in microseconds.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The `q`-quantile (nearest rank) in microseconds, within 1.6% of the exact one; the
    /// minimum and maximum are exact.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank == 1 {
            return Some(self.min as f64);
        }
        if rank == self.count {
            return Some(self.max as f64);
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = bucket_range(self.first + i as u32);
                let mid = lo as f64 + (width - 1) as f64 / 2.0;
                return Some(mid.clamp(self.min as f64, self.max as f64));
            }
        }
        Some(self.max as f64)
    }

    /// Mean, median and p90 in seconds, for reports.
    pub fn summary(&self) -> DurationSummary {
        let s = |v: Option<f64>| v.map(|us| us / 1e6);
        DurationSummary {
            mean_seconds: s(self.mean()),
            median_seconds: s(self.quantile(0.5)),
            p90_seconds: s(self.quantile(0.9)),
        }
    }
}

/// Mean, median and p90 of a set of durations, in seconds (`None` when there are none).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct DurationSummary {
    pub mean_seconds: Option<f64>,
    pub median_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
}

/// Coarse, human bins for time-to-convert charts. Counted exactly (not from the log-linear
/// buckets) so bin edges are exact.
pub const HUMAN_BINS: [(&str, i64); 9] = [
    ("<1m", 60),
    ("1m-10m", 600),
    ("10m-1h", 3_600),
    ("1h-6h", 6 * 3_600),
    ("6h-1d", 86_400),
    ("1d-3d", 3 * 86_400),
    ("3d-7d", 7 * 86_400),
    ("7d-30d", 30 * 86_400),
    (">=30d", i64::MAX),
];

/// Index of the human bin a duration in microseconds falls in.
pub fn human_bin(micros: i64) -> usize {
    let secs = micros.div_euclid(1_000_000);
    HUMAN_BINS
        .iter()
        .position(|&(_, upper)| secs < upper)
        .unwrap_or(HUMAN_BINS.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_contiguous_and_cover_values() {
        let mut expected_lo = 0;
        for b in 0..1920 {
            let (lo, width) = bucket_range(b);
            assert_eq!(lo, expected_lo, "bucket {b}");
            assert_eq!(bucket(lo), b);
            assert_eq!(bucket(lo + (width - 1)), b);
            expected_lo = lo.wrapping_add(width);
        }
        assert_eq!(bucket(u64::MAX), 1919);
    }

    #[test]
    fn counts_at_most_a_bound_by_bucket() {
        let mut h = DurationHistogram::new();
        for v in [5, 10, 10, 1_000, 1_000_000] {
            h.record(v);
        }
        h.record_n(2_000_000, 3);
        assert_eq!(h.count(), 8);
        assert_eq!(h.sum(), 1_001_025 + 6_000_000);
        assert_eq!(h.count_at_most(-1), 0);
        assert_eq!(h.count_at_most(4), 0);
        assert_eq!(h.count_at_most(10), 3);
        assert_eq!(h.count_at_most(900), 3);
        assert_eq!(h.count_at_most(1_000), 4);
        assert_eq!(h.count_at_most(1_500_000), 5);
        assert_eq!(h.count_at_most(i64::MAX), 8);
    }

    proptest! {
        #[test]
        fn quantiles_within_relative_error(mut v in prop::collection::vec(0i64..10_000_000_000, 1..400), q in 0.0f64..1.0) {
            let mut h = DurationHistogram::new();
            for &x in &v { h.record(x); }
            v.sort();
            let rank = ((q * v.len() as f64).ceil() as usize).max(1);
            let exact = v[rank - 1] as f64;
            let got = h.quantile(q).unwrap();
            prop_assert!((got - exact).abs() <= exact / 64.0 + 0.5, "q {q}: {got} vs {exact}");
            prop_assert_eq!(h.mean().unwrap(), v.iter().map(|&x| x as u128).sum::<u128>() as f64 / v.len() as f64);
        }

        /// `record` takes a short path for values inside the buckets already kept and the
        /// general one otherwise; the order values come in must not show in the state.
        #[test]
        fn the_state_does_not_depend_on_the_order_of_values(v in prop::collection::vec(prop_oneof![-5i64..100, 0i64..1_000_000_000_000], 0..300)) {
            let (mut shuffled, mut ascending) = (DurationHistogram::new(), DurationHistogram::new());
            for &x in &v { shuffled.record(x); }
            let mut sorted = v.clone();
            sorted.sort();
            for &x in &sorted { ascending.record_n(x, 1); }
            prop_assert_eq!(&shuffled, &ascending);
            for &x in v.iter().filter(|&&x| x >= 0) {
                prop_assert_eq!(shuffled.count_at_most(x), sorted.iter().filter(|&&y| bucket(y.max(0) as u64) <= bucket(x as u64)).count() as u64);
            }
        }

        #[test]
        fn merge_equals_whole(v in prop::collection::vec(0i64..1_000_000_000_000, 0..300), cut in 0usize..300) {
            let cut = cut.min(v.len());
            let (mut a, mut b, mut whole) = (DurationHistogram::new(), DurationHistogram::new(), DurationHistogram::new());
            for &x in &v[..cut] { a.record(x); }
            for &x in &v[cut..] { b.record(x); }
            for &x in &v { whole.record(x); }
            a.merge(&b);
            prop_assert_eq!(a, whole);
        }
    }

    #[test]
    fn human_bins_have_exact_edges() {
        assert_eq!(human_bin(59_999_999), 0);
        assert_eq!(human_bin(60_000_000), 1);
        assert_eq!(human_bin(86_400_000_000), 5);
        assert_eq!(human_bin(i64::MAX), 8);
    }
}
