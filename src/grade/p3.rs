//! P3 (client-centric consistency): the output has one object `{"id", "recv": [{"interface",
//! "branch", "result" | "balance"}]}` per event, in input order (ids repeat, so entries match
//! events by position).
//!
//! What a query may see: every customer's successful writes (deposits, and the withdraws the
//! output itself says succeeded) applied as a *prefix* of that customer's writes in order.
//! - monotonic writes: some prefix for every customer explains the balance; the query's own
//!   customer's prefix may not reach past the query;
//! - read-your-writes: the same, with the own prefix being every earlier own write.
//!
//! With other customers writing, the balances other customers' prefixes can add are
//! enumerated up to [`MAX_COMBINATIONS`] distinct sums; beyond that the check falls back to
//! the range they span (sound, weaker) and the report says so. The course's own grader,
//! restated beside ours, only compares the balances of consecutive query entries.

use std::collections::BTreeSet;

use crate::course::scenario::{CustomerEvent, Interface, Scenario};

use super::{CourseGrader, Reply, ReplyEntry, Report};

/// Which consistency checks to run (the entries' format is always checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checks {
    MonotonicWrites,
    ReadYourWrites,
    #[default]
    All,
}

impl Checks {
    fn monotonic(self) -> bool {
        matches!(self, Checks::MonotonicWrites | Checks::All)
    }
    fn read_your_writes(self) -> bool {
        matches!(self, Checks::ReadYourWrites | Checks::All)
    }
}

/// How many distinct sums of other customers' prefixes are enumerated before the range is
/// used instead.
pub const MAX_COMBINATIONS: usize = 1 << 16;

/// What other customers' writes can add to a balance.
enum Others {
    Exact(BTreeSet<i64>),
    Range(i64, i64),
}

impl Others {
    fn explains(&self, offset: i64) -> bool {
        match self {
            Others::Exact(sums) => sums.contains(&offset),
            Others::Range(lo, hi) => (*lo..=*hi).contains(&offset),
        }
    }
}

/// One input event at its position in the output.
struct Slot<'a> {
    position: usize,
    customer_index: usize,
    customer_id: u32,
    event: &'a CustomerEvent,
}

impl Slot<'_> {
    fn name(&self) -> String {
        let money = if self.event.money > 0 {
            format!(" {}", self.event.money)
        } else {
            String::new()
        };
        format!(
            "entry #{} (customer {}, event id {}: {}{money} at branch {})",
            self.position + 1,
            self.customer_id,
            self.event.id,
            self.event.interface.as_str(),
            self.event.branch
        )
    }
}

/// Grades a P3 output (parsed with [`super::parse_replies`]) against `scenario`.
pub fn grade(scenario: &Scenario, output: &[ReplyEntry], checks: Checks) -> Report {
    let mut report = Report::default();
    let slots: Vec<Slot> = scenario
        .customers
        .iter()
        .enumerate()
        .flat_map(|(customer_index, c)| {
            c.events
                .iter()
                .map(move |event| (customer_index, c.id, event))
        })
        .enumerate()
        .map(|(position, (customer_index, customer_id, event))| Slot {
            position,
            customer_index,
            customer_id,
            event,
        })
        .collect();
    report.record(
        "entry-count",
        (output.len() != slots.len()).then(|| {
            (
                format!(
                    "the input has {} events but the output has {} entries (one per event, in input order){}",
                    slots.len(),
                    output.len(),
                    if doubled(output) { "; each entry appears twice in a row" } else { "" }
                ),
                Vec::new(),
            )
        }),
    );
    let replies: Vec<Option<&Reply>> = slots
        .iter()
        .map(|slot| {
            let entry = output.get(slot.position)?;
            let failure = entry_mismatch(slot, entry);
            report.record(
                "entry",
                failure.map(|m| (format!("{}: {m}", slot.name()), Vec::new())),
            );
            entry.recv.first()
        })
        .collect();
    consistency(&mut report, scenario, &slots, &replies, checks);
    report.course = vec![course_grader(output)];
    report
}

/// The read-your-writes and monotonic-writes checks of every query, with the writes the
/// output says took effect.
fn consistency(
    report: &mut Report,
    scenario: &Scenario,
    slots: &[Slot],
    replies: &[Option<&Reply>],
    checks: Checks,
) {
    // Each customer's writes that took effect, as (position, signed amount).
    let mut writes: Vec<Vec<(usize, i64)>> = vec![Vec::new(); scenario.customers.len()];
    for (slot, reply) in slots.iter().zip(replies) {
        let took_effect = reply.is_some_and(|r| r.result.as_deref() == Some("success"));
        let amount = i64::from(slot.event.money);
        match slot.event.interface {
            Interface::Deposit if took_effect => {
                writes[slot.customer_index].push((slot.position, amount))
            }
            Interface::Withdraw if took_effect => {
                writes[slot.customer_index].push((slot.position, -amount))
            }
            _ => {}
        }
    }
    let initial = i64::from(scenario.initial_balance);
    let others: Vec<Others> = (0..writes.len()).map(|c| others_sums(&writes, c)).collect();
    if others.iter().any(|o| matches!(o, Others::Range(..))) {
        report.notes.push(format!(
            "other customers' writes combine in more than {MAX_COMBINATIONS} ways: their part of each balance is checked as a range only"
        ));
    }
    for (slot, reply) in slots.iter().zip(replies) {
        let (Interface::Query, Some(balance)) =
            (slot.event.interface, reply.and_then(|r| r.balance))
        else {
            continue;
        };
        let own: Vec<i64> = writes[slot.customer_index]
            .iter()
            .filter(|(p, _)| *p < slot.position)
            .map(|(_, amount)| *amount)
            .collect();
        let prefix_sums: Vec<i64> = std::iter::once(0)
            .chain(own.iter().scan(0, |sum, a| {
                *sum += a;
                Some(*sum)
            }))
            .collect();
        let all_own = prefix_sums.last().copied().unwrap_or(0);
        let others = &others[slot.customer_index];
        let alone = writes
            .iter()
            .enumerate()
            .all(|(c, w)| c == slot.customer_index || w.is_empty());
        let with_others = if alone {
            ""
        } else {
            ", with any prefix of other customers' writes,"
        };
        if checks.read_your_writes() {
            let failure = (!others.explains(balance - initial - all_own)).then(|| {
                format!(
                    "{} sees balance {balance}, but customer {}'s {} earlier writes{with_others} make it {}: a query must see its own customer's writes",
                    slot.name(),
                    slot.customer_id,
                    own.len(),
                    possible(initial + all_own, others)
                )
            });
            report.record("read-your-writes", failure.map(|m| (m, Vec::new())));
        }
        if checks.monotonic() {
            let explained = prefix_sums
                .iter()
                .any(|p| others.explains(balance - initial - p));
            let failure = (!explained).then(|| {
                format!(
                    "{} sees balance {balance}, which no prefix of customer {}'s writes{with_others} explains (the prefixes give {}): writes must apply in order",
                    slot.name(),
                    slot.customer_id,
                    prefix_sums.iter().map(|p| (initial + p).to_string()).collect::<Vec<_>>().join(", ")
                )
            });
            report.record("monotonic-writes", failure.map(|m| (m, Vec::new())));
        }
    }
}

/// Whether `output` lists every entry twice in a row.
fn doubled(output: &[ReplyEntry]) -> bool {
    !output.is_empty()
        && output.len().is_multiple_of(2)
        && output.chunks(2).all(|pair| pair[0] == pair[1])
}

/// What is wrong with `entry` as the reply to `slot`'s event, if anything.
fn entry_mismatch(slot: &Slot, entry: &ReplyEntry) -> Option<String> {
    let mut wrong = Vec::new();
    if entry.id != i64::from(slot.customer_id) {
        wrong.push(format!("the entry's id is {}", entry.id));
    }
    if entry.recv.len() != 1 {
        wrong.push(format!("it has {} replies, expected one", entry.recv.len()));
    }
    if let Some(reply) = entry.recv.first() {
        let interface = slot.event.interface.as_str();
        if reply.interface != interface {
            wrong.push(format!("the reply's interface is {:?}", reply.interface));
        }
        if reply.branch != Some(slot.event.branch as i64) {
            match reply.branch {
                Some(b) => wrong.push(format!("the reply names branch {b}")),
                None => wrong.push("the reply names no branch".to_string()),
            }
        }
        match slot.event.interface {
            Interface::Query if reply.balance.is_none() => {
                wrong.push("the query's reply has no balance".to_string())
            }
            Interface::Deposit | Interface::Withdraw => match reply.result.as_deref() {
                Some("success" | "fail") => {}
                Some(other) => wrong.push(format!("the result is {other:?}")),
                None => wrong.push("the reply has no result".to_string()),
            },
            Interface::Query => {}
        }
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

/// The sums any prefix of each customer's writes but `except`'s can add.
fn others_sums(writes: &[Vec<(usize, i64)>], except: usize) -> Others {
    let mut sums = BTreeSet::from([0]);
    let (mut lo, mut hi) = (0, 0);
    let mut exact = true;
    for (c, customer) in writes.iter().enumerate() {
        if c == except || customer.is_empty() {
            continue;
        }
        let prefixes: Vec<i64> = std::iter::once(0)
            .chain(customer.iter().scan(0, |sum, (_, a)| {
                *sum += a;
                Some(*sum)
            }))
            .collect();
        lo += prefixes.iter().min().copied().unwrap_or(0);
        hi += prefixes.iter().max().copied().unwrap_or(0);
        if exact {
            sums = sums
                .iter()
                .flat_map(|s| prefixes.iter().map(move |p| s + p))
                .collect();
            exact = sums.len() <= MAX_COMBINATIONS;
        }
    }
    if exact {
        Others::Exact(sums)
    } else {
        Others::Range(lo, hi)
    }
}

/// The balances `base` plus what others can add, for a message (a few of them).
fn possible(base: i64, others: &Others) -> String {
    match others {
        Others::Exact(sums) if sums.len() == 1 => (base + sums.iter().sum::<i64>()).to_string(),
        Others::Exact(sums) => {
            let shown: Vec<String> = sums
                .iter()
                .take(6)
                .map(|s| (base + s).to_string())
                .collect();
            let more = if sums.len() > 6 { ", ..." } else { "" };
            format!("one of {}{more}", shown.join(", "))
        }
        Others::Range(lo, hi) => format!("between {} and {}", base + lo, base + hi),
    }
}

/// The course's P3 grader: every two consecutive query entries show the same balance.
pub fn course_grader(output: &[ReplyEntry]) -> CourseGrader {
    let query_balance = |entry: &ReplyEntry| {
        entry
            .recv
            .first()
            .filter(|r| r.interface == "query")
            .map(|r| r.balance)
    };
    let passed =
        output.windows(2).all(
            |pair| match (query_balance(&pair[0]), query_balance(&pair[1])) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            },
        );
    CourseGrader {
        name: "consecutive query entries show equal balances",
        passed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grade::{parse_document, parse_replies};

    fn reference(path: &str) -> String {
        let full = format!(
            "{}/tests/testdata/course/{path}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
    }

    fn grade_texts(input: &str, output: &str, checks: Checks) -> Report {
        let scenario = Scenario::parse(input, "input").unwrap();
        let entries = parse_document(output, "output").unwrap();
        grade(
            &scenario,
            &parse_replies(&entries, "output").unwrap(),
            checks,
        )
    }

    fn failures(report: &Report, check: &str) -> Vec<String> {
        report
            .failures_of(check)
            .map(|f| f.message.clone())
            .collect()
    }

    const ONE_DEPOSIT: &str = r#"[{"id": 1, "type": "customer", "events": [
        {"id": 1, "interface": "deposit", "money": 400, "branch": 1},
        {"id": 2, "interface": "query", "branch": 1},
        {"id": 3, "interface": "query", "branch": 2}]},
        {"id": 1, "type": "branch", "balance": 0}, {"id": 2, "type": "branch", "balance": 0}]"#;

    #[test]
    fn a_query_that_misses_its_own_write_is_caught() {
        let output = r#"{"id": 1, "recv": [{"interface": "deposit", "branch": 1, "result": "success"}]}
{"id": 1, "recv": [{"interface": "query", "branch": 1, "balance": 400}]}
{"id": 1, "recv": [{"interface": "query", "branch": 2, "balance": 0}]}"#;
        let report = grade_texts(ONE_DEPOSIT, output, Checks::All);
        assert_eq!(
            failures(&report, "read-your-writes"),
            ["entry #3 (customer 1, event id 3: query at branch 2) sees balance 0, but customer 1's 1 earlier writes make it 400: a query must see its own customer's writes"]
        );
        assert!(failures(&report, "monotonic-writes").is_empty(), "{report}");
        let only_mw = grade_texts(ONE_DEPOSIT, output, Checks::MonotonicWrites);
        assert!(only_mw.all_pass(), "{only_mw}");
        // The course's grader compares consecutive queries only: 400 then 0 fails it.
        assert!(!report.course[0].passed);
    }

    #[test]
    fn a_monotonic_writes_violation_is_caught() {
        let input = r#"[{"id": 1, "type": "customer", "events": [
            {"id": 1, "interface": "deposit", "money": 10, "branch": 1},
            {"id": 2, "interface": "deposit", "money": 20, "branch": 1},
            {"id": 3, "interface": "query", "branch": 2}]},
            {"id": 1, "type": "branch", "balance": 0}, {"id": 2, "type": "branch", "balance": 0}]"#;
        let output = r#"[{"id": 1, "recv": [{"interface": "deposit", "branch": 1, "result": "success"}]},
            {"id": 1, "recv": [{"interface": "deposit", "branch": 1, "result": "success"}]},
            {"id": 1, "recv": [{"interface": "query", "branch": 2, "balance": 20}]}]"#;
        let report = grade_texts(input, output, Checks::MonotonicWrites);
        assert_eq!(
            failures(&report, "monotonic-writes"),
            ["entry #3 (customer 1, event id 3: query at branch 2) sees balance 20, which no prefix of customer 1's writes explains (the prefixes give 0, 10, 30): writes must apply in order"]
        );
        assert_eq!(report.failures.len(), 1);
        assert!(report.course[0].passed, "no two queries are adjacent");
    }

    #[test]
    fn other_customers_writes_may_be_seen_in_any_prefix() {
        let input = r#"[{"id": 1, "type": "customer", "events": [
            {"id": 1, "interface": "deposit", "money": 10, "branch": 1},
            {"id": 2, "interface": "query", "branch": 2}]},
            {"id": 2, "type": "customer", "events": [
            {"id": 3, "interface": "deposit", "money": 100, "branch": 2},
            {"id": 4, "interface": "withdraw", "money": 1000, "branch": 2}]},
            {"id": 1, "type": "branch", "balance": 0}, {"id": 2, "type": "branch", "balance": 0}]"#;
        let replies = |balance: i64| {
            format!(
                r#"[{{"id": 1, "recv": [{{"interface": "deposit", "branch": 1, "result": "success"}}]}},
                {{"id": 1, "recv": [{{"interface": "query", "branch": 2, "balance": {balance}}}]}},
                {{"id": 2, "recv": [{{"interface": "deposit", "branch": 2, "result": "success"}}]}},
                {{"id": 2, "recv": [{{"interface": "withdraw", "branch": 2, "result": "fail"}}]}}]"#
            )
        };
        for seen in [10, 110] {
            let report = grade_texts(input, &replies(seen), Checks::All);
            assert!(report.all_pass(), "{seen}: {report}");
        }
        // Customer 2's deposit without customer 1's own: monotonic, but not read-your-writes.
        let report = grade_texts(input, &replies(100), Checks::All);
        assert_eq!(report.failures.len(), 1, "{report}");
        assert!(failures(&report, "read-your-writes")[0].contains("make it one of 10, 110"));
    }

    #[test]
    fn codlockers_expected_output_for_input_big_passes() {
        let report = grade_texts(
            &reference("codlocker+CSE-531-Project/Project_3/input_big.json"),
            &reference("codlocker+CSE-531-Project/Project_3/output.json"),
            Checks::All,
        );
        assert!(report.all_pass(), "{report}");
        assert!(report.course[0].passed);
    }

    #[test]
    fn carolafros_committed_output_lists_every_event_twice() {
        // carolaFro's output.json has each entry twice (a bug in its customer.py): 2 x the
        // input's 19 events, so from entry #2 on the entries no longer line up with the
        // events. The course's grader passes it (each query sits next to its own copy). With
        // every second entry dropped, it passes every check.
        let input = reference("carolaFro+Simple-gRPC-BankServer/input.json");
        let output = reference("carolaFro+Simple-gRPC-BankServer/output.json");
        let report = grade_texts(&input, &output, Checks::All);
        assert!(!report.all_pass());
        assert_eq!(
            failures(&report, "entry-count"),
            ["the input has 19 events but the output has 38 entries (one per event, in input order); each entry appears twice in a row"]
        );
        assert!(report.course[0].passed);
        let entries = parse_document(&output, "output").unwrap();
        let once: Vec<serde_json::Value> = entries.iter().step_by(2).cloned().collect();
        let scenario = Scenario::parse(&input, "input").unwrap();
        let report = grade(
            &scenario,
            &parse_replies(&once, "output").unwrap(),
            Checks::All,
        );
        assert!(report.all_pass(), "{report}");
    }
}
