//! P1 (propagation): every event's reply is determined by the input. Customers run in input
//! order, each customer's events in order, against one shared balance that starts at the
//! branches' balance: a deposit adds and succeeds, a withdraw subtracts if the balance covers
//! it and otherwise fails without a change, a query returns the balance.
//!
//! The output has one object `{"id", "recv": [...]}` per customer, in input order; customers
//! may repeat (the course's `input1.json` lists each twice), so entries match customers by
//! position, not by id.

use crate::workload::scenario::{Interface, Scenario};

use super::{Reply, ReplyEntry, Report};

/// The reply an event must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub interface: Interface,
    pub success: bool,
    /// The balance a query must return (after the event for writes).
    pub balance: i64,
}

/// The exact replies of every customer, in input order.
pub fn expected(scenario: &Scenario) -> Vec<Vec<Expected>> {
    let mut balance = i64::from(scenario.initial_balance);
    let mut all = Vec::with_capacity(scenario.customers.len());
    for customer in &scenario.customers {
        let mut replies = Vec::with_capacity(customer.events.len());
        for event in &customer.events {
            let money = i64::from(event.money);
            let success = match event.interface {
                Interface::Deposit => {
                    balance += money;
                    true
                }
                Interface::Withdraw if balance >= money => {
                    balance -= money;
                    true
                }
                Interface::Withdraw => false,
                Interface::Query => true,
            };
            replies.push(Expected {
                interface: event.interface,
                success,
                balance,
            });
        }
        all.push(replies);
    }
    all
}

/// Grades a P1 output (already parsed with [`super::parse_replies`]) against `scenario`.
pub fn grade(scenario: &Scenario, output: &[ReplyEntry]) -> Report {
    let mut report = Report::default();
    let expected = expected(scenario);
    report.record(
        "customer-count",
        (output.len() != expected.len()).then(|| {
            (
                format!(
                    "the input has {} customers but the output has {} entries",
                    expected.len(),
                    output.len()
                ),
                Vec::new(),
            )
        }),
    );
    for (position, (customer, replies)) in scenario.customers.iter().zip(&expected).enumerate() {
        let Some(entry) = output.get(position) else {
            break;
        };
        let who = format!("customer {} (entry #{})", customer.id, position + 1);
        report.record(
            "customer-id",
            (entry.id != i64::from(customer.id)).then(|| {
                (
                    format!("{who}: the output names id {}", entry.id),
                    Vec::new(),
                )
            }),
        );
        report.record(
            "reply-count",
            (entry.recv.len() != replies.len()).then(|| {
                (
                    format!(
                        "{who} has {} events but {} replies",
                        replies.len(),
                        entry.recv.len()
                    ),
                    Vec::new(),
                )
            }),
        );
        for (index, ((event, want), got)) in customer
            .events
            .iter()
            .zip(replies)
            .zip(&entry.recv)
            .enumerate()
        {
            let named = format!(
                "{who}, event #{} (id {}, {}{})",
                index + 1,
                event.id,
                event.interface.as_str(),
                if event.money > 0 {
                    format!(" {}", event.money)
                } else {
                    String::new()
                }
            );
            report.record(
                "reply",
                reply_mismatch(want, got).map(|what| (format!("{named}: {what}"), Vec::new())),
            );
        }
    }
    report
}

/// What is wrong with `got` as the reply `want`, if anything.
fn reply_mismatch(want: &Expected, got: &Reply) -> Option<String> {
    let mut wrong = Vec::new();
    if got.interface != want.interface.as_str() {
        wrong.push(format!(
            "the reply's interface is {:?}, expected {:?}",
            got.interface,
            want.interface.as_str()
        ));
    }
    let result = if want.success { "success" } else { "fail" };
    match (&got.result, want.interface) {
        (Some(r), _) if r != result => {
            wrong.push(format!("the result is {r:?}, expected {result:?}"))
        }
        (None, Interface::Deposit | Interface::Withdraw) => {
            wrong.push(format!("the result is missing, expected {result:?}"))
        }
        _ => {}
    }
    if want.interface == Interface::Query {
        match got.balance {
            Some(b) if b == want.balance => {}
            Some(b) => wrong.push(format!("expected balance {}, got {b}", want.balance)),
            None => wrong.push(format!("the balance is missing, expected {}", want.balance)),
        }
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
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

    fn grade_files(input: &str, output: &str) -> Report {
        let scenario = Scenario::parse(&reference(input), input).unwrap();
        let entries = parse_document(&reference(output), output).unwrap();
        grade(&scenario, &parse_replies(&entries, output).unwrap())
    }

    #[test]
    fn expected_replies_follow_the_course() {
        let input = "codlocker+CSE-531-Project/Project_1/input.json";
        let scenario = Scenario::parse(&reference(input), input).unwrap();
        let queries: Vec<i64> = expected(&scenario)
            .iter()
            .flatten()
            .filter(|e| e.interface == Interface::Query)
            .map(|e| e.balance)
            .collect();
        assert_eq!(queries, [400, 570, 500]);
    }

    #[test]
    fn the_python_runs_pass() {
        let good = grade_files(
            "codlocker+CSE-531-Project/Project_1/input.json",
            "codlocker+CSE-531-Project/local_runs/P1_output_for_input.json",
        );
        assert!(good.all_pass(), "{good}");
        assert_eq!(good.checks, 1 + 3 * 2 + 5);
        let also = grade_files(
            "codlocker+CSE-531-Project/Project_1/input1.json",
            "codlocker+CSE-531-Project/local_runs/P1_output_for_input1.json",
        );
        assert!(also.all_pass(), "{also}");
    }

    #[test]
    fn a_wrong_balance_names_the_query() {
        let text = r#"[{"id": 1, "recv": [{"interface": "query", "balance": 400}]},
            {"id": 2, "recv": [{"interface": "deposit", "result": "success"}, {"interface": "query", "balance": 580}]},
            {"id": 3, "recv": [{"interface": "withdraw", "result": "success"}, {"interface": "query", "balance": 500}]}]"#;
        let input = "codlocker+CSE-531-Project/Project_1/input.json";
        let scenario = Scenario::parse(&reference(input), input).unwrap();
        let output = parse_replies(&parse_document(text, "out").unwrap(), "out").unwrap();
        let report = grade(&scenario, &output);
        assert_eq!(report.failures.len(), 1, "{report}");
        assert_eq!(
            report.failures[0].message,
            "customer 2 (entry #2), event #2 (id 3, query): expected balance 570, got 580"
        );
    }

    #[test]
    fn the_committed_output_is_the_right_one() {
        // SOURCE.txt calls Project_1/output.json stale (910/190), but the stored blob
        // (f4e4e257) is byte-identical to our local run: 400/570/500, all correct.
        let report = grade_files(
            "codlocker+CSE-531-Project/Project_1/input.json",
            "codlocker+CSE-531-Project/Project_1/output.json",
        );
        assert!(report.all_pass(), "{report}");
        let also = grade_files(
            "codlocker+CSE-531-Project/Project_1/input1.json",
            "codlocker+CSE-531-Project/Project_1/output1.json",
        );
        assert!(also.all_pass(), "{also}");
    }
}
