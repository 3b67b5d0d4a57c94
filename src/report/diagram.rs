//! A P2 output as a space-time diagram, one standalone SVG: a lane per process (customers,
//! then branches), each event a dot labelled with its clock, each send paired with its
//! receive ([`crate::grade::p2::match_messages`]) an arrow. Events stand in columns by clock
//! (Lamport order): every distinct clock gets a column of fixed width, so a large run makes a
//! wide picture to scroll, never a cramped one. What a grader's failure names is drawn red.
//!
//! Every lane is an element of class `process`, every arrow one of class `message` (plus
//! `violation` when red), so tests can count them. All text is escaped.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write;

use crate::grade::p2::{describe, match_messages, P2Output};
use crate::grade::{EventRef, Report};

use super::html::escape;

/// Horizontal distance between two clock columns.
pub const COLUMN: f64 = 34.0;
/// Vertical distance between two lanes.
pub const LANE: f64 = 46.0;
const LEFT: f64 = 100.0;
const TOP: f64 = 48.0;
const DOT: f64 = 4.5;

const STYLE: &str = ".process line{stroke:#9aa5b1;stroke-width:1}\
.process text{fill:#222;font-weight:600}\
.message{stroke:#4a6fa5;stroke-width:1.2;fill:none}\
.message.violation{stroke:#d00;stroke-width:2.2}\
.event circle{fill:#222}.event text{fill:#555;font-size:9px}\
.event.violation circle{fill:#d00}.event.violation text{fill:#d00;font-weight:700}\
.summary{fill:#222}.summary.violation{fill:#d00}";

/// The diagram of `output`, with what `report` blames in red.
pub fn render(output: &P2Output, report: &Report) -> String {
    let processes: Vec<_> = output.processes().collect();
    let columns: Vec<i64> = processes
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.clock))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let column_of: HashMap<i64, usize> = columns.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    let width = LEFT + COLUMN * (columns.len() as f64 + 1.0) + 20.0;
    let height = TOP + LANE * processes.len() as f64 + 10.0;

    // Where each event's dot is; a clock repeated on one lane is nudged right.
    let mut at: HashMap<EventRef, (f64, f64)> = HashMap::new();
    for (lane, process) in processes.iter().enumerate() {
        let y = TOP + LANE * lane as f64 + LANE / 2.0;
        let mut seen: HashMap<i64, usize> = HashMap::new();
        for (index, event) in process.events.iter().enumerate() {
            let column = column_of.get(&event.clock).copied().unwrap_or(0);
            let repeat = seen.entry(event.clock).or_default();
            let x = LEFT + COLUMN * (column as f64 + 1.0) + 9.0 * *repeat as f64;
            *repeat += 1;
            let key = EventRef {
                kind: process.kind,
                process: process.id,
                index,
            };
            at.insert(key, (x, y));
        }
    }
    let red_events: HashSet<EventRef> = report
        .failures
        .iter()
        .flat_map(|f| f.events.iter().copied())
        .collect();

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <title>Space-time diagram: {}</title>\n<style>{STYLE}</style>\n\
         <defs>{}{}</defs>\n",
        escape(&summary(report)),
        marker("arrow", "#4a6fa5"),
        marker("arrow-red", "#d00")
    );
    let _ = writeln!(
        svg,
        "<text class=\"summary{}\" x=\"10\" y=\"20\">{}</text>",
        if report.all_pass() { "" } else { " violation" },
        escape(&summary(report))
    );
    for (lane, process) in processes.iter().enumerate() {
        let y = TOP + LANE * lane as f64 + LANE / 2.0;
        let _ = writeln!(
            svg,
            "<g class=\"process\"><line x1=\"{LEFT:.0}\" y1=\"{y:.1}\" x2=\"{:.0}\" y2=\"{y:.1}\"/>\
             <text x=\"10\" y=\"{:.1}\">{}</text></g>",
            width - 10.0,
            y + 4.0,
            escape(&process.name())
        );
    }
    let (messages, _) = match_messages(output);
    for message in &messages {
        let (Some(&from), Some(&to)) = (at.get(&message.send), at.get(&message.recv)) else {
            continue;
        };
        let red = report
            .failures
            .iter()
            .any(|f| f.events.contains(&message.send) && f.events.contains(&message.recv));
        let title = output.event(message.recv).map_or_else(String::new, |e| {
            describe(message.recv.kind, message.recv.process, e)
        });
        svg.push_str(&arrow(from, to, red, &title));
    }
    for process in &processes {
        for (index, event) in process.events.iter().enumerate() {
            let key = EventRef {
                kind: process.kind,
                process: process.id,
                index,
            };
            let Some(&(x, y)) = at.get(&key) else {
                continue;
            };
            let _ = writeln!(
                svg,
                "<g class=\"event{}\"><circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{DOT}\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
                 <title>{}: {}</title></g>",
                if red_events.contains(&key) {
                    " violation"
                } else {
                    ""
                },
                y - 8.0,
                event.clock,
                escape(&describe(process.kind, process.id, event)),
                escape(&event.comment)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// `N of M checks pass`, as the diagram's title says it.
fn summary(report: &Report) -> String {
    format!("{} of {} checks pass", report.passed(), report.checks)
}

fn marker(id: &str, colour: &str) -> String {
    format!(
        "<marker id=\"{id}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"{colour}\"/></marker>"
    )
}

/// An arrow from dot `from` to dot `to`, stopping at the dots' edges.
fn arrow(from: (f64, f64), to: (f64, f64), red: bool, title: &str) -> String {
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    let length = (dx * dx + dy * dy).sqrt().max(1.0);
    let (ux, uy) = (dx / length, dy / length);
    let start = (from.0 + ux * DOT, from.1 + uy * DOT);
    let end = (to.0 - ux * (DOT + 1.0), to.1 - uy * (DOT + 1.0));
    format!(
        "<line class=\"message{}\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" \
         marker-end=\"url(#{})\"><title>{}</title></line>\n",
        if red { " violation" } else { "" },
        start.0,
        start.1,
        end.0,
        end.1,
        if red { "arrow-red" } else { "arrow" },
        escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grade::p2::{grade, parse_parts};
    use crate::grade::parse_document;
    use crate::workload::scenario::Scenario;
    use serde_json::Value;

    fn reference(path: &str) -> String {
        let full = format!(
            "{}/tests/testdata/course/{path}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
    }

    fn part(path: &str) -> Value {
        Value::Array(parse_document(&reference(path), path).unwrap())
    }

    #[test]
    fn the_spec_example_draws_a_lane_per_process_and_an_arrow_per_message() {
        let input = "codlocker+CSE-531-Project/Project_2/input.json";
        let scenario = Scenario::parse(&reference(input), input).unwrap();
        let mut output = parse_parts(
            &part("course-extra/P2/spec_example_part1_customer_events.json"),
            &part("course-extra/P2/spec_example_part2_branch_events.json"),
            &part("course-extra/P2/spec_example_part3_all_events.json"),
        )
        .unwrap();
        let report = grade(&scenario, &output);
        let svg = render(&output, &report);
        assert_eq!(svg.matches("class=\"process\"").count(), 6);
        assert_eq!(svg.matches("class=\"message\"").count(), 18);
        assert!(!svg.contains("violation\""), "nothing red");
        // A receive moved before its send: that arrow and its ends turn red, and so does
        // branch 2's next receive (from customer 2), now off the Lamport rule (3, not 5).
        output.branches[1].events[0].clock = 2;
        let report = grade(&scenario, &output);
        let svg = render(&output, &report);
        assert_eq!(svg.matches("class=\"message violation\"").count(), 2);
        assert!(svg.contains("class=\"event violation\""));
        // Text from the output is escaped.
        output.customers[0].events[0].comment = "<script>&".into();
        let svg = render(&output, &report);
        assert!(svg.contains("&lt;script&gt;&amp;") && !svg.contains("<script>"));
    }
}
