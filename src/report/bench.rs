//! `bank bench --html`: a run as a page. Two charts in inline SVG — throughput over the run
//! (operations completed per second, from [`BenchReport::throughput`]) and the latency
//! distribution as an HDR percentile plot (latency against percentile on a log scale of
//! 1/(1 − p), one curve per kind of request and one for all, from
//! [`BenchReport::latency_curves`]) — with the command line, the machine, the date and the
//! summary numbers.

use std::fmt::Write;
use std::time::Duration;

use crate::load::bench::{BenchReport, Latency, LatencyPoint};

use super::chart::{ticks, Frame};
use super::html::{count, duration_us, escape, page};
use super::RunContext;

const CHART_WIDTH: f64 = 1_000.0;
const CHART_HEIGHT: f64 = 360.0;

/// Colours of the latency curves, in the order of their kinds; "all" is drawn in black.
const COLOURS: [&str; 6] = [
    "#2f6fdf", "#e0731a", "#3f9b57", "#9c4ddb", "#c93636", "#188a8a",
];

/// The throughput chart: operations per second in each second of the run.
pub fn throughput_svg(report: &BenchReport) -> String {
    let elapsed = Duration::from_secs_f64(report.elapsed_s.max(0.0));
    let rates = report.throughput.rates(elapsed);
    let width_s = report.throughput.bucket_ms as f64 / 1_000.0;
    // Each rate is drawn at the middle of the part of its bucket the run lasted.
    let points: Vec<(f64, f64)> = rates
        .iter()
        .map(|&(start_s, rate)| {
            let end_s = (start_s + width_s).min(report.elapsed_s.max(start_s));
            ((start_s + end_s) / 2.0, rate)
        })
        .collect();
    let x_max = report.elapsed_s.max(1.0);
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
    let frame = Frame::new(CHART_WIDTH, CHART_HEIGHT, (0.0, x_max), (0.0, y_max));
    let mut svg = frame.open("throughput", "Throughput: operations completed per second");
    let x_ticks: Vec<(f64, String)> = ticks(0.0, x_max, 10)
        .into_iter()
        .map(|s| (s, format!("{s} s")))
        .collect();
    let y_ticks: Vec<(f64, String)> = ticks(0.0, y_max, 6)
        .into_iter()
        .map(|v| (v, count(v as u64)))
        .collect();
    svg.push_str(&frame.x_axis(&x_ticks, "time into the run"));
    svg.push_str(&frame.y_axis(&y_ticks, "operations / s"));
    svg.push_str(
        &frame.series("throughput", COLOURS[0], &points, true, |index| {
            let (start_s, rate) = rates[index];
            format!(
                "{start_s:.0}\u{2013}{:.0} s: {} ops/s",
                start_s + width_s,
                count(rate.round() as u64)
            )
        }),
    );
    svg.push_str("</svg>");
    svg
}

/// How far along the percentile axis `percentile` is: log10 of 1/(1 − p), capped at
/// `level_max` (100% itself would be infinitely far).
fn level(percentile: f64, level_max: f64) -> f64 {
    let remaining = 1.0 - percentile / 100.0;
    if remaining <= 0.0 {
        level_max
    } else {
        (1.0 / remaining).log10().min(level_max)
    }
}

/// The percentile label of a whole level: 0 → 0%, 1 → 90%, 2 → 99%, 3 → 99.9%, ...
fn level_label(level: u32) -> String {
    match level {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

/// A round latency as a tick label: `duration_us` without trailing zeros (`150 ms`, `2.5 ms`).
fn tick_label(us: f64) -> String {
    let label = duration_us(us);
    match label.split_once(' ') {
        Some((number, unit)) if number.contains('.') => {
            format!(
                "{} {unit}",
                number.trim_end_matches('0').trim_end_matches('.')
            )
        }
        _ => label,
    }
}

/// The HDR percentile plot: each kind's curve and all requests' together.
pub fn percentile_svg(report: &BenchReport) -> String {
    // The last point (100%) is drawn one level past the last finite one, and at least at
    // 99.9%, so the tail has room.
    let finite_max = report
        .latency_curves
        .values()
        .flatten()
        .filter(|p| p.percentile < 100.0)
        .map(|p| level(p.percentile, f64::MAX))
        .fold(0.0, f64::max);
    let level_max = (finite_max.ceil() + 1.0).max(3.0);
    let latency_max = report
        .latency_curves
        .values()
        .flatten()
        .map(|p| p.latency_us as f64)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let frame = Frame::new(
        CHART_WIDTH,
        CHART_HEIGHT + 40.0,
        (0.0, level_max),
        (0.0, latency_max),
    );
    let mut svg = frame.open(
        "percentiles",
        "Latency by percentile (HDR plot: log scale of 1/(1 \u{2212} p))",
    );
    let x_ticks: Vec<(f64, String)> = (0..=level_max as u32)
        .map(|n| (f64::from(n), level_label(n)))
        .collect();
    let y_ticks: Vec<(f64, String)> = ticks(0.0, latency_max, 6)
        .into_iter()
        .map(|us| (us, tick_label(us)))
        .collect();
    svg.push_str(&frame.x_axis(&x_ticks, "percentile"));
    svg.push_str(&frame.y_axis(&y_ticks, "latency"));
    let mut legend_y = 42.0;
    let kinds = report
        .latency_curves
        .iter()
        .filter(|(kind, _)| kind.as_str() != "all")
        .chain(report.latency_curves.get_key_value("all"));
    for (index, (kind, curve)) in kinds.enumerate() {
        let colour = if kind == "all" {
            "#1d2433"
        } else {
            COLOURS[index % COLOURS.len()]
        };
        svg.push_str(&curve_series(&frame, kind, colour, curve, level_max));
        let _ = write!(
            svg,
            "<rect x=\"90\" y=\"{:.0}\" width=\"14\" height=\"3\" fill=\"{colour}\"/>\
             <text x=\"110\" y=\"{legend_y:.0}\">{}</text>",
            legend_y - 5.0,
            escape(kind)
        );
        legend_y += 15.0;
    }
    svg.push_str("</svg>");
    svg
}

fn curve_series(
    frame: &Frame,
    kind: &str,
    colour: &str,
    curve: &[LatencyPoint],
    level_max: f64,
) -> String {
    let points: Vec<(f64, f64)> = curve
        .iter()
        .map(|p| (level(p.percentile, level_max), p.latency_us as f64))
        .collect();
    frame.series(kind, colour, &points, false, |index| {
        format!(
            "{kind}: {:.4}% at most {}",
            curve[index].percentile,
            duration_us(curve[index].latency_us as f64)
        )
    })
}

/// The summary numbers, as tables.
fn summary(report: &BenchReport) -> String {
    let mut html = format!(
        "<h2>Summary</h2>\n<p><b>{} operations in {:.2} s: {} ops/s</b> ({} branches, {}, \
         batch {}, {} accounts; mix deposit {}%, withdraw {}%, transfer {}%, query {}%)</p>\n",
        count(report.operations),
        report.elapsed_s,
        count(report.operations_per_s.round() as u64),
        report.branches,
        report.clients_label(),
        report.batch,
        report.accounts,
        report.mix.deposit,
        report.mix.withdraw,
        report.mix.transfer,
        report.mix.query,
    );
    if let Some(open) = &report.open_loop {
        let _ = writeln!(html, "<p>{}</p>", escape(&open.summary()));
    }
    html.push_str(
        "<table><tr><th>latency</th><th class=\"num\">requests</th><th class=\"num\">p50</th>\
         <th class=\"num\">p90</th><th class=\"num\">p99</th><th class=\"num\">p99.9</th>\
         <th class=\"num\">max</th></tr>",
    );
    let row = |html: &mut String, kind: &str, l: &Latency| {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(kind),
            count(l.requests),
            duration_us(l.p50_us as f64),
            duration_us(l.p90_us as f64),
            duration_us(l.p99_us as f64),
            duration_us(l.p999_us as f64),
            duration_us(l.max_us as f64)
        );
    };
    for (kind, latency) in &report.latency_by_kind {
        row(&mut html, kind, latency);
    }
    row(&mut html, "all", &report.latency);
    html.push_str("</table>\n");
    let errors: Vec<String> = report
        .errors
        .iter()
        .map(|(kind, n)| format!("{} {}", escape(kind), count(*n)))
        .collect();
    let _ = writeln!(
        html,
        "<p>Errors: {}</p>",
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        }
    );
    let i = &report.invariants;
    let _ = writeln!(
        html,
        "<p>Invariants: <b>{}</b> (branches agree: {}, total {} expected {}..={}, negative balances {})</p>",
        if i.passed { "ok" } else { "VIOLATED" },
        i.branches_agree,
        i.total,
        i.expected_min,
        i.expected_max,
        i.negative_balances
    );
    html
}

/// The page of a bench run.
pub fn bench_page(report: &BenchReport, context: &RunContext) -> String {
    let (class, verdict) = if report.invariants.passed {
        ("passed", "Invariants hold")
    } else {
        ("failed", "The invariant check failed")
    };
    let mut body = format!(
        "<h1>bank bench</h1>\n<div class=\"banner {class}\">{verdict}<span class=\"message\">\
         {} operations, {} ops/s, p99 {}</span></div>\n",
        count(report.operations),
        count(report.operations_per_s.round() as u64),
        duration_us(report.latency.p99_us as f64),
    );
    body.push_str(&context.table());
    let _ = writeln!(
        body,
        "<h2>Throughput</h2>\n<div class=\"scroll\">{}</div>",
        throughput_svg(report)
    );
    let _ = writeln!(
        body,
        "<h2>Latency distribution</h2>\n<p class=\"note\">Each point: that percentile of \
         requests took at most that long. The axis stretches the tail: 90%, 99%, 99.9%... are \
         equally spaced.</p>\n<div class=\"scroll\">{}</div>",
        percentile_svg(report)
    );
    body.push_str(&summary(report));
    page("bank bench", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_levels_are_log_scaled_and_capped() {
        assert_eq!(level(0.0, 5.0), 0.0);
        assert!((level(90.0, 5.0) - 1.0).abs() < 1e-9);
        assert!((level(99.9, 5.0) - 3.0).abs() < 1e-9);
        assert_eq!(level(100.0, 5.0), 5.0);
        assert_eq!(level_label(0), "0%");
        assert_eq!(level_label(1), "90%");
        assert_eq!(level_label(2), "99%");
        assert_eq!(level_label(4), "99.99%");
        assert_eq!(tick_label(150_000.0), "150 ms");
        assert_eq!(tick_label(2_500.0), "2.5 ms");
        assert_eq!(tick_label(0.0), "0 µs");
    }
}
