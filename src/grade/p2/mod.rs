//! P2 (Lamport clocks): an output is three parts. Part 1 lists each customer's events, part 2
//! each branch's (`{"id", "type", "events": [{"customer-request-id", "logical_clock",
//! "interface", "comment"}]}`), part 3 all events in one list with `"id"` and `"type"` added,
//! sorted by (request, clock). A comment says what the event is: `event_sent from customer C`
//! (a customer's request), `event_recv from customer C`, `event_sent to branch B` and
//! `event_recv from branch B` (case and spacing free).
//!
//! Branch-to-branch interfaces may be `propagate_*`, the specification's `propogate_*`, or
//! `forward_*` (this bank forwards a follower's request to the Raft leader, which then
//! replicates it): all three are matched alike.
//!
//! [`match_messages`] pairs every receive with a send of the same request on the same link;
//! [`grade`] runs the strict checks ([`checks`]) and the course's graders restated.

mod checks;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

pub use checks::{course_graders, describe, grade};

use super::{integer, invalid, EventRef, GradeError, ProcessKind};

/// What an event's comment says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// `event_sent from customer C`: customer C sends its request to branch C.
    SentFromCustomer(u32),
    /// `event_recv from customer C`.
    RecvFromCustomer(u32),
    /// `event_sent to branch B`.
    SentToBranch(u32),
    /// `event_recv from branch B`.
    RecvFromBranch(u32),
}

impl Action {
    pub fn is_receive(self) -> bool {
        matches!(
            self,
            Action::RecvFromCustomer(_) | Action::RecvFromBranch(_)
        )
    }
}

/// One logged event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct P2Event {
    pub request: i64,
    pub clock: i64,
    /// Lower-cased.
    pub interface: String,
    /// As written.
    pub comment: String,
    pub action: Action,
}

/// A customer or branch with its events in listed order (part 1 or 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub kind: ProcessKind,
    pub id: u32,
    pub events: Vec<P2Event>,
}

impl Process {
    pub fn name(&self) -> String {
        format!("{} {}", self.kind.as_str(), self.id)
    }
}

/// One entry of part 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatEvent {
    pub kind: ProcessKind,
    pub id: u32,
    pub event: P2Event,
}

/// A whole P2 output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2Output {
    /// Part 1.
    pub customers: Vec<Process>,
    /// Part 2.
    pub branches: Vec<Process>,
    /// Part 3.
    pub all: Vec<FlatEvent>,
}

impl P2Output {
    /// Customers, then branches.
    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.customers.iter().chain(&self.branches)
    }

    pub fn process(&self, kind: ProcessKind, id: u32) -> Option<&Process> {
        let list = match kind {
            ProcessKind::Customer => &self.customers,
            ProcessKind::Branch => &self.branches,
        };
        list.iter().find(|p| p.id == id)
    }

    pub fn event(&self, at: EventRef) -> Option<&P2Event> {
        self.process(at.kind, at.process)?.events.get(at.index)
    }
}

/// A send and the receive matched with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub send: EventRef,
    pub recv: EventRef,
}

/// A process as (kind, id).
pub type ProcessId = (ProcessKind, u32);

/// Who an event's message goes from and to, by its comment.
pub fn link(owner: ProcessId, action: Action) -> (ProcessId, ProcessId) {
    use ProcessKind::{Branch, Customer};
    match action {
        // A customer talks to the branch of its own id.
        Action::SentFromCustomer(_) => (owner, (Branch, owner.1)),
        Action::RecvFromCustomer(c) => ((Customer, c), owner),
        Action::SentToBranch(b) => (owner, (Branch, b)),
        Action::RecvFromBranch(b) => ((Branch, b), owner),
    }
}

/// The messages of `output`: each receive paired with a distinct send of the same request on
/// the same link. Receives are taken in clock order, each with the latest unused send below
/// its clock (this pairs as many as any pairing can, and a retried send with its delivered
/// copy); a receive left over takes any unused send (a receive before its send, which the
/// checks blame). Receives with no send left are returned apart.
pub fn match_messages(output: &P2Output) -> (Vec<Message>, Vec<EventRef>) {
    type Key = (ProcessId, ProcessId, i64);
    let mut sends: BTreeMap<Key, Vec<(i64, EventRef)>> = BTreeMap::new();
    let mut recvs: BTreeMap<Key, Vec<(i64, EventRef)>> = BTreeMap::new();
    for process in output.processes() {
        for (index, event) in process.events.iter().enumerate() {
            let (from, to) = link((process.kind, process.id), event.action);
            let at = EventRef {
                kind: process.kind,
                process: process.id,
                index,
            };
            let side = if event.action.is_receive() {
                &mut recvs
            } else {
                &mut sends
            };
            side.entry((from, to, event.request))
                .or_default()
                .push((event.clock, at));
        }
    }
    let mut messages = Vec::new();
    let mut unmatched = Vec::new();
    for (key, mut received) in recvs {
        received.sort();
        let mut sent = sends.remove(&key).unwrap_or_default();
        sent.sort();
        let mut used = vec![false; sent.len()];
        let mut left = Vec::new();
        for &(clock, recv) in &received {
            let pick = (0..sent.len())
                .rev()
                .find(|&i| !used[i] && sent[i].0 < clock);
            match pick {
                Some(i) => {
                    used[i] = true;
                    messages.push(Message {
                        send: sent[i].1,
                        recv,
                    });
                }
                None => left.push(recv),
            }
        }
        for recv in left {
            match (0..sent.len()).find(|&i| !used[i]) {
                Some(i) => {
                    used[i] = true;
                    messages.push(Message {
                        send: sent[i].1,
                        recv,
                    });
                }
                None => unmatched.push(recv),
            }
        }
    }
    messages.sort_by_key(|m| m.recv);
    unmatched.sort();
    (messages, unmatched)
}

/// Names of the three parts in errors when the caller has none (see [`parse_parts_named`]).
pub const PART_NAMES: [&str; 3] = [
    "part 1 (customer events)",
    "part 2 (branch events)",
    "part 3 (all events)",
];

/// Parses the three parts of a P2 output (each a JSON array, as [`super::parse_document`]
/// returns it wrapped in [`Value::Array`]).
pub fn parse_parts(customer: &Value, branch: &Value, all: &Value) -> Result<P2Output, GradeError> {
    parse_parts_named(PART_NAMES, customer, branch, all)
}

/// [`parse_parts`], naming the parts `names` (e.g. their files) in errors.
pub fn parse_parts_named(
    names: [&str; 3],
    customer: &Value,
    branch: &Value,
    all: &Value,
) -> Result<P2Output, GradeError> {
    Ok(P2Output {
        customers: parse_processes(names[0], customer, ProcessKind::Customer)?,
        branches: parse_processes(names[1], branch, ProcessKind::Branch)?,
        all: parse_flat(names[2], all)?,
    })
}

fn entries<'a>(origin: &str, document: &'a Value) -> Result<&'a Vec<Value>, GradeError> {
    document.as_array().ok_or_else(|| {
        invalid(
            origin,
            "the document",
            "must be a JSON array (or JSON lines)",
        )
    })
}

fn parse_processes(
    origin: &str,
    document: &Value,
    kind: ProcessKind,
) -> Result<Vec<Process>, GradeError> {
    let mut processes: Vec<Process> = Vec::new();
    let mut seen = BTreeSet::new();
    for (position, entry) in entries(origin, document)?.iter().enumerate() {
        let whose = format!("entry #{}", position + 1);
        let fail = |message: String| invalid(origin, &whose, message);
        let object = entry
            .as_object()
            .ok_or_else(|| fail("must be a JSON object".into()))?;
        let id = process_id(object).map_err(&fail)?;
        check_type(object, kind).map_err(&fail)?;
        if !seen.insert(id) {
            return Err(fail(format!("{} {id} is listed twice", kind.as_str())));
        }
        let events = object
            .get("events")
            .and_then(Value::as_array)
            .ok_or_else(|| fail("\"events\" must be a list of events".into()))?;
        let mut parsed = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let whose = format!("{whose} ({} {id}), event #{}", kind.as_str(), index + 1);
            let object = event
                .as_object()
                .ok_or_else(|| invalid(origin, &whose, "must be a JSON object"))?;
            parsed.push(parse_event(object).map_err(|m| invalid(origin, &whose, m))?);
        }
        processes.push(Process {
            kind,
            id,
            events: parsed,
        });
    }
    Ok(processes)
}

fn parse_flat(origin: &str, document: &Value) -> Result<Vec<FlatEvent>, GradeError> {
    let mut all = Vec::new();
    for (position, entry) in entries(origin, document)?.iter().enumerate() {
        let whose = format!("entry #{}", position + 1);
        let fail = |message: String| invalid(origin, &whose, message);
        let object = entry
            .as_object()
            .ok_or_else(|| fail("must be a JSON object".into()))?;
        let id = process_id(object).map_err(&fail)?;
        let kind = match object
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
        {
            Some(t) if t == "customer" => ProcessKind::Customer,
            Some(t) if t == "branch" => ProcessKind::Branch,
            _ => return Err(fail("\"type\" must be \"customer\" or \"branch\"".into())),
        };
        let event = parse_event(object).map_err(&fail)?;
        all.push(FlatEvent { kind, id, event });
    }
    Ok(all)
}

fn process_id(object: &Map<String, Value>) -> Result<u32, String> {
    let id = integer(object, "id")?;
    u32::try_from(id).map_err(|_| format!("\"id\" {id} is not a process id"))
}

fn check_type(object: &Map<String, Value>, kind: ProcessKind) -> Result<(), String> {
    match object.get("type").and_then(Value::as_str) {
        Some(t) if !t.eq_ignore_ascii_case(kind.as_str()) => {
            Err(format!("\"type\" is {t:?} in the {} part", kind.as_str()))
        }
        _ => Ok(()),
    }
}

fn parse_event(object: &Map<String, Value>) -> Result<P2Event, String> {
    let request = integer(object, "customer-request-id")?;
    let clock = integer(object, "logical_clock")?;
    let interface = super::lower_string(object, "interface")?;
    let comment = match object.get("comment") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err("\"comment\" must be a string".into()),
    };
    let action = parse_comment(&comment).ok_or_else(|| {
        format!(
            "comment {comment:?} is none of \"event_sent from customer C\", \"event_recv from customer C\", \"event_sent to branch B\", \"event_recv from branch B\""
        )
    })?;
    Ok(P2Event {
        request,
        clock,
        interface,
        comment,
        action,
    })
}

/// What a comment says, or `None` if it is none of the four kinds.
pub fn parse_comment(comment: &str) -> Option<Action> {
    let lower = comment.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let [what, preposition, whom, id] = words.as_slice() else {
        return None;
    };
    let id: u32 = id.parse().ok()?;
    match (*what, *preposition, *whom) {
        ("event_sent", "from", "customer") => Some(Action::SentFromCustomer(id)),
        ("event_recv", "from", "customer") => Some(Action::RecvFromCustomer(id)),
        ("event_sent", "to", "branch") => Some(Action::SentToBranch(id)),
        ("event_recv", "from", "branch") => Some(Action::RecvFromBranch(id)),
        _ => None,
    }
}
