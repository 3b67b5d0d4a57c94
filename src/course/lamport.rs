//! The course's Project 2 output: every customer's and every branch's Lamport events
//! ([`crate::lamport`]) in the course's three JSON parts.
//!
//! - part 1, customer events: `[{"id": 1, "type": "customer", "events": [{"customer-request-id",
//!   "logical_clock", "interface", "comment"}, ...]}, ...]`, customers in input order;
//! - part 2, branch events: the same per branch, branches by id;
//! - part 3, all events: one flat list, each event with its process's `id` and `type`, sorted by
//!   (customer-request-id, logical_clock); ties by customers before branches, then id.
//!
//! `bank run` writes them as `customer_output.json`, `branch_output.json` (beside the output
//! file) and the output file itself (`output.json` by default), the names the course's graders
//! read ([`part_paths`]).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::bootstrap::local::LocalCluster;
use crate::lamport::ClockEvent;

/// What each process of a Project 2 run logged, in the order it happened.
#[derive(Debug, Clone, Default)]
pub struct ClockedRun {
    /// By customer, in input order.
    pub customers: Vec<(u32, Vec<ClockEvent>)>,
    /// By branch id.
    pub branches: Vec<(u64, Vec<ClockEvent>)>,
}

/// The three parts, as the course's files hold them.
#[derive(Debug, Clone, PartialEq)]
pub struct Parts {
    pub customer: Value,
    pub branch: Value,
    pub all: Value,
}

/// A process's events in the course's shape (without `id` and `type`).
fn event_json(event: &ClockEvent) -> Value {
    json!({
        "customer-request-id": event.request,
        "logical_clock": event.clock,
        "interface": event.interface,
        "comment": event.comment(),
    })
}

fn process_json<Id: serde::Serialize>(id: &Id, kind: &str, events: &[ClockEvent]) -> Value {
    let events: Vec<Value> = events.iter().map(event_json).collect();
    json!({"id": id, "type": kind, "events": events})
}

impl ClockedRun {
    /// Collects every branch's events from `cluster` (customers are filled in by the runner).
    /// An error names a branch that logged more events than it keeps.
    pub fn collect_branches(&mut self, cluster: &LocalCluster) -> Result<(), TooManyEvents> {
        for (id, local) in cluster.branches() {
            let (events, dropped) = local.branch.lamport().events();
            if dropped > 0 {
                return Err(TooManyEvents {
                    process: format!("branch {id}"),
                    dropped,
                });
            }
            self.branches.push((id, events));
        }
        self.branches.sort_by_key(|(id, _)| *id);
        Ok(())
    }

    /// The three parts of the course's output.
    pub fn parts(&self) -> Parts {
        let customer: Vec<Value> = self
            .customers
            .iter()
            .map(|(id, events)| process_json(id, "customer", events))
            .collect();
        let branch: Vec<Value> = self
            .branches
            .iter()
            .map(|(id, events)| process_json(id, "branch", events))
            .collect();
        // (request, clock, customers first, id): the course's order, ties made stable.
        let mut all: Vec<((i32, u64, u8, u64), Value)> = Vec::new();
        let mut add = |id: u64, kind: &str, rank: u8, events: &[ClockEvent]| {
            for event in events {
                all.push((
                    (event.request, event.clock, rank, id),
                    json!({
                        "id": id,
                        "customer-request-id": event.request,
                        "type": kind,
                        "logical_clock": event.clock,
                        "interface": event.interface,
                        "comment": event.comment(),
                    }),
                ));
            }
        };
        for (id, events) in &self.customers {
            add(u64::from(*id), "customer", 0, events);
        }
        for (id, events) in &self.branches {
            add(*id, "branch", 1, events);
        }
        all.sort_by_key(|(key, _)| *key);
        Parts {
            customer: Value::Array(customer),
            branch: Value::Array(branch),
            all: Value::Array(all.into_iter().map(|(_, event)| event).collect()),
        }
    }
}

/// A process logged more than [`crate::lamport::EVENTS_MAX`] events: the output would be
/// incomplete, so there is none.
#[derive(Debug, thiserror::Error)]
#[error(
    "{process} logged {dropped} Lamport events beyond the {} it keeps; run fewer requests",
    crate::lamport::EVENTS_MAX
)]
pub struct TooManyEvents {
    pub process: String,
    pub dropped: u64,
}

/// Where the three parts go for output file `output`: `customer_output.json` and
/// `branch_output.json` in its directory, and `output` itself.
pub fn part_paths(output: &Path) -> [PathBuf; 3] {
    [
        output.with_file_name("customer_output.json"),
        output.with_file_name("branch_output.json"),
        output.to_path_buf(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lamport::Counterpart;

    fn event(request: i32, clock: u64, sent: bool, counterpart: Counterpart) -> ClockEvent {
        ClockEvent {
            request,
            clock,
            interface: "deposit".to_string(),
            sent,
            counterpart,
        }
    }

    #[test]
    fn parts_have_the_courses_shape_and_order() {
        let run = ClockedRun {
            customers: vec![(1, vec![event(1, 1, true, Counterpart::Customer(1))])],
            branches: vec![(1, vec![event(1, 2, false, Counterpart::Customer(1))])],
        };
        let parts = run.parts();
        assert_eq!(
            parts.customer,
            json!([{"id": 1, "type": "customer", "events": [{"customer-request-id": 1,
                "logical_clock": 1, "interface": "deposit", "comment": "event_sent from customer 1"}]}])
        );
        assert_eq!(
            parts.branch[0]["events"][0]["comment"],
            "event_recv from customer 1"
        );
        assert_eq!(parts.all[0]["type"], "customer");
        assert_eq!(parts.all[1]["logical_clock"], 2);
        let [customer, branch, all] = part_paths(Path::new("out/run.json"));
        assert_eq!(customer, Path::new("out/customer_output.json"));
        assert_eq!(branch, Path::new("out/branch_output.json"));
        assert_eq!(all, Path::new("out/run.json"));
    }
}
