//! The strict P2 checks, each reported under its own name:
//!
//! - `clocks-increase`: each process's clocks strictly increase in listed order;
//! - `receive-after-send`, `receive-has-send`: each receive is paired with a send of the same
//!   request on the same link ([`super::match_messages`]) with a lower clock;
//! - `lamport-rule`: a send is at the process's previous clock + 1, a branch's receive at
//!   max(previous, send) + 1 (customers do not merge replies: they send at 1, 2, ...);
//! - `names`, `event-kind`, `interface`, `request-sent`, `propagation`: the events agree with
//!   the input, every request is sent, and every deposit and withdraw reaches every branch;
//! - `part3-union`, `part3-order`: part 3 is parts 1 and 2 merged, sorted by (request, clock);
//!
//! and the course's three graders, restated: part 1 and part 2 clocks strictly increase per
//! process, part 3 clocks do not decrease per (request, id).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::course::scenario::{Interface, Scenario};
use crate::grade::{CourseGrader, EventRef, ProcessKind, Report};

use super::{link, match_messages, Action, Message, P2Event, P2Output, Process};

/// Grades a P2 output against its input (a [`crate::course::scenario::Variant::LamportClocks`]
/// scenario).
pub fn grade(scenario: &Scenario, output: &P2Output) -> Report {
    let mut report = Report::default();
    let (messages, unmatched) = match_messages(output);
    clocks_increase(&mut report, output);
    receives_match(&mut report, output, &messages, &unmatched);
    lamport_rules(&mut report, output, &messages);
    agrees_with_input(&mut report, scenario, output);
    every_request_everywhere(&mut report, scenario, output);
    part3(&mut report, output);
    report.course = course_graders(output);
    report
}

/// `at` in words, e.g. `branch 2 receives request 3 (propagate_deposit from branch 1) at
/// clock 4`.
pub fn describe(kind: ProcessKind, id: u32, event: &P2Event) -> String {
    let who = format!("{} {id}", kind.as_str());
    let (verb, whom) = match event.action {
        Action::SentFromCustomer(_) => ("sends", String::new()),
        Action::RecvFromCustomer(c) => ("receives", format!(" from customer {c}")),
        Action::SentToBranch(b) => ("sends", format!(" to branch {b}")),
        Action::RecvFromBranch(b) => ("receives", format!(" from branch {b}")),
    };
    format!(
        "{who} {verb} request {} ({}{whom}) at clock {}",
        event.request, event.interface, event.clock
    )
}

fn describe_at(output: &P2Output, at: EventRef) -> String {
    output
        .event(at)
        .map_or_else(String::new, |e| describe(at.kind, at.process, e))
}

fn refs(process: &Process) -> impl Iterator<Item = (EventRef, &P2Event)> {
    process.events.iter().enumerate().map(|(index, event)| {
        (
            EventRef {
                kind: process.kind,
                process: process.id,
                index,
            },
            event,
        )
    })
}

fn clocks_increase(report: &mut Report, output: &P2Output) {
    for process in output.processes() {
        let mut bad = refs(process)
            .zip(refs(process).skip(1))
            .filter(|((_, a), (_, b))| b.clock <= a.clock);
        let failure = bad.next().map(|((a_at, a), (b_at, b))| {
            let more = bad.count();
            let more = if more > 0 {
                format!(" (and {more} more pairs)")
            } else {
                String::new()
            };
            (
                format!(
                    "{}: event #{} ({}) comes after event #{} (clock {}): a process's clocks must strictly increase{more}",
                    process.name(),
                    b_at.index + 1,
                    describe(process.kind, process.id, b),
                    a_at.index + 1,
                    a.clock
                ),
                vec![a_at, b_at],
            )
        });
        report.record("clocks-increase", failure);
    }
}

fn receives_match(
    report: &mut Report,
    output: &P2Output,
    messages: &[Message],
    unmatched: &[EventRef],
) {
    for message in messages {
        let (Some(send), Some(recv)) = (output.event(message.send), output.event(message.recv))
        else {
            continue;
        };
        report.record(
            "receive-after-send",
            (send.clock >= recv.clock).then(|| {
                (
                    format!(
                        "{}, but {} {} sent it at clock {}: a receive must come after its send",
                        describe_at(output, message.recv),
                        message.send.kind.as_str(),
                        message.send.process,
                        send.clock
                    ),
                    vec![message.send, message.recv],
                )
            }),
        );
    }
    for &at in unmatched {
        let Some(event) = output.event(at) else {
            continue;
        };
        let (from, to) = link((at.kind, at.process), event.action);
        let why = if from == to {
            format!(
                "but a branch does not message itself: the comment must name the sender, not {} {} itself",
                to.0.as_str(),
                to.1
            )
        } else {
            format!(
                "but {} {} logs no send of it to {} {} (none, or each already paired with another receive)",
                from.0.as_str(),
                from.1,
                to.0.as_str(),
                to.1
            )
        };
        report.fail(
            "receive-has-send",
            format!("{}, {why}", describe_at(output, at)),
            vec![at],
        );
    }
}

fn lamport_rules(report: &mut Report, output: &P2Output, messages: &[Message]) {
    let sent_by: HashMap<EventRef, EventRef> = messages
        .iter()
        .filter(|m| {
            matches!((output.event(m.send), output.event(m.recv)), (Some(s), Some(r)) if s.clock < r.clock)
        })
        .map(|m| (m.recv, m.send))
        .collect();
    for process in output.processes() {
        let mut previous = 0;
        for (at, event) in refs(process) {
            let prior = previous;
            previous = event.clock;
            let said = describe(at.kind, at.process, event);
            let failure = match (at.kind, event.action.is_receive()) {
                (_, false) => (event.clock != prior + 1).then(|| {
                    (
                        format!(
                            "{said}, but its previous event is at clock {prior}: a send is at previous + 1 = {}",
                            prior + 1
                        ),
                        vec![at],
                    )
                }),
                (ProcessKind::Branch, true) => {
                    let Some(send_at) = sent_by.get(&at).copied() else {
                        continue;
                    };
                    let Some(send) = output.event(send_at) else {
                        continue;
                    };
                    let want = prior.max(send.clock) + 1;
                    (event.clock != want).then(|| {
                        (
                            format!(
                                "{said}, but max(previous clock {prior}, sent clock {}) + 1 = {want} ({} {} sent it)",
                                send.clock,
                                send_at.kind.as_str(),
                                send_at.process
                            ),
                            vec![send_at, at],
                        )
                    })
                }
                // A customer logs no receives; `event-kind` blames one that does.
                (ProcessKind::Customer, true) => continue,
            };
            report.record("lamport-rule", failure);
        }
    }
}

/// The interfaces an event of `action` may name for a request of `interface`.
fn allowed_interfaces(action: Action, interface: Interface) -> Vec<String> {
    let name = interface.as_str();
    match action {
        Action::SentFromCustomer(_) | Action::RecvFromCustomer(_) => vec![name.to_string()],
        Action::SentToBranch(_) | Action::RecvFromBranch(_) => {
            ["propagate", "propogate", "forward"]
                .iter()
                .map(|prefix| format!("{prefix}_{name}"))
                .collect()
        }
    }
}

/// `names`, `event-kind` and `interface`: one check each per event.
fn agrees_with_input(report: &mut Report, scenario: &Scenario, output: &P2Output) {
    let requests: BTreeMap<i64, (u32, Interface)> = scenario
        .customers
        .iter()
        .flat_map(|c| {
            c.events
                .iter()
                .map(move |e| (i64::from(e.id), (c.id, e.interface)))
        })
        .collect();
    let customers: BTreeSet<u32> = scenario.customers.iter().map(|c| c.id).collect();
    let branches: BTreeSet<u64> = scenario.branches.iter().map(|b| b.id).collect();
    let exists = |(kind, id): (ProcessKind, u32)| match kind {
        ProcessKind::Customer => customers.contains(&id),
        ProcessKind::Branch => branches.contains(&u64::from(id)),
    };
    for process in output.processes() {
        for (at, event) in refs(process) {
            let said = describe(at.kind, at.process, event);
            let (from, to) = link((at.kind, at.process), event.action);
            let request = requests.get(&event.request).copied();
            let unknown = [from, to].into_iter().find(|p| !exists(*p));
            let names = match (request, unknown) {
                (None, _) => Some(format!(
                    "{said}: request {} is not in the input",
                    event.request
                )),
                (_, Some((kind, id))) => Some(format!(
                    "{said}: there is no {} {id} in the input",
                    kind.as_str()
                )),
                _ => None,
            };
            report.record("names", names.map(|m| (m, vec![at])));
            let owner = match event.action {
                Action::SentFromCustomer(c) | Action::RecvFromCustomer(c) => Some(c),
                _ => None,
            };
            let kind = match (at.kind, event.action) {
                (ProcessKind::Customer, Action::SentFromCustomer(c)) if c != at.process => {
                    Some(format!("{said}: the comment names customer {c}"))
                }
                (ProcessKind::Customer, Action::SentFromCustomer(_)) => None,
                (ProcessKind::Customer, _) => Some(format!(
                    "{said}: a customer logs only its own requests (\"{}\")",
                    event.comment
                )),
                (ProcessKind::Branch, Action::SentFromCustomer(_)) => Some(format!(
                    "{said}: a branch does not log \"event_sent from customer\""
                )),
                (ProcessKind::Branch, Action::RecvFromCustomer(c)) if c != at.process => {
                    Some(format!("{said}: customer {c} talks to branch {c} only"))
                }
                _ => match (owner, request) {
                    (Some(c), Some((owner, _))) if c != owner => Some(format!(
                        "{said}: request {} is customer {owner}'s, not customer {c}'s",
                        event.request
                    )),
                    _ => None,
                },
            };
            report.record("event-kind", kind.map(|m| (m, vec![at])));
            if let Some((_, interface)) = request {
                let allowed = allowed_interfaces(event.action, interface);
                report.record(
                    "interface",
                    (!allowed.contains(&event.interface)).then(|| {
                        (
                            format!(
                                "{said}: request {} is a {} in the input, so the interface must be {}",
                                event.request,
                                interface.as_str(),
                                allowed.join(" or ")
                            ),
                            vec![at],
                        )
                    }),
                );
            }
        }
    }
}

/// `request-sent` (each request's customer logs sending it) and `propagation` (each deposit
/// and withdraw is received at every branch).
fn every_request_everywhere(report: &mut Report, scenario: &Scenario, output: &P2Output) {
    for customer in &scenario.customers {
        let sent = output.process(ProcessKind::Customer, customer.id);
        for request in &customer.events {
            let id = i64::from(request.id);
            let send_at = sent.and_then(|p| {
                refs(p)
                    .find(|(_, e)| {
                        e.request == id && matches!(e.action, Action::SentFromCustomer(_))
                    })
                    .map(|(at, _)| at)
            });
            report.record(
                "request-sent",
                send_at.is_none().then(|| {
                    (
                        format!(
                            "customer {} never logs sending request {id} ({})",
                            customer.id,
                            request.interface.as_str()
                        ),
                        Vec::new(),
                    )
                }),
            );
            if request.interface == Interface::Query {
                continue;
            }
            for branch in &scenario.branches {
                let Ok(branch_id) = u32::try_from(branch.id) else {
                    continue;
                };
                let at_branch = output.process(ProcessKind::Branch, branch_id);
                let received = at_branch.is_some_and(|p| {
                    p.events
                        .iter()
                        .any(|e| e.request == id && e.action.is_receive())
                });
                let failure = (!received).then(|| {
                    // Draw red what was sent towards the branch, and the request itself.
                    let mut events: Vec<EventRef> = send_at.into_iter().collect();
                    for process in &output.branches {
                        events.extend(refs(process).filter_map(|(at, e)| {
                            (e.request == id && e.action == Action::SentToBranch(branch_id))
                                .then_some(at)
                        }));
                    }
                    (
                        format!(
                            "request {id} ({} from customer {}) never reaches branch {branch_id}: branch {branch_id} logs no receive of it",
                            request.interface.as_str(),
                            customer.id
                        ),
                        events,
                    )
                });
                report.record("propagation", failure);
            }
        }
    }
}

fn part3(report: &mut Report, output: &P2Output) {
    type Key<'a> = (ProcessKind, u32, &'a P2Event);
    let mut counts: BTreeMap<Key, i64> = BTreeMap::new();
    let mut where_listed: BTreeMap<Key, EventRef> = BTreeMap::new();
    for process in output.processes() {
        for (at, event) in refs(process) {
            let key = (process.kind, process.id, event);
            *counts.entry(key).or_default() += 1;
            where_listed.entry(key).or_insert(at);
        }
    }
    for flat in &output.all {
        *counts.entry((flat.kind, flat.id, &flat.event)).or_default() -= 1;
    }
    let lacking: Vec<&Key> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, _)| k)
        .collect();
    let extra: Vec<&Key> = counts
        .iter()
        .filter(|(_, n)| **n < 0)
        .map(|(k, _)| k)
        .collect();
    let listed = |keys: &[&Key]| {
        let mut text: Vec<String> = keys
            .iter()
            .take(3)
            .map(|k| describe(k.0, k.1, k.2))
            .collect();
        if keys.len() > 3 {
            text.push(format!("{} more", keys.len() - 3));
        }
        text.join("; ")
    };
    let mut problems = Vec::new();
    if !lacking.is_empty() {
        problems.push(format!(
            "part 3 lacks events of parts 1 and 2: {}",
            listed(&lacking)
        ));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "part 3 has events parts 1 and 2 do not: {}",
            listed(&extra)
        ));
    }
    let events = lacking
        .iter()
        .filter_map(|k| where_listed.get(*k).copied())
        .collect();
    report.record(
        "part3-union",
        (!problems.is_empty()).then(|| (problems.join("; and "), events)),
    );
    let out_of_order = output.all.windows(2).find(|pair| {
        (pair[0].event.request, pair[0].event.clock) > (pair[1].event.request, pair[1].event.clock)
    });
    report.record(
        "part3-order",
        out_of_order.map(|pair| {
            (
                format!(
                    "part 3 lists \"{}\" before \"{}\": it must be sorted by customer-request-id, then logical_clock",
                    describe(pair[0].kind, pair[0].id, &pair[0].event),
                    describe(pair[1].kind, pair[1].id, &pair[1].event)
                ),
                Vec::new(),
            )
        }),
    );
}

/// The course's P2 graders as SOURCE.txt describes them (its ordering rule for the misspelled
/// `propogate` interfaces is left out: it never decides a grade on the spec's own example).
pub fn course_graders(output: &P2Output) -> Vec<CourseGrader> {
    let increasing = |processes: &[Process]| {
        processes
            .iter()
            .all(|p| p.events.windows(2).all(|w| w[0].clock < w[1].clock))
    };
    let mut last: HashMap<(i64, u32), i64> = HashMap::new();
    let part3 = output.all.iter().all(|flat| {
        let previous = last.insert((flat.event.request, flat.id), flat.event.clock);
        previous.is_none_or(|p| p <= flat.event.clock)
    });
    vec![
        CourseGrader {
            name: "part 1: each customer's clocks increase",
            passed: increasing(&output.customers),
        },
        CourseGrader {
            name: "part 2: each branch's clocks increase",
            passed: increasing(&output.branches),
        },
        CourseGrader {
            name: "part 3: clocks per (request, id) do not decrease",
            passed: part3,
        },
    ]
}
