//! The simple judge of the original account: the calls of the original customers
//! (`Branch.MsgDelivery` deposits, withdrawals and queries of the original account), read from
//! the run's history in [`crate::check`]'s format.
//!
//! Every call is an `invoke` followed by `ok`, `fail` (certainly had no effect) or `info`
//! (unknown outcome: a timeout or a lost connection), in the order they happened in simulated
//! time. The judge checks what holds for one account whatever the interleaving:
//! - a query never sees less than every deposit acknowledged before it started, minus every
//!   withdrawal that could have happened before it ended; nor more than the mirror image
//!   (so a stale read after an acknowledged deposit is caught);
//! - no balance seen is negative;
//! - the final balance is the initial one plus acknowledged deposits minus acknowledged
//!   withdrawals, give or take the calls of unknown outcome.
//!
//! [`crate::check`] judges the same calls too, with every other one of the run; this judge is
//! simpler, needs no search, and says plainly which bound a query broke.

use std::collections::BTreeMap;

use crate::check::{HistoryEvent, Op};
use crate::ledger::AccountId;

/// What a customer asked of the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Deposit(i64),
    Withdraw(i64),
    Query,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Done; carries the balance the branch replied with.
    Ok(i64),
    /// Certainly not applied (refused by the ledger, or a read that failed).
    Fail,
    /// Unknown outcome.
    Info,
}

/// A call: what it asked, its invoke's index in the history, and its completion (with the
/// completion's index), if it completed.
struct Call {
    asked: Asked,
    invoked: usize,
    completed: Option<(usize, Ended)>,
}

/// What `op` asks of `account` alone; `None`: another account's operation, or a read of more
/// than it (a bank customer's: the original customers read the one account).
fn asked(op: &Op, account: AccountId) -> Option<Asked> {
    match *op {
        Op::Deposit { account: a, amount } if a == account => Some(Asked::Deposit(amount)),
        Op::Withdraw { account: a, amount } if a == account => Some(Asked::Withdraw(amount)),
        Op::Read { ref accounts } if accounts[..] == [account] => Some(Asked::Query),
        _ => None,
    }
}

/// The calls on `account` alone in `history`, in the order they were invoked.
fn calls(history: &[HistoryEvent], account: AccountId) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    // The call each process has in flight, by its index in `calls`.
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    for (index, event) in history.iter().enumerate() {
        let (process, ended) = match event {
            HistoryEvent::Invoke { process, op, .. } => {
                if let Some(asked) = asked(op, account) {
                    open.insert(*process, calls.len());
                    calls.push(Call {
                        asked,
                        invoked: index,
                        completed: None,
                    });
                }
                continue;
            }
            HistoryEvent::Ok {
                process, result, ..
            } => (process, result),
            HistoryEvent::Fail { process, .. } => {
                if let Some(call) = open.remove(process) {
                    calls[call].completed = Some((index, Ended::Fail));
                }
                continue;
            }
            HistoryEvent::Info { process, .. } => {
                if let Some(call) = open.remove(process) {
                    calls[call].completed = Some((index, Ended::Info));
                }
                continue;
            }
            HistoryEvent::Init { .. } | HistoryEvent::Final { .. } => continue,
        };
        let Some(call) = open.remove(process) else {
            continue;
        };
        let balance = match calls[call].asked {
            Asked::Query => ended
                .balances
                .as_ref()
                .and_then(|b| b.get(&account).copied()),
            Asked::Deposit(_) | Asked::Withdraw(_) => ended.balance,
        };
        // An `ok` without the balance it saw says nothing about the account: as unknown.
        calls[call].completed = Some((index, balance.map_or(Ended::Info, Ended::Ok)));
    }
    calls
}

/// How many calls on `account` alone `history` holds.
pub fn count(history: &[HistoryEvent], account: AccountId) -> u64 {
    calls(history, account).len() as u64
}

/// A call for a violation's text: what it asked, by which process, when.
fn describe(history: &[HistoryEvent], index: usize) -> String {
    match &history[index] {
        HistoryEvent::Invoke {
            process,
            time_us,
            op,
        } => format!("{op:?} by process {process} at {time_us}us"),
        other => format!("{other:?}"),
    }
}

/// Every violation of the rules above by the calls on `account` alone in `history`, given the
/// account's `initial` balance and its `final_balance` on the converged branches.
pub fn judge(
    history: &[HistoryEvent],
    account: AccountId,
    initial: i64,
    final_balance: i64,
) -> Vec<String> {
    let calls = calls(history, account);
    let mut violations = Vec::new();
    let amount = |asked: Asked| match asked {
        Asked::Deposit(a) | Asked::Withdraw(a) => a,
        Asked::Query => 0,
    };
    let acknowledged = |call: &Call| matches!(call.completed, Some((_, Ended::Ok(_))));
    let maybe_applied = |call: &Call| !matches!(call.completed, Some((_, Ended::Fail)));
    let completed_before = |call: &Call, index: usize| matches!(call.completed, Some((done, Ended::Ok(_))) if done < index);

    for call in &calls {
        if let Some((_, Ended::Ok(balance))) = call.completed {
            if balance < 0 {
                violations.push(format!(
                    "negative balance {balance} seen: {}",
                    describe(history, call.invoked)
                ));
            }
        }
    }

    for query in calls.iter().filter(|c| c.asked == Asked::Query) {
        let Some((done, Ended::Ok(seen))) = query.completed else {
            continue;
        };
        let (mut lower, mut upper) = (initial, initial);
        for call in &calls {
            match call.asked {
                Asked::Deposit(_) => {
                    if completed_before(call, query.invoked) {
                        lower += amount(call.asked);
                    }
                    if call.invoked < done && maybe_applied(call) {
                        upper += amount(call.asked);
                    }
                }
                Asked::Withdraw(_) => {
                    if call.invoked < done && maybe_applied(call) {
                        lower -= amount(call.asked);
                    }
                    if completed_before(call, query.invoked) {
                        upper -= amount(call.asked);
                    }
                }
                Asked::Query => {}
            }
        }
        if seen < lower || seen > upper {
            violations.push(format!(
                "query {} saw {seen}, outside [{lower}, {upper}] allowed by the calls before and during it",
                describe(history, query.invoked)
            ));
        }
    }

    let (mut base, mut unknown_deposits, mut unknown_withdrawals) = (initial, 0i64, 0i64);
    for call in &calls {
        let (sure, unsure) = (
            acknowledged(call),
            maybe_applied(call) && !acknowledged(call),
        );
        match call.asked {
            Asked::Deposit(a) if sure => base += a,
            Asked::Deposit(a) if unsure => unknown_deposits += a,
            Asked::Withdraw(a) if sure => base -= a,
            Asked::Withdraw(a) if unsure => unknown_withdrawals += a,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::OpResult;

    const ACCOUNT: AccountId = 7;

    fn invoke(process: u64, op: Op) -> HistoryEvent {
        HistoryEvent::Invoke {
            process,
            time_us: 0,
            op,
        }
    }

    fn ok(process: u64, result: OpResult) -> HistoryEvent {
        HistoryEvent::Ok {
            process,
            time_us: 0,
            result,
        }
    }

    fn deposit(amount: i64) -> Op {
        Op::Deposit {
            account: ACCOUNT,
            amount,
        }
    }

    fn query() -> Op {
        Op::Read {
            accounts: vec![ACCOUNT],
        }
    }

    fn seen(balance: i64) -> OpResult {
        OpResult::read([(ACCOUNT, balance)].into())
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_deposit_is_caught() {
        let history = vec![
            invoke(0, deposit(10)),
            ok(0, OpResult::balance(110)),
            invoke(1, query()),
            ok(1, seen(100)),
        ];
        assert_eq!(judge(&history, ACCOUNT, 100, 110).len(), 1);
        assert_eq!(count(&history, ACCOUNT), 2);
    }

    #[test]
    fn concurrent_and_unknown_calls_may_go_either_way() {
        let history = vec![
            invoke(0, deposit(10)),
            invoke(1, query()),
            ok(1, seen(100)),
            HistoryEvent::Info {
                process: 0,
                time_us: 0,
                error: None,
            },
            invoke(
                2,
                Op::Withdraw {
                    account: ACCOUNT,
                    amount: 5,
                },
            ),
            ok(2, OpResult::balance(105)),
        ];
        assert!(judge(&history, ACCOUNT, 100, 105).is_empty());
        assert!(judge(&history, ACCOUNT, 100, 95).is_empty());
        assert_eq!(judge(&history, ACCOUNT, 100, 90).len(), 1);
    }

    #[test]
    fn other_accounts_and_reads_of_several_are_not_its_calls() {
        let history = vec![
            invoke(
                0,
                Op::Deposit {
                    account: ACCOUNT + 1,
                    amount: 10,
                },
            ),
            ok(0, OpResult::balance(10)),
            invoke(
                1,
                Op::Read {
                    accounts: vec![ACCOUNT, ACCOUNT + 1],
                },
            ),
            ok(1, OpResult::read([(ACCOUNT, -5), (ACCOUNT + 1, 10)].into())),
        ];
        assert!(judge(&history, ACCOUNT, 100, 100).is_empty());
        assert_eq!(count(&history, ACCOUNT), 0);
    }
}
