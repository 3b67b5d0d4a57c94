//! What `bank bench` measured and how it is shown: the clients' tallies ([`crate::load::measure`])
//! merged into a [`BenchReport`] with [`Latency`] percentiles and the [`Invariants`] check, and
//! the report's human-readable rendering. For pictures (`bank bench --html`) the report also
//! carries the run's [`Throughput`] per time bucket and each kind's latency distribution as a
//! bounded list of [`LatencyPoint`]s.

use std::collections::BTreeMap;

use serde::Serialize;

use super::mix::Mix;
use super::stall::Stall;
use crate::check::HistoryEvent;
use crate::load::measure::{micros, Latency, LatencyPoint, Throughput};
use crate::load::pacing::OpenLoop;

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
    pub history: Vec<HistoryEvent>,
    /// Operations completed per second of the run (for pictures; not in `--json`).
    #[serde(skip)]
    pub throughput: Throughput,
    /// Each kind's latency distribution, and every request's as `"all"` (for pictures).
    #[serde(skip)]
    pub latency_curves: BTreeMap<String, Vec<LatencyPoint>>,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::measure::Tally;

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
}
