//! `bank check --html`: a history drawn as a timeline. One lane per process; each operation a
//! bar from its invoke to its completion, coloured by how it ended (ok, failed, unknown
//! outcome), labelled with the accounts it touched, with the checker's own words for it as a
//! hover title. When the history fails, the banner carries the checker's message and the
//! operations and final states the violation blames ([`Violation::blame`]) are outlined in red
//! (class `blamed`) while the rest fade.
//!
//! The drawing pairs invokes with completions on its own, forgivingly, so that an ill-formed
//! history (which the checker refuses at its first bad line) is still drawn: a second invoke
//! leaves the first without a completion, a completion without an invoke is counted and
//! skipped. Bounded: at most [`OPERATIONS_DRAWN_MAX`] operations are drawn — the window around
//! the first blamed one (the start of a passing history), plus every blamed one — and the page
//! says how many were left out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use crate::check::{History, HistoryEvent, Op, OpRef, ProcessId, Summary, Violation};

use super::chart::ticks;
use super::html::{count, duration_us, escape, page};

/// Operations drawn at most, over all lanes (about 400 bytes each: a page of a few MB at most).
pub const OPERATIONS_DRAWN_MAX: usize = 5_000;

/// Lane geometry, in pixels.
const LANE_HEIGHT: f64 = 26.0;
const BAR_HEIGHT: f64 = 18.0;
const LABELS_WIDTH: f64 = 96.0;
const AXIS_HEIGHT: f64 = 34.0;
/// About how wide a character of a bar's label is.
const CHAR_WIDTH: f64 = 6.0;

/// How an operation ended, as drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Ok,
    Fail,
    Info,
    /// No completion in the file.
    Open,
}

impl End {
    fn class(self) -> &'static str {
        match self {
            End::Ok => "ok",
            End::Fail => "fail",
            End::Info => "info",
            End::Open => "open",
        }
    }

    /// The word the checker's messages use.
    fn word(self) -> &'static str {
        match self {
            End::Ok => "ok",
            End::Fail => "fail",
            End::Info => "info",
            End::Open => "no completion",
        }
    }
}

/// An operation as drawn: its invoke and, if any, its completion.
#[derive(Clone, Debug)]
struct Drawn {
    /// The line of its invoke: the operation's id.
    line: usize,
    process: ProcessId,
    op: Op,
    invoke_us: u64,
    complete_us: Option<u64>,
    end: End,
    /// What the completion said (a result, an observation, an error text), as recorded.
    detail: Option<String>,
}

/// A branch's `final` line.
struct FinalLine {
    branch: u64,
    balances: BTreeMap<u64, i64>,
    digest: Option<String>,
}

/// The history as the drawing sees it.
struct Paired {
    operations: Vec<Drawn>,
    finals: Vec<FinalLine>,
    /// Completions with no operation in flight: counted, not drawn.
    stray_completions: usize,
}

/// Pairs invokes with completions, forgivingly (see the module docs).
fn pair(history: &History) -> Paired {
    let mut paired = Paired {
        operations: Vec::new(),
        finals: Vec::new(),
        stray_completions: 0,
    };
    let mut in_flight: HashMap<ProcessId, usize> = HashMap::new();
    for (line, event) in history.lines() {
        let (process, time_us, end, detail) = match event {
            HistoryEvent::Init { .. } => continue,
            HistoryEvent::Final {
                branch,
                balances,
                digest,
            } => {
                paired.finals.push(FinalLine {
                    branch: *branch,
                    balances: balances.clone(),
                    digest: digest.clone(),
                });
                continue;
            }
            HistoryEvent::Invoke {
                process,
                time_us,
                op,
            } => {
                in_flight.insert(*process, paired.operations.len());
                paired.operations.push(Drawn {
                    line,
                    process: *process,
                    op: op.clone(),
                    invoke_us: *time_us,
                    complete_us: None,
                    end: End::Open,
                    detail: None,
                });
                continue;
            }
            HistoryEvent::Ok {
                process,
                time_us,
                result,
            } => (
                process,
                time_us,
                End::Ok,
                serde_json::to_string(result).ok(),
            ),
            HistoryEvent::Fail {
                process,
                time_us,
                observation,
                error,
            } => {
                let observation = observation
                    .as_ref()
                    .and_then(|o| serde_json::to_string(o).ok());
                let detail = [observation, error.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; ");
                (process, time_us, End::Fail, Some(detail))
            }
            HistoryEvent::Info {
                process,
                time_us,
                error,
            } => (process, time_us, End::Info, error.clone()),
        };
        match in_flight.remove(process) {
            Some(index) => {
                let operation = &mut paired.operations[index];
                operation.complete_us = Some(*time_us);
                operation.end = end;
                operation.detail = detail.filter(|d| !d.is_empty());
            }
            None => paired.stray_completions += 1,
        }
    }
    paired
}

/// Which operations (indexes, in order) to draw: all if they fit, else the window of
/// `max` around the first blamed one (the first `max` if none is), plus every blamed one.
fn select(operations: usize, blamed: &[usize], max: usize) -> Vec<usize> {
    if operations <= max {
        return (0..operations).collect();
    }
    let center = blamed.first().copied().unwrap_or(0);
    let start = center.saturating_sub(max / 2).min(operations - max);
    let mut chosen: BTreeSet<usize> = (start..start + max).collect();
    chosen.extend(blamed.iter().copied().filter(|&index| index < operations));
    chosen.into_iter().collect()
}

/// The accounts an operation touched, as labels from longest to shortest.
fn labels(op: &Op) -> [String; 2] {
    match op {
        Op::Open { account, .. } => [format!("open #{account}"), format!("#{account}")],
        Op::Deposit { account, amount } => [format!("+{amount} #{account}"), format!("#{account}")],
        Op::Withdraw { account, amount } => [
            format!("\u{2212}{amount} #{account}"),
            format!("#{account}"),
        ],
        Op::Transfer { from, to, amount } => [
            format!("#{from}\u{2192}#{to} {amount}"),
            format!("#{from}\u{2192}#{to}"),
        ],
        Op::Read { accounts } => {
            let listed: Vec<String> = accounts.iter().map(|a| format!("#{a}")).collect();
            let short = match accounts.first() {
                Some(first) if accounts.len() > 1 => format!("#{first}\u{2026}"),
                Some(first) => format!("#{first}"),
                None => String::new(),
            };
            if accounts.len() > 4 {
                [format!("read {} accounts", accounts.len()), short]
            } else {
                [format!("read {}", listed.join(" ")), short]
            }
        }
    }
}

/// The hover title: the checker's words for the operation, and what its completion said.
fn title(operation: &Drawn) -> String {
    let named = OpRef {
        process: operation.process,
        op: operation.op.clone(),
        line: operation.line,
        invoke_us: operation.invoke_us,
        outcome: operation.end.word(),
        complete_us: operation.complete_us,
    };
    match &operation.detail {
        Some(detail) => format!("{named}: {detail}"),
        None => named.to_string(),
    }
}

/// The timeline of `chosen` operations as one SVG.
fn timeline_svg(operations: &[Drawn], chosen: &[usize], blamed: &BTreeSet<usize>) -> String {
    let lanes: BTreeMap<ProcessId, usize> = chosen
        .iter()
        .map(|&index| operations[index].process)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(lane, process)| (process, lane))
        .collect();
    let start_us = chosen
        .iter()
        .map(|&i| operations[i].invoke_us)
        .min()
        .unwrap_or(0);
    let end_us = chosen
        .iter()
        .map(|&i| {
            operations[i]
                .complete_us
                .unwrap_or(0)
                .max(operations[i].invoke_us)
        })
        .max()
        .unwrap_or(0)
        .max(start_us + 1);
    let mut per_lane: BTreeMap<ProcessId, usize> = BTreeMap::new();
    for &index in chosen {
        *per_lane.entry(operations[index].process).or_default() += 1;
    }
    let busiest = per_lane.values().copied().max().unwrap_or(1) as f64;
    let plot_width = (busiest * 40.0).clamp(1_000.0, 24_000.0);
    let width = LABELS_WIDTH + plot_width + 20.0;
    let height = AXIS_HEIGHT + lanes.len() as f64 * LANE_HEIGHT + 10.0;
    let span_us = (end_us - start_us) as f64;
    let x = |us: u64| LABELS_WIDTH + (us.saturating_sub(start_us)) as f64 / span_us * plot_width;

    let dimmed = if blamed.is_empty() { "" } else { " dimmed" };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline{dimmed}\" width=\"{width:.0}\" \
         height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\">\n"
    );
    for (&process, &lane) in &lanes {
        let y = AXIS_HEIGHT + lane as f64 * LANE_HEIGHT;
        let _ = writeln!(
            svg,
            "<rect class=\"lane\" x=\"0\" y=\"{y:.1}\" width=\"{width:.0}\" height=\"{:.1}\"/>\
             <text x=\"8\" y=\"{:.1}\">process {process}</text>",
            LANE_HEIGHT - 2.0,
            y + LANE_HEIGHT / 2.0 + 3.0
        );
    }
    svg.push_str(&time_axis(span_us, plot_width, height));
    for &index in chosen {
        let operation = &operations[index];
        let lane = lanes.get(&operation.process).copied().unwrap_or(0);
        let y = AXIS_HEIGHT + lane as f64 * LANE_HEIGHT + (LANE_HEIGHT - 2.0 - BAR_HEIGHT) / 2.0;
        svg.push_str(&bar(operation, blamed.contains(&index), y, &x, x(end_us)));
    }
    svg.push_str("</svg>");
    svg
}

/// The time axis on top: round times from the first invoke drawn, with grid lines.
fn time_axis(span_us: f64, plot_width: f64, height: f64) -> String {
    let mut svg = String::from("<g class=\"axis\">");
    let steps = (plot_width / 140.0).max(2.0) as usize;
    for tick in ticks(0.0, span_us, steps) {
        let x = LABELS_WIDTH + tick / span_us * plot_width;
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{AXIS_HEIGHT}\" x2=\"{x:.1}\" y2=\"{height:.0}\"/>\
             <line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{AXIS_HEIGHT}\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">+{}</text>",
            AXIS_HEIGHT - 6.0,
            AXIS_HEIGHT - 10.0,
            escape(&duration_us(tick))
        );
    }
    svg.push_str("</g>\n");
    svg
}

/// One operation's bar: a rectangle from invoke to completion (an unknown outcome goes on as a
/// dashed line to the end of the drawing: it may take effect any time after its invoke).
fn bar(operation: &Drawn, blamed: bool, y: f64, x: &impl Fn(u64) -> f64, end_x: f64) -> String {
    let left = x(operation.invoke_us);
    let right = match operation.complete_us {
        Some(at) => x(at.max(operation.invoke_us)),
        None => end_x,
    };
    let bar_width = (right - left).max(3.0);
    let class = format!(
        "op {}{}",
        operation.end.class(),
        if blamed { " blamed" } else { "" }
    );
    // A blamed operation is a link target: the list of blamed operations scrolls to it.
    let id = if blamed {
        format!(" id=\"op-{}\"", operation.line)
    } else {
        String::new()
    };
    let mut svg = format!(
        "<g class=\"{class}\" data-op=\"{}\" data-process=\"{}\"{id}><title>{}</title>\
         <rect x=\"{left:.1}\" y=\"{y:.1}\" width=\"{bar_width:.1}\" height=\"{BAR_HEIGHT}\" rx=\"2\"/>",
        operation.line,
        operation.process,
        escape(&title(operation))
    );
    if matches!(operation.end, End::Info) && end_x > right {
        let mid = y + BAR_HEIGHT / 2.0;
        let _ = write!(
            svg,
            "<line class=\"doubt\" x1=\"{:.1}\" y1=\"{mid:.1}\" x2=\"{end_x:.1}\" y2=\"{mid:.1}\"/>",
            left + bar_width
        );
    }
    let label = labels(&operation.op)
        .into_iter()
        .find(|label| label.chars().count() as f64 * CHAR_WIDTH + 6.0 <= bar_width);
    if let Some(label) = label {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            left + 3.0,
            y + BAR_HEIGHT / 2.0 + 3.5,
            escape(&label)
        );
    }
    svg.push_str("</g>\n");
    svg
}

/// The banner: passed with the summary, or failed with the checker's message.
fn banner(verdict: &Result<Summary, Violation>) -> String {
    match verdict {
        Ok(summary) => format!(
            "<div class=\"banner passed\">Passed<span class=\"message\">{}</span></div>",
            escape(&summary.to_string())
        ),
        Err(violation) => format!(
            "<div class=\"banner failed\">Failed<span class=\"message\">{}</span></div>",
            escape(&violation.to_string())
        ),
    }
}

/// The page of `history` (read from `name`) and the checker's verdict on it.
pub fn check_page(name: &str, history: &History, verdict: &Result<Summary, Violation>) -> String {
    let paired = pair(history);
    let blame = verdict
        .as_ref()
        .err()
        .map(Violation::blame)
        .unwrap_or_default();
    let index_of_line: HashMap<usize, usize> = paired
        .operations
        .iter()
        .enumerate()
        .map(|(index, operation)| (operation.line, index))
        .collect();
    let blamed: Vec<usize> = blame
        .operations
        .iter()
        .filter_map(|line| index_of_line.get(line).copied())
        .collect();
    let chosen = select(paired.operations.len(), &blamed, OPERATIONS_DRAWN_MAX);
    let processes: BTreeSet<ProcessId> = paired.operations.iter().map(|o| o.process).collect();

    let mut body = format!(
        "<h1>bank check: {}</h1>\n{}\n",
        escape(name),
        banner(verdict)
    );
    if !blamed.is_empty() || !blame.branches.is_empty() {
        body.push_str("<h2>Blamed</h2>\n<ul class=\"blamed\">");
        for &index in &blamed {
            let operation = &paired.operations[index];
            let _ = write!(
                body,
                "<li><a href=\"#op-{}\">{}</a></li>",
                operation.line,
                escape(&title(operation))
            );
        }
        for branch in &blame.branches {
            let _ = write!(body, "<li>branch {branch}'s final state</li>");
        }
        body.push_str("</ul>\n");
    }
    let _ = write!(
        body,
        "<p class=\"note\">{} operations by {} processes; {} drawn",
        count(paired.operations.len() as u64),
        count(processes.len() as u64),
        count(chosen.len() as u64)
    );
    if chosen.len() < paired.operations.len() {
        let _ = write!(
            body,
            " ({} left out: at most {} are drawn, around the first blamed operation)",
            count((paired.operations.len() - chosen.len()) as u64),
            count(OPERATIONS_DRAWN_MAX as u64)
        );
    }
    if paired.stray_completions > 0 {
        let _ = write!(
            body,
            "; {} completion(s) without an invoke not drawn",
            paired.stray_completions
        );
    }
    body.push_str(".</p>\n");
    body.push_str(LEGEND);
    if !chosen.is_empty() {
        let blamed_set: BTreeSet<usize> = blamed.iter().copied().collect();
        let _ = writeln!(
            body,
            "<div class=\"scroll\">{}</div>",
            timeline_svg(&paired.operations, &chosen, &blamed_set)
        );
    }
    body.push_str(&finals_table(&paired.finals, &blame.branches));
    page(&format!("bank check: {name}"), &body)
}

const LEGEND: &str = "<p class=\"legend\">\
<span><i class=\"swatch\" style=\"background:#4caf6a\"></i>ok</span>\
<span><i class=\"swatch\" style=\"background:#9aa1ad\"></i>failed (did not happen)</span>\
<span><i class=\"swatch\" style=\"background:#f2b134\"></i>unknown outcome (dashed: may take effect until the end)</span>\
<span><i class=\"swatch\" style=\"border:3px solid #d3261e\"></i>blamed by the checker</span>\
<span>Hover a bar for the operation and its answer.</span></p>\n";

/// The branches' final states, the blamed ones in red.
fn finals_table(finals: &[FinalLine], blamed: &[u64]) -> String {
    if finals.is_empty() {
        return "<h2>Final states</h2><p class=\"note\">none recorded</p>\n".to_string();
    }
    /// Accounts listed per branch at most.
    const ACCOUNTS_SHOWN_MAX: usize = 20;
    let mut table = String::from(
        "<h2>Final states</h2>\n<table><tr><th>branch</th><th>digest</th><th>balances</th></tr>",
    );
    for state in finals {
        let shown: Vec<String> = state
            .balances
            .iter()
            .take(ACCOUNTS_SHOWN_MAX)
            .map(|(account, balance)| format!("#{account}: {balance}"))
            .collect();
        let more = state.balances.len().saturating_sub(ACCOUNTS_SHOWN_MAX);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        let class = if blamed.contains(&state.branch) {
            " class=\"blamed\""
        } else {
            ""
        };
        let _ = write!(
            table,
            "<tr{class} data-branch=\"{}\"><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}{more}</td></tr>",
            state.branch,
            state.branch,
            escape(state.digest.as_deref().unwrap_or("-")),
            escape(&shown.join(", "))
        );
    }
    table.push_str("</table>\n");
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_is_bounded_and_keeps_the_blamed() {
        assert_eq!(select(3, &[], 5), [0, 1, 2]);
        assert_eq!(select(10, &[], 4), [0, 1, 2, 3]);
        assert_eq!(select(10, &[9], 4), [6, 7, 8, 9]);
        assert_eq!(select(100, &[50, 2], 4), [2, 48, 49, 50, 51]);
    }

    #[test]
    fn a_big_history_is_drawn_bounded_around_what_is_blamed() {
        // 20,000 deposits by 8 processes; the last read sees none of them.
        let mut events = vec![HistoryEvent::Init {
            balances: BTreeMap::from([(1, 0)]),
            balances_min: BTreeMap::new(),
        }];
        let operations = 20_000u64;
        for n in 0..operations {
            let process = n % 8;
            events.push(HistoryEvent::Invoke {
                process,
                time_us: n * 10,
                op: Op::Deposit {
                    account: 1,
                    amount: 1,
                },
            });
            events.push(HistoryEvent::Ok {
                process,
                time_us: n * 10 + 5,
                result: crate::check::OpResult::balance(n as i64 + 1),
            });
        }
        events.push(HistoryEvent::Invoke {
            process: 9,
            time_us: operations * 10,
            op: Op::Read { accounts: vec![1] },
        });
        events.push(HistoryEvent::Ok {
            process: 9,
            time_us: operations * 10 + 5,
            result: crate::check::OpResult::read(BTreeMap::from([(1, 0)])),
        });
        let history = History::from_events(events);
        let verdict = crate::check::check(&history);
        let blame = verdict.as_ref().expect_err("the read is stale").blame();
        let html = check_page("big.jsonl", &history, &verdict);
        assert!(html.len() < 4_000_000, "{} bytes", html.len());
        assert_eq!(html.matches("data-op=").count(), OPERATIONS_DRAWN_MAX);
        assert!(
            html.contains("15\u{2009}001 left out"),
            "the page says what is missing"
        );
        for line in blame.operations {
            assert!(html.contains(&format!("class=\"op ok blamed\" data-op=\"{line}\"")));
        }
    }

    #[test]
    fn an_ill_formed_history_is_still_drawn() {
        let history = History::parse(
            r#"{"type":"invoke","process":1,"time_us":0,"op":{"type":"read","accounts":[1]}}
{"type":"invoke","process":1,"time_us":5,"op":{"type":"deposit","account":1,"amount":5}}
{"type":"info","process":1,"time_us":9,"error":"<script>x</script>"}
{"type":"ok","process":2,"time_us":9}"#,
        )
        .expect("parses");
        let paired = pair(&history);
        assert_eq!(paired.operations.len(), 2);
        assert_eq!(paired.operations[0].end, End::Open);
        assert_eq!(paired.operations[1].end, End::Info);
        assert_eq!(paired.stray_completions, 1);
        let verdict = crate::check::check(&history);
        let html = check_page("h<1>.jsonl", &history, &verdict);
        assert!(html.contains("bank check: h&lt;1&gt;.jsonl"));
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(!html.contains("<script"));
        assert_eq!(html.matches("class=\"op open blamed\"").count(), 1);
        assert_eq!(html.matches("class=\"op info blamed\"").count(), 1);
    }
}
