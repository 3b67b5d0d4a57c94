//! What `bank bench` measured and how it is shown: each client's [`Tally`] (latency
//! histograms by kind of request, errors by kind, the money its acknowledged writes moved),
//! merged into a [`BenchReport`] with [`Latency`] percentiles and the [`Invariants`] check, and
//! the report's human-readable rendering.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::mix::Mix;
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
    pub batch: usize,
    pub accounts: u64,
    pub mix: Mix,
    pub elapsed_s: f64,
    /// Operations that got an answer (batch items count one each).
    pub operations: u64,
    pub operations_per_s: f64,
    pub latency: Latency,
    pub latency_by_kind: BTreeMap<String, Latency>,
    /// Refused or failed operations, by kind of error.
    pub errors: BTreeMap<String, u64>,
    pub invariants: Invariants,
    #[serde(skip)]
    pub history: Vec<Event>,
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
}

impl BenchReport {
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
                "{} operations in {:.2} s: {:.0} ops/s ({} branches, {} clients, batch {}, {} accounts)",
                self.operations,
                self.elapsed_s,
                self.operations_per_s,
                self.branches,
                self.clients,
                self.batch,
                self.accounts
            ),
        );
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

fn micros(us: u64) -> String {
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
            batch: 1,
            accounts: 10,
            mix: Mix::default(),
            elapsed_s: 1.0,
            operations: one.operations,
            operations_per_s: 1.0,
            latency: Latency::of(&one.all()),
            latency_by_kind: one.latency_by_kind(),
            errors: one.errors.clone(),
            invariants: Invariants {
                branches_agree: true,
                total: 10,
                expected_min: 5,
                expected_max: 10,
                negative_balances: 0,
                passed: true,
            },
            history: Vec::new(),
        };
        let text = report.render();
        assert!(text.starts_with("1 operations in 1.00 s: 1 ops/s (3 branches, 2 clients"));
        assert!(text.contains("deposit            2    1.50ms"), "{text}");
        assert!(text.contains("errors: deposit_unavailable 1"), "{text}");
        assert!(
            text.ends_with("expected 5..=10, negative balances 0)\n"),
            "{text}"
        );
    }
}
