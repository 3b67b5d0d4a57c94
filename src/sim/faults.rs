//! Fault schedules drawn from a seed, and how each fault is done to a turmoil `Sim`.
//!
//! Every fault has a start and an end within [`FAULTS_START`, `FAULTS_END`); at `FAULTS_END`
//! [`heal`] undoes whatever is still in effect. A fault that names "the leader" is resolved when
//! it starts, from the branches' own metrics (deterministic, like everything in a run).
//!
//! turmoil's model of message loss is not per-segment loss: `fail_rate` is the chance, per
//! message, that the link breaks (dropping what is in flight) until it is repaired (per message,
//! `repair_rate`). Its TCP never retransmits, so a broken link stalls the connections on it
//! until HTTP/2 keepalive gives up on them and the channel reconnects.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use super::{branch_host, BRANCHES, FAULTS_END, FAULTS_START};
use crate::BranchId;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// The link between two branches drops everything, both ways.
    Partition(BranchId, BranchId),
    /// The branch that leads when this starts loses its links to the other branches
    /// (customers still reach it).
    IsolateLeader,
    /// Messages from the first branch to the second are dropped; the other way works.
    OneWay(BranchId, BranchId),
    /// The link between two branches holds every message until the end (a pause), then
    /// delivers them all at once.
    Hold(BranchId, BranchId),
    /// The branch crashes, losing everything but its log, and restarts at the end.
    Crash(BranchId),
    /// Every link breaks with this chance per message.
    Loss(f64),
    /// Message latency up to this many milliseconds.
    Latency(u64),
}

/// A fault and when it is in effect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub start: Duration,
    pub end: Duration,
    pub kind: FaultKind,
}

/// What a run does to its network and hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub faults: Vec<Fault>,
    /// The latency bound outside latency faults.
    pub latency_max: Duration,
}

fn other_branch(rng: &mut StdRng, not: BranchId) -> BranchId {
    let offset = rng.gen_range(1..BRANCHES);
    (not - 1 + offset) % BRANCHES + 1
}

impl Schedule {
    /// Between one and six faults, at random times in the fault window.
    pub fn draw(rng: &mut StdRng, latency_max: Duration) -> Schedule {
        let window_ms = u64::try_from((FAULTS_END - FAULTS_START).as_millis()).unwrap_or(1);
        let count = rng.gen_range(1..=6);
        let mut faults: Vec<Fault> = (0..count)
            .map(|_| {
                let start_ms = rng.gen_range(0..window_ms);
                let length_ms = rng.gen_range(300..=3_000);
                let a: BranchId = rng.gen_range(1..=BRANCHES);
                let b = other_branch(rng, a);
                let kind = match rng.gen_range(0..7) {
                    0 => FaultKind::Partition(a, b),
                    1 => FaultKind::IsolateLeader,
                    2 => FaultKind::OneWay(a, b),
                    3 => FaultKind::Hold(a, b),
                    4 => FaultKind::Crash(a),
                    5 => FaultKind::Loss(rng.gen_range(0.0..0.3)),
                    _ => FaultKind::Latency(rng.gen_range(100..=1_000)),
                };
                let start = FAULTS_START + Duration::from_millis(start_ms);
                Fault {
                    start,
                    end: (start + Duration::from_millis(length_ms)).min(FAULTS_END),
                    kind,
                }
            })
            .collect();
        faults.sort_by_key(|f| f.start);
        Schedule {
            faults,
            latency_max,
        }
    }

    /// The starts and ends of every fault, in time order (starts first on a tie).
    pub(super) fn actions(&self) -> Vec<Action> {
        let mut actions = Vec::new();
        for fault in &self.faults {
            let target = Rc::new(Cell::new(None));
            actions.push(Action {
                at: fault.start,
                kind: fault.kind,
                start: true,
                target: target.clone(),
                latency_max: self.latency_max,
            });
            actions.push(Action {
                at: fault.end,
                kind: fault.kind,
                start: false,
                target,
                latency_max: self.latency_max,
            });
        }
        actions.sort_by_key(|a| (a.at, !a.start));
        actions
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for fault in &self.faults {
            writeln!(
                f,
                "  {:>6}ms..{:>6}ms {:?}",
                fault.start.as_millis(),
                fault.end.as_millis(),
                fault.kind
            )?;
        }
        Ok(())
    }
}

/// The start or the end of one fault.
pub(super) struct Action {
    pub at: Duration,
    kind: FaultKind,
    start: bool,
    /// The branch a leader fault or a crash resolved to, shared by its start and end.
    target: Rc<Cell<Option<BranchId>>>,
    latency_max: Duration,
}

impl Action {
    /// The branch this action crashed, if it is the start of a crash that was done.
    pub fn crashed(&self) -> Option<BranchId> {
        match (self.kind, self.start) {
            (FaultKind::Crash(_), true) => self.target.get(),
            _ => None,
        }
    }

    /// Does it; says what it did.
    pub fn apply(&self, sim: &mut turmoil::Sim<'_>, leader: Option<BranchId>) -> String {
        let host = |id: BranchId| branch_host(id);
        let others = |id: BranchId| (1..=BRANCHES).filter(move |&other| other != id);
        match (self.kind, self.start) {
            (FaultKind::Partition(a, b), true) => sim.partition(host(a), host(b)),
            (FaultKind::Partition(a, b), false) => sim.repair(host(a), host(b)),
            (FaultKind::IsolateLeader, true) => {
                let Some(leader) = leader else {
                    return "isolate the leader: no leader, nothing done".to_string();
                };
                self.target.set(Some(leader));
                for other in others(leader) {
                    sim.partition(host(leader), host(other));
                }
                return format!("isolate the leader, branch {leader}");
            }
            (FaultKind::IsolateLeader, false) => {
                let Some(leader) = self.target.get() else {
                    return "end of isolating no leader".to_string();
                };
                for other in others(leader) {
                    sim.repair(host(leader), host(other));
                }
                return format!("reconnect branch {leader}");
            }
            (FaultKind::OneWay(a, b), true) => sim.partition_oneway(host(a), host(b)),
            (FaultKind::OneWay(a, b), false) => sim.repair_oneway(host(a), host(b)),
            (FaultKind::Hold(a, b), true) => sim.hold(host(a), host(b)),
            (FaultKind::Hold(a, b), false) => sim.release(host(a), host(b)),
            (FaultKind::Crash(id), true) => {
                let down = (1..=BRANCHES)
                    .filter(|&b| !sim.is_host_running(host(b)))
                    .count();
                if down > 0 {
                    return format!("crash branch {id}: skipped, a branch is already down");
                }
                self.target.set(Some(id));
                sim.crash(host(id));
            }
            (FaultKind::Crash(_), false) => {
                let Some(id) = self.target.get() else {
                    return "restart: nothing was crashed".to_string();
                };
                if !sim.is_host_running(host(id)) {
                    sim.bounce(host(id));
                }
                return format!("restart branch {id}");
            }
            (FaultKind::Loss(rate), true) => sim.set_fail_rate(rate),
            (FaultKind::Loss(_), false) => sim.set_fail_rate(0.0),
            (FaultKind::Latency(ms), true) => {
                sim.set_max_message_latency(Duration::from_millis(ms))
            }
            (FaultKind::Latency(_), false) => sim.set_max_message_latency(self.latency_max),
        }
        format!(
            "{} {:?}",
            if self.start { "start" } else { "end" },
            self.kind
        )
    }
}

/// Undoes every fault: releases and repairs every link between branches, restarts crashed
/// branches, stops message loss and latency spikes.
pub fn heal(sim: &mut turmoil::Sim<'_>, schedule: &Schedule) -> String {
    let mut restarted = Vec::new();
    for a in 1..=BRANCHES {
        for b in (a + 1)..=BRANCHES {
            sim.release(branch_host(a), branch_host(b));
            sim.repair(branch_host(a), branch_host(b));
        }
        if !sim.is_host_running(branch_host(a)) {
            sim.bounce(branch_host(a));
            restarted.push(a);
        }
    }
    sim.set_fail_rate(0.0);
    sim.set_max_message_latency(schedule.latency_max);
    format!("heal: every link repaired, branches {restarted:?} restarted")
}
