//! What `bank bench` measured and how it is shown: each client's [`Tally`] (latency
//! histograms by kind of request, errors by kind, the money its acknowledged writes moved),
//! merged into a [`BenchReport`] with [`Latency`] percentiles and the [`Invariants`] check, and
//! the report's human-readable rendering. For pictures (`bank bench --html`) the report also
//! carries the run's [`Throughput`] per time bucket and each kind's latency distribution as a
//! bounded list of [`LatencyPoint`]s.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::mix::Mix;
use crate::load::pacing::OpenLoop;
use super::stall::Stall;
use crate::check::Event;

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

/// The invariant check's findings.
#[derive(Debug, Clone, Serialize)]
pub struct Invariants {
    pub branches_agree: bool,
    pub total: i128,
    pub expected_min: i128,
    pub expected_max: i128,
    pub negative_balances: u64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub branches: usize,
    pub clients: usize,
    /// Concurrent callers sharing each client (`--callers-per-client`; 1: one each).
    pub callers_per_client: usize,
    pub batch: usize,
    pub accounts: u64,
    pub mix: Mix,
    pub elapsed_s: f64,
    /// Operations that got an answer (batch items count one each).
    pub operations: u64,
    pub operations_per_s: f64,
    /// In an open loop (`--rate`), every latency is from when the request was due.
    pub latency: Latency,
    pub latency_by_kind: BTreeMap<String, Latency>,
    /// With `--rate`: the rate asked for and achieved, and the requests that started late.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoop>,
    /// Refused or failed operations, by kind of error.
    pub errors: BTreeMap<String, u64>,
    /// The longest time between two consecutive acknowledged writes.
    pub longest_stall: Stall,
    pub invariants: Invariants,
    #[serde(skip)]
    pub history: Vec<Event>,
    /// Operations completed per second of the run (for pictures; not in `--json`).
    #[serde(skip)]
    pub throughput: Throughput,
    /// Each kind's latency distribution, and every request's as `"all"` (for pictures).
    #[serde(skip)]
    pub latency_curves: BTreeMap<String, Vec<LatencyPoint>>,
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

impl BenchReport {
    /// "16 clients", or "1 clients × 64 callers each" when callers share a client.
    pub fn clients_label(&self) -> String {
        match self.callers_per_client {
            0 | 1 => format!("{} clients", self.clients),
            callers => format!("{} clients × {callers} callers each", self.clients),
        }
    }

    /// The human-readable summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(
            &mut out,
            format!(
                "{} operations in {:.2} s: {:.0} ops/s ({} branches, {}, batch {}, {} accounts)",
                self.operations,
                self.elapsed_s,
                self.operations_per_s,
                self.branches,
                self.clients_label(),
                self.batch,
                self.accounts
            ),
        );
        if let Some(open) = &self.open_loop {
            line(&mut out, open.summary());
        }
        line(
            &mut out,
            format!(
                "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "latency", "requests", "p50", "p90", "p99", "p99.9", "max"
            ),
        );
        let row = |name: &str, l: &Latency| {
            format!(
                "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name,
                l.requests,
                micros(l.p50_us),
                micros(l.p90_us),
                micros(l.p99_us),
                micros(l.p999_us),
                micros(l.max_us)
            )
        };
        for (kind, latency) in &self.latency_by_kind {
            line(&mut out, row(kind, latency));
        }
        line(&mut out, row("all", &self.latency));
        if self.errors.is_empty() {
            line(&mut out, "errors: none".to_string());
        } else {
            let errors: Vec<String> = self
                .errors
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            line(&mut out, format!("errors: {}", errors.join(", ")));
        }
        line(
            &mut out,
            format!(
                "longest stall: {:.3} s between acknowledged writes",
                self.longest_stall.seconds
            ),
        );
        let i = &self.invariants;
        line(
            &mut out,
            format!(
                "invariants: {} (branches agree: {}, total {} expected {}..={}, negative balances {})",
                if i.passed { "ok" } else { "VIOLATED" },
                i.branches_agree,
                i.total,
                i.expected_min,
                i.expected_max,
                i.negative_balances
            ),
        );
        out
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
    fn tallies_merge_and_render() {
        let mut one = Tally::new();
        one.record("deposit", Duration::from_micros(1_500));
        one.operations += 1;
        one.net += 10;
        let mut two = Tally::new();
        two.record("deposit", Duration::from_micros(12_000));
        two.error("deposit_unavailable");
        two.unknown(-5);
        one.merge(two);
        assert_eq!(one.all().len(), 2);
        assert_eq!((one.net, one.unknown_in, one.unknown_out), (10, 0, 5));
        let report = BenchReport {
            branches: 3,
            clients: 2,
            callers_per_client: 1,
            batch: 1,
            accounts: 10,
            mix: Mix::default(),
            elapsed_s: 1.0,
            operations: one.operations,
            operations_per_s: 1.0,
            latency: Latency::of(&one.all()),
            latency_by_kind: one.latency_by_kind(),
            open_loop: None,
            errors: one.errors.clone(),
            longest_stall: Stall::default(),
            invariants: Invariants {
                branches_agree: true,
                total: 10,
                expected_min: 5,
                expected_max: 10,
                negative_balances: 0,
                passed: true,
            },
            history: Vec::new(),
            throughput: Throughput::default(),
            latency_curves: one.latency_curves(),
        };
        let text = report.render();
        assert!(text.starts_with("1 operations in 1.00 s: 1 ops/s (3 branches, 2 clients"));
        assert!(text.contains("deposit            2    1.50ms"), "{text}");
        assert!(text.contains("errors: deposit_unavailable 1"), "{text}");
        assert!(
            text.ends_with("expected 5..=10, negative balances 0)\n"),
            "{text}"
        );
        let all = &report.latency_curves["all"];
        assert_eq!(all.first().map(|p| p.latency_us), Some(1_500));
        assert_eq!(
            all.last(),
            Some(&LatencyPoint {
                percentile: 100.0,
                latency_us: 12_007
            })
        );
        assert!(all.windows(2).all(|w| w[0].percentile < w[1].percentile));
        let paced = BenchReport {
            open_loop: Some(OpenLoop {
                rate_per_s: 200.0,
                requests: 400,
                achieved_per_s: 199.54,
                late: 3,
                worst_late_us: 12_300,
            }),
            ..report
        };
        assert_eq!(
            paced.render().lines().nth(1),
            Some("open loop at 200 requests/s: achieved 199.5/s; 3 of 400 started late (>= 1 ms after due), worst 12.3ms; latency from each request's due time")
        );
    }

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
