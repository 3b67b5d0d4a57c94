//! Lamport logical clocks for the course's Project 2: every process (customer or branch) keeps a
//! [`LamportClock`] and logs the four kinds of event the course asks for, each tied to the
//! customer request whose message it is.
//!
//! The clocks ride on the messages the bank really sends, never on invented ones:
//! - a customer's `Branch.MsgDelivery` call carries its clock in request metadata
//!   ([`CLOCK_HEADER`], [`CUSTOMER_HEADER`]);
//! - a follower's `Forward`/`ForwardGroup` call to the leader, and the leader's
//!   `AppendEntries` that replicate the log entry carrying the request, carry one [`Stamp`] per
//!   course request inside (`bank.peer.v1.LamportStamps` on the `RaftPayload`).
//!
//! The rules are the course's: clocks start at 0; a send is local + 1; a receive is
//! max(local, message) + 1. One peer message may carry several course requests (a group
//! commit puts several in one entry, one `AppendEntries` may carry several entries): each is
//! its own send event with its own clock, and the receiver applies the rule to each in order,
//! so every receive is later than the send it matches.
//!
//! A branch learns which log entries carry course requests from the stamps themselves (a
//! [`CourseRequest`] per request id), so whichever branch leads replicates them stamped.
//! Everything here is bounded: at most [`EVENTS_MAX`] events and [`LABELS_MAX`] labels per
//! process; beyond that the oldest labels are forgotten and further events are counted, not
//! kept. Traffic without course requests (every request outside Project 2, heartbeats) is never
//! stamped and never moves a clock.
//!
//! Where it sits: below `raft` (whose peer network stamps `AppendEntries`) and `node` (which
//! stamps forwards), above `ledger` (whose request ids it labels).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::ledger::{Command, Proposal, RequestId};
use crate::proto::peer::{LamportStamp, LamportStamps};

/// Request metadata of a customer's call: the customer's Lamport clock at its send.
pub const CLOCK_HEADER: &str = "bank-lamport-clock";
/// Request metadata of a customer's call: the customer's id.
pub const CUSTOMER_HEADER: &str = "bank-customer";

/// At most this many events are kept per process (a 10x10 course run makes a few hundred).
pub const EVENTS_MAX: usize = 1_000_000;
/// At most this many request ids are remembered as course requests per branch.
pub const LABELS_MAX: usize = 100_000;

/// A customer request of a Project 2 scenario, as the events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CourseRequest {
    /// The scenario's `customer-request-id`.
    pub request: i32,
    pub customer: u32,
    pub interface: Interface,
}

/// What a course request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    Deposit,
    Withdraw,
    Query,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Deposit => "deposit",
            Interface::Withdraw => "withdraw",
            Interface::Query => "query",
        }
    }

    /// The interface named `name`, if it is one of the three.
    pub fn parse(name: &str) -> Option<Interface> {
        match name {
            "deposit" => Some(Interface::Deposit),
            "withdraw" => Some(Interface::Withdraw),
            "query" => Some(Interface::Query),
            _ => None,
        }
    }
}

/// Which branch-to-branch message carries a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// A follower hands the request to the leader (`Forward`/`ForwardGroup`).
    Forward,
    /// The leader replicates the log entry that carries it (`AppendEntries`).
    Propagate,
}

impl Hop {
    fn prefix(self) -> &'static str {
        match self {
            Hop::Forward => "forward_",
            Hop::Propagate => "propagate_",
        }
    }
}

/// Who is on the other end of an event's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counterpart {
    Customer(u32),
    Branch(u64),
}

/// One logged event: a send or a receive of one course request's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockEvent {
    pub request: i32,
    pub clock: u64,
    /// `deposit`, `withdraw` or `query` between a customer and its branch;
    /// `propagate_deposit`, `forward_withdraw`, … between branches.
    pub interface: String,
    pub sent: bool,
    pub counterpart: Counterpart,
}

impl ClockEvent {
    /// The course's comment: `event_sent from customer 1`, `event_recv from customer 1`,
    /// `event_sent to branch 2`, `event_recv from branch 2`.
    pub fn comment(&self) -> String {
        match (self.sent, self.counterpart) {
            (true, Counterpart::Customer(id)) => format!("event_sent from customer {id}"),
            (false, Counterpart::Customer(id)) => format!("event_recv from customer {id}"),
            (true, Counterpart::Branch(id)) => format!("event_sent to branch {id}"),
            (false, Counterpart::Branch(id)) => format!("event_recv from branch {id}"),
        }
    }
}

/// One course request's clock on a peer message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub request_id: RequestId,
    pub course: CourseRequest,
    pub clock: u64,
}

#[derive(Debug, Default)]
struct State {
    clock: u64,
    events: Vec<ClockEvent>,
    /// Events not kept because [`EVENTS_MAX`] was reached.
    dropped: u64,
    labels: HashMap<RequestId, CourseRequest>,
    /// Labels in the order they were learnt, to forget the oldest first.
    learnt: VecDeque<RequestId>,
}

impl State {
    /// Ticks the clock to `max(local, message) + 1` (a send passes `message` 0) and logs
    /// the event at the new time.
    fn tick(
        &mut self,
        message: u64,
        course: &CourseRequest,
        interface: String,
        sent: bool,
        counterpart: Counterpart,
    ) -> u64 {
        self.clock = self.clock.max(message).saturating_add(1);
        if self.events.len() < EVENTS_MAX {
            self.events.push(ClockEvent {
                request: course.request,
                clock: self.clock,
                interface,
                sent,
                counterpart,
            });
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
        self.clock
    }

    fn learn(&mut self, request_id: RequestId, course: CourseRequest) {
        if self.labels.insert(request_id, course).is_none() {
            self.learnt.push_back(request_id);
            while self.learnt.len() > LABELS_MAX {
                if let Some(oldest) = self.learnt.pop_front() {
                    self.labels.remove(&oldest);
                }
            }
        }
    }
}

/// One process's Lamport clock and the events it logged. Thread-safe; every method is one
/// short critical section.
#[derive(Debug, Default)]
pub struct LamportClock {
    state: Mutex<State>,
}

impl LamportClock {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic while holding the lock cannot leave the state half-changed in a way that
        // matters to a log of events, so a poisoned lock is used as it is.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut state)
    }

    /// A customer sends `course` to its branch: returns the clock its message carries.
    pub fn customer_sends(&self, course: &CourseRequest) -> u64 {
        self.with(|state| {
            let interface = course.interface.as_str().to_string();
            state.tick(
                0,
                course,
                interface,
                true,
                Counterpart::Customer(course.customer),
            )
        })
    }

    /// A branch receives `course` from its customer, whose message carried `clock`.
    pub fn receive_from_customer(&self, course: &CourseRequest, clock: u64) {
        self.with(|state| {
            let interface = course.interface.as_str().to_string();
            state.tick(
                clock,
                course,
                interface,
                false,
                Counterpart::Customer(course.customer),
            );
        });
    }

    /// Remembers that the proposal under `request_id` carries `course`, so the messages that
    /// carry it later are stamped.
    pub fn label(&self, request_id: RequestId, course: CourseRequest) {
        self.with(|state| state.learn(request_id, course));
    }

    /// Sends the course requests among `proposals` to branch `to` over `hop`: logs one send
    /// event for each and returns their stamps (none if no proposal is a course request).
    pub fn send<'a>(
        &self,
        to: u64,
        hop: Hop,
        proposals: impl IntoIterator<Item = &'a Proposal>,
    ) -> Vec<Stamp> {
        let mut ids = Vec::new();
        for proposal in proposals {
            match &proposal.command {
                Command::Batch(items) => ids.extend(items.iter().map(|item| item.request_id)),
                _ => ids.push(proposal.request_id),
            }
        }
        self.with(|state| {
            if state.labels.is_empty() {
                return Vec::new();
            }
            let mut stamps = Vec::new();
            for request_id in ids {
                if let Some(course) = state.labels.get(&request_id).copied() {
                    let interface = format!("{}{}", hop.prefix(), course.interface.as_str());
                    let clock = state.tick(0, &course, interface, true, Counterpart::Branch(to));
                    stamps.push(Stamp {
                        request_id,
                        course,
                        clock,
                    });
                }
            }
            stamps
        })
    }

    /// Receives `stamps` from branch `from` over `hop`: one receive event per stamp, in order,
    /// and each request remembered as a course request.
    pub fn receive(&self, from: u64, hop: Hop, stamps: &[Stamp]) {
        if stamps.is_empty() {
            return;
        }
        self.with(|state| {
            for stamp in stamps {
                state.learn(stamp.request_id, stamp.course);
                let interface = format!("{}{}", hop.prefix(), stamp.course.interface.as_str());
                state.tick(
                    stamp.clock,
                    &stamp.course,
                    interface,
                    false,
                    Counterpart::Branch(from),
                );
            }
        });
    }

    /// The events logged so far, in the order they happened (increasing clock), and how many
    /// more were not kept.
    pub fn events(&self) -> (Vec<ClockEvent>, u64) {
        self.with(|state| (state.events.clone(), state.dropped))
    }
}

/// `stamps` from branch `sender` as they travel on a `RaftPayload` (`None` when there are
/// none, so ordinary traffic carries nothing).
pub fn to_wire(sender: u64, stamps: &[Stamp]) -> Option<LamportStamps> {
    if stamps.is_empty() {
        return None;
    }
    let stamps = stamps
        .iter()
        .map(|stamp| LamportStamp {
            origin: stamp.request_id.origin,
            sequence: stamp.request_id.sequence,
            customer_request_id: stamp.course.request,
            customer: stamp.course.customer,
            interface: stamp.course.interface.as_str().to_string(),
            clock: stamp.clock,
        })
        .collect();
    Some(LamportStamps { sender, stamps })
}

/// The sender and stamps of a received `RaftPayload`'s `lamport` field. A stamp with an
/// unknown interface is skipped: it names no course request this bank knows.
pub fn from_wire(wire: &LamportStamps) -> (u64, Vec<Stamp>) {
    let stamps = wire
        .stamps
        .iter()
        .filter_map(|stamp| {
            Some(Stamp {
                request_id: RequestId {
                    origin: stamp.origin,
                    sequence: stamp.sequence,
                },
                course: CourseRequest {
                    request: stamp.customer_request_id,
                    customer: stamp.customer,
                    interface: Interface::parse(&stamp.interface)?,
                },
                clock: stamp.clock,
            })
        })
        .collect();
    (wire.sender, stamps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::ORIGINAL_ACCOUNT;

    fn deposit(sequence: u64) -> Proposal {
        Proposal {
            request_id: RequestId {
                origin: 9,
                sequence,
            },
            command: Command::Deposit {
                account: ORIGINAL_ACCOUNT,
                amount_minor_units: 10,
            },
        }
    }

    fn course(request: i32) -> CourseRequest {
        CourseRequest {
            request,
            customer: 1,
            interface: Interface::Deposit,
        }
    }

    #[test]
    fn sends_and_receives_follow_lamports_rules() {
        let customer = LamportClock::new();
        let leader = LamportClock::new();
        let follower = LamportClock::new();
        let sent = customer.customer_sends(&course(1));
        assert_eq!(sent, 1);
        leader.receive_from_customer(&course(1), sent);
        // Unlabelled proposals are not course requests: nothing is sent, no clock moves.
        assert!(leader.send(2, Hop::Propagate, [&deposit(1)]).is_empty());
        leader.label(deposit(1).request_id, course(1));
        leader.label(deposit(2).request_id, course(2));
        let batch = Proposal {
            request_id: RequestId {
                origin: 9,
                sequence: 99,
            },
            command: Command::Batch(vec![deposit(1), deposit(2)]),
        };
        let stamps = leader.send(2, Hop::Propagate, [&batch]);
        assert_eq!(
            stamps.iter().map(|s| s.clock).collect::<Vec<_>>(),
            vec![3, 4]
        );
        let (sender, received) = from_wire(&to_wire(1, &stamps).expect("stamps"));
        assert_eq!((sender, &received), (1, &stamps));
        follower.receive(sender, Hop::Propagate, &received);
        let (events, dropped) = follower.events();
        assert_eq!(dropped, 0);
        assert_eq!(
            events.iter().map(|e| e.clock).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(events[0].interface, "propagate_deposit");
        assert_eq!(events[0].comment(), "event_recv from branch 1");
        // The follower now knows the labels, so it stamps them if it leads later.
        assert_eq!(follower.send(3, Hop::Propagate, [&deposit(2)]).len(), 1);
        let (leader_events, _) = leader.events();
        assert_eq!(leader_events[0].comment(), "event_recv from customer 1");
        assert_eq!(leader_events[1].comment(), "event_sent to branch 2");
    }

    #[test]
    fn labels_are_bounded() {
        let clock = LamportClock::new();
        for sequence in 0..(LABELS_MAX as u64 + 10) {
            clock.label(deposit(sequence).request_id, course(1));
        }
        // The oldest were forgotten: sending them stamps nothing.
        assert!(clock.send(2, Hop::Propagate, [&deposit(0)]).is_empty());
        assert_eq!(clock.send(2, Hop::Propagate, [&deposit(20)]).len(), 1);
    }
}
