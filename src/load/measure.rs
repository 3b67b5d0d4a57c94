//! What a run measures, whatever drives it: each client's [`Tally`] (latency histograms by kind
//! of request, errors by kind, the money its acknowledged writes moved), [`Latency`]
//! percentiles, a latency distribution as a bounded list of [`LatencyPoint`]s, and the run's
//! [`Throughput`] per time bucket. The driver ([`super::driver`]) counts throughput and
//! [`super::driver::drive`] tallies; `bank bench` ([`super::bench`]) reports all of it.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles of one kind of request, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub requests: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Latency {
        Latency {
            requests: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// One point of a latency distribution: `percentile` (0..=100) of requests took at most
/// `latency_us`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyPoint {
    pub percentile: f64,
    pub latency_us: u64,
}

/// Points of a latency distribution at most, whatever the number of requests.
const LATENCY_POINTS_MAX: usize = 2_000;

/// The distribution of `histogram` as percentile points, denser towards the tail (HdrHistogram's
/// quantile iteration: 5 steps per halving of the distance to 100%), ending at the maximum.
pub(crate) fn latency_curve(histogram: &Histogram<u64>) -> Vec<LatencyPoint> {
    let mut points: Vec<LatencyPoint> = Vec::new();
    if histogram.is_empty() {
        return points;
    }
    for step in histogram.iter_quantiles(5).take(LATENCY_POINTS_MAX) {
        let point = LatencyPoint {
            percentile: step.quantile_iterated_to() * 100.0,
            latency_us: histogram.highest_equivalent(step.value_iterated_to()),
        };
        if points
            .last()
            .is_none_or(|last| last.percentile < point.percentile)
        {
            points.push(point);
        }
    }
    let max = LatencyPoint {
        percentile: 100.0,
        latency_us: histogram.max(),
    };
    match points.last_mut() {
        Some(last) if last.percentile >= 100.0 => *last = max,
        _ => points.push(max),
    }
    points
}

/// Operations completed per time bucket of a run (batch items count one each, refused and
/// failed ones too: this is what the cluster answered). Bounded: at most [`Throughput::BUCKETS_MAX`]
/// buckets; a longer run doubles the bucket width, merging neighbours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Throughput {
    pub bucket_ms: u64,
    /// `completions[i]`: operations completed in `[i, i + 1) * bucket_ms` from the start.
    pub completions: Vec<u64>,
}

impl Default for Throughput {
    fn default() -> Self {
        Throughput {
            bucket_ms: 1_000,
            completions: Vec::new(),
        }
    }
}

impl Throughput {
    /// Buckets kept at most: an hour of one-second buckets.
    pub const BUCKETS_MAX: usize = 3_600;

    /// `operations` completed at `at` from the start of the run.
    pub fn record(&mut self, at: Duration, operations: u64) {
        let at_ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        let mut bucket = at_ms / self.bucket_ms;
        while bucket >= Self::BUCKETS_MAX as u64 {
            self.coarsen();
            bucket = at_ms / self.bucket_ms;
        }
        let bucket = bucket as usize;
        if self.completions.len() <= bucket {
            self.completions.resize(bucket + 1, 0);
        }
        self.completions[bucket] = self.completions[bucket].saturating_add(operations);
    }

    /// Doubles the bucket width.
    fn coarsen(&mut self) {
        self.bucket_ms = self.bucket_ms.saturating_mul(2);
        self.completions = self
            .completions
            .chunks(2)
            .map(|pair| pair.iter().fold(0u64, |sum, n| sum.saturating_add(*n)))
            .collect();
    }

    /// Adds what `other` counted (over the same run, from the same start).
    pub fn merge(&mut self, mut other: Throughput) {
        while self.bucket_ms < other.bucket_ms {
            self.coarsen();
        }
        while other.bucket_ms < self.bucket_ms {
            other.coarsen();
        }
        if self.completions.len() < other.completions.len() {
            self.completions.resize(other.completions.len(), 0);
        }
        for (into, n) in self.completions.iter_mut().zip(other.completions) {
            *into = into.saturating_add(n);
        }
    }

    /// Operations per second in each bucket, with the bucket's start in seconds. The last
    /// bucket is divided by the part of it the run lasted (`elapsed`), not its whole width.
    pub fn rates(&self, elapsed: Duration) -> Vec<(f64, f64)> {
        let width_s = self.bucket_ms as f64 / 1_000.0;
        let elapsed_s = elapsed.as_secs_f64();
        self.completions
            .iter()
            .enumerate()
            .map(|(index, &n)| {
                let start_s = index as f64 * width_s;
                let covered_s = (elapsed_s - start_s).clamp(width_s / 100.0, width_s);
                (start_s, n as f64 / covered_s)
            })
            .collect()
    }
}

/// What one client measured (or several, merged).
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    pub histograms: BTreeMap<&'static str, Histogram<u64>>,
    pub errors: BTreeMap<String, u64>,
    pub operations: u64,
    /// Acknowledged deposits minus withdrawals.
    pub net: i128,
    /// Deposits / withdrawals whose outcome is unknown.
    pub unknown_in: i128,
    pub unknown_out: i128,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            histograms: BTreeMap::new(),
            errors: BTreeMap::new(),
            operations: 0,
            net: 0,
            unknown_in: 0,
            unknown_out: 0,
        }
    }

    /// One request of `kind` took `latency`.
    pub fn record(&mut self, kind: &'static str, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.histograms
            .entry(kind)
            .or_insert_with(histogram)
            .saturating_record(micros);
    }

    /// One operation failed with an error of `kind`.
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// A write moving `delta` (deposits positive, withdrawals negative) has an unknown outcome.
    pub fn unknown(&mut self, delta: i128) {
        if delta > 0 {
            self.unknown_in += delta;
        } else {
            self.unknown_out -= delta;
        }
    }

    /// Adds what `other` measured.
    pub fn merge(&mut self, other: Tally) {
        for (kind, histogram) in other.histograms {
            let into = self.histograms.entry(kind).or_insert_with(self::histogram);
            // Same bounds on both sides: adding cannot fail.
            let _ = into.add(&histogram);
        }
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.operations += other.operations;
        self.net += other.net;
        self.unknown_in += other.unknown_in;
        self.unknown_out += other.unknown_out;
    }

    /// Every request of every kind in one histogram.
    pub fn all(&self) -> Histogram<u64> {
        let mut all = histogram();
        for histogram in self.histograms.values() {
            // Same bounds on both sides: adding cannot fail.
            let _ = all.add(histogram);
        }
        all
    }

    /// Percentiles by kind of request.
    pub fn latency_by_kind(&self) -> BTreeMap<String, Latency> {
        self.histograms
            .iter()
            .map(|(kind, h)| (kind.to_string(), Latency::of(h)))
            .collect()
    }

    /// The latency distribution of each kind of request, and of all as `"all"`.
    pub fn latency_curves(&self) -> BTreeMap<String, Vec<LatencyPoint>> {
        let mut curves: BTreeMap<String, Vec<LatencyPoint>> = self
            .histograms
            .iter()
            .map(|(kind, h)| (kind.to_string(), latency_curve(h)))
            .collect();
        curves.insert("all".to_string(), latency_curve(&self.all()));
        curves
    }
}

/// A duration in microseconds as milliseconds: 2 decimals below 10 ms, 1 from there.
pub(crate) fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}ms", us as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_bucketed_bounded_and_merged() {
        let mut one = Throughput::default();
        one.record(Duration::from_millis(10), 1);
        one.record(Duration::from_millis(999), 2);
        one.record(Duration::from_millis(2_500), 4);
        assert_eq!(one.completions, [3, 0, 4]);
        let rates = one.rates(Duration::from_millis(2_250));
        assert_eq!(rates[0], (0.0, 3.0));
        assert_eq!(
            rates[2],
            (2.0, 16.0),
            "the last bucket counts only the time run"
        );
        let mut long = Throughput::default();
        long.record(Duration::from_secs(2 * 3_600 + 1), 5);
        assert_eq!(long.bucket_ms, 4_000);
        assert!(long.completions.len() <= Throughput::BUCKETS_MAX);
        one.merge(long);
        assert_eq!(one.bucket_ms, 4_000);
        assert_eq!(one.completions[0], 7);
        assert_eq!(one.completions.iter().sum::<u64>(), 12);
    }
}
