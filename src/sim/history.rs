//! What the simulated customers did and saw, and the simple judge of it.
//!
//! A history is Jepsen-style: every call is an `invoke` followed by `ok`, `fail` (certainly
//! had no effect) or `info` (unknown outcome: a timeout or a lost connection), in the order
//! they happened in simulated time. The judge here checks what holds for one account whatever
//! the interleaving:
//! - a query never sees less than every deposit acknowledged before it started, minus every
//!   withdrawal that could have happened before it ended; nor more than the mirror image
//!   (so a stale read after an acknowledged deposit is caught);
//! - no balance seen is negative;
//! - the final balance is the initial one plus acknowledged deposits minus acknowledged
//!   withdrawals, give or take the calls of unknown outcome.
//!
//! A full per-account linearizability checker (`crate::check`, another branch of work) can take
//! these histories as they are.

use std::fmt;

/// What a customer asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Deposit(u64),
    Withdraw(u64),
    Query,
}

/// What happened to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Invoke,
    /// Done; carries the balance the branch replied with.
    Ok(i64),
    /// Certainly not applied (refused by the ledger, or a read that failed).
    Fail,
    /// Unknown outcome.
    Info,
}

/// One entry of a history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    pub at_ms: u64,
    pub client: usize,
    pub branch: u64,
    pub op: Op,
    pub kind: Kind,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>6}ms client{} @branch{} {:?} {:?}",
            self.at_ms, self.client, self.branch, self.op, self.kind
        )
    }
}

/// A call: its invoke's index in the history and its completion, if it completed.
struct Call {
    op: Op,
    invoked: usize,
    completed: Option<(usize, Kind)>,
}

fn calls(history: &[Event]) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    let mut open: std::collections::BTreeMap<usize, usize> = std::collections::BTreeMap::new();
    for (index, event) in history.iter().enumerate() {
        match event.kind {
            Kind::Invoke => {
                open.insert(event.client, calls.len());
                calls.push(Call {
                    op: event.op,
                    invoked: index,
                    completed: None,
                });
            }
            kind => {
                if let Some(call) = open.remove(&event.client) {
                    calls[call].completed = Some((index, kind));
                }
            }
        }
    }
    calls
}

/// Every violation of the rules above in `history`, given the account's `initial` balance and
/// its `final_balance` on the converged branches.
pub fn judge(history: &[Event], initial: i64, final_balance: i64) -> Vec<String> {
    let calls = calls(history);
    let mut violations = Vec::new();
    let amount = |op: Op| match op {
        Op::Deposit(a) | Op::Withdraw(a) => i64::try_from(a).unwrap_or(i64::MAX),
        Op::Query => 0,
    };
    let acknowledged = |call: &Call| matches!(call.completed, Some((_, Kind::Ok(_))));
    let maybe_applied = |call: &Call| !matches!(call.completed, Some((_, Kind::Fail)));
    let completed_before = |call: &Call, index: usize| matches!(call.completed, Some((done, Kind::Ok(_))) if done < index);

    for event in history {
        if let Kind::Ok(balance) = event.kind {
            if balance < 0 {
                violations.push(format!("negative balance seen: {event}"));
            }
        }
    }

    for query in calls.iter().filter(|c| c.op == Op::Query) {
        let Some((done, Kind::Ok(seen))) = query.completed else {
            continue;
        };
        let (mut lower, mut upper) = (initial, initial);
        for call in &calls {
            match call.op {
                Op::Deposit(_) => {
                    if completed_before(call, query.invoked) {
                        lower += amount(call.op);
                    }
                    if call.invoked < done && maybe_applied(call) {
                        upper += amount(call.op);
                    }
                }
                Op::Withdraw(_) => {
                    if call.invoked < done && maybe_applied(call) {
                        lower -= amount(call.op);
                    }
                    if completed_before(call, query.invoked) {
                        upper -= amount(call.op);
                    }
                }
                Op::Query => {}
            }
        }
        if seen < lower || seen > upper {
            violations.push(format!(
                "query {} saw {seen}, outside [{lower}, {upper}] allowed by the calls before and during it",
                history[query.invoked]
            ));
        }
    }

    let (mut base, mut unknown_deposits, mut unknown_withdrawals) = (initial, 0i64, 0i64);
    for call in &calls {
        let (sure, unsure) = (
            acknowledged(call),
            maybe_applied(call) && !acknowledged(call),
        );
        match call.op {
            Op::Deposit(a) if sure => base += amount(Op::Deposit(a)),
            Op::Deposit(a) if unsure => unknown_deposits += amount(Op::Deposit(a)),
            Op::Withdraw(a) if sure => base -= amount(Op::Withdraw(a)),
            Op::Withdraw(a) if unsure => unknown_withdrawals += amount(Op::Withdraw(a)),
            _ => {}
        }
    }
    let (lower, upper) = (base - unknown_withdrawals, base + unknown_deposits);
    if final_balance < lower || final_balance > upper {
        violations.push(format!(
            "final balance {final_balance} outside [{lower}, {upper}]: initial {initial}, acknowledged net {}, unknown deposits {unknown_deposits}, unknown withdrawals {unknown_withdrawals}",
            base - initial
        ));
    }
    if final_balance < 0 {
        violations.push(format!("final balance {final_balance} is negative"));
    }
    violations
}

/// The same history in [`crate::check`]'s terms, for the full checker: one account (the
/// original API's), opened at `initial`; `finals` are the converged branches' balances. A
/// customer whose call had an unknown outcome continues as a new process, as in Jepsen.
pub fn to_check_history(
    history: &[Event],
    initial: i64,
    finals: &[(u64, i64)],
) -> crate::check::History {
    use crate::check::{Event as CheckEvent, Op as CheckOp, OpResult};
    use crate::ledger::ORIGINAL_ACCOUNT;
    let account = ORIGINAL_ACCOUNT;
    let mut events = vec![CheckEvent::Init {
        balances: [(account, initial)].into(),
        min_balances: Default::default(),
    }];
    let mut incarnation: std::collections::BTreeMap<usize, u64> = Default::default();
    let clients = history.iter().map(|e| e.client).max().unwrap_or(0) as u64 + 1;
    for event in history {
        let time_us = event.at_ms.saturating_mul(1_000);
        let generation = incarnation.entry(event.client).or_default();
        let process = event.client as u64 + clients * *generation;
        let amount = |a: u64| i64::try_from(a).unwrap_or(i64::MAX);
        events.push(match event.kind {
            Kind::Invoke => CheckEvent::Invoke {
                process,
                time_us,
                op: match event.op {
                    Op::Deposit(a) => CheckOp::Deposit {
                        account,
                        amount: amount(a),
                    },
                    Op::Withdraw(a) => CheckOp::Withdraw {
                        account,
                        amount: amount(a),
                    },
                    Op::Query => CheckOp::Read {
                        accounts: vec![account],
                    },
                },
            },
            Kind::Ok(balance) => CheckEvent::Ok {
                process,
                time_us,
                result: match event.op {
                    Op::Query => OpResult::read([(account, balance)].into()),
                    _ => OpResult::balance(balance),
                },
            },
            Kind::Fail => CheckEvent::Fail {
                process,
                time_us,
                observation: None,
                error: None,
            },
            Kind::Info => {
                *generation += 1;
                CheckEvent::Info {
                    process,
                    time_us,
                    error: None,
                }
            }
        });
    }
    for &(branch, balance) in finals {
        events.push(CheckEvent::Final {
            branch,
            balances: [(account, balance)].into(),
            digest: None,
        });
    }
    crate::check::History::from_events(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(client: usize, op: Op, kind: Kind) -> Event {
        Event {
            at_ms: 0,
            client,
            branch: 1,
            op,
            kind,
        }
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_deposit_is_caught() {
        let history = vec![
            event(0, Op::Deposit(10), Kind::Invoke),
            event(0, Op::Deposit(10), Kind::Ok(110)),
            event(1, Op::Query, Kind::Invoke),
            event(1, Op::Query, Kind::Ok(100)),
        ];
        assert_eq!(judge(&history, 100, 110).len(), 1);
    }

    #[test]
    fn concurrent_and_unknown_calls_may_go_either_way() {
        let history = vec![
            event(0, Op::Deposit(10), Kind::Invoke),
            event(1, Op::Query, Kind::Invoke),
            event(1, Op::Query, Kind::Ok(100)),
            event(0, Op::Deposit(10), Kind::Info),
            event(2, Op::Withdraw(5), Kind::Invoke),
            event(2, Op::Withdraw(5), Kind::Ok(105)),
        ];
        assert!(judge(&history, 100, 105).is_empty());
        assert!(judge(&history, 100, 95).is_empty());
        assert_eq!(judge(&history, 100, 90).len(), 1);
    }
}
