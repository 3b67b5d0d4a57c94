//! Check 5, conservation of money: every ok read of all accounts and every final state must
//! sum to the money that can be in the bank at that time, bounded from the deposits,
//! withdrawals and opens that surely or maybe happened before it (see the module docs). This
//! catches a read of several accounts that is not atomic, which per-account linearizability
//! cannot see.

use std::collections::{BTreeMap, BTreeSet};

use crate::ledger::AccountId;

use super::history::Op;
use super::pairing::{Outcome, Recorded};
use super::violation::{Subject, Violation};

/// Checks every ok read of all accounts and every final state against the bounds on the total
/// (see the module docs). Returns (totals checked, of which exact).
pub(super) fn check_conservation(recorded: &Recorded) -> Result<(usize, usize), Violation> {
    let mut all_accounts: BTreeSet<AccountId> = recorded.init.keys().copied().collect();
    // Money each operation adds to the total if it happens: (call, return if ok, amount).
    let mut changes: Vec<(u64, Option<u64>, i128)> = Vec::new();
    for operation in &recorded.operations {
        if matches!(operation.outcome, Outcome::Fail(_)) {
            continue;
        }
        let amount = match &operation.op {
            Op::Open {
                account, balance, ..
            } => {
                all_accounts.insert(*account);
                i128::from(*balance)
            }
            Op::Deposit { amount, .. } => i128::from(*amount),
            Op::Withdraw { amount, .. } => -i128::from(*amount),
            Op::Transfer { .. } | Op::Read { .. } => continue,
        };
        changes.push((operation.invoke_us, operation.return_us(), amount));
    }
    let bounds = TotalBounds::new(
        recorded.init.values().map(|b| i128::from(*b)).sum(),
        &changes,
    );

    let mut checked = 0;
    let mut exact = 0;
    for operation in &recorded.operations {
        let (Op::Read { accounts }, Outcome::Ok(result), Some(return_us)) =
            (&operation.op, &operation.outcome, operation.complete_us)
        else {
            continue;
        };
        if !all_accounts
            .iter()
            .all(|account| accounts.contains(account))
        {
            continue;
        }
        let total: i128 = result
            .balances
            .iter()
            .flatten()
            .map(|(_, b)| i128::from(*b))
            .sum();
        let (expected_min, expected_max) = bounds.between(operation.invoke_us, return_us);
        checked += 1;
        if expected_min == expected_max {
            exact += 1;
        }
        if total < expected_min || total > expected_max {
            return Err(Violation::NotConserved {
                seen_in: operation.subject(),
                accounts: result.balances.as_ref().map_or(0, BTreeMap::len),
                total,
                expected_min,
                expected_max,
            });
        }
    }
    for state in &recorded.finals {
        let total: i128 = state.balances.values().map(|b| i128::from(*b)).sum();
        let (expected_min, expected_max) = bounds.between(recorded.end_us, recorded.end_us);
        checked += 1;
        if total < expected_min || total > expected_max {
            return Err(Violation::NotConserved {
                seen_in: Subject::Final {
                    branch: state.branch,
                },
                accounts: state.balances.len(),
                total,
                expected_min,
                expected_max,
            });
        }
    }
    Ok((checked, exact))
}

/// Prefix sums to bound the total money at a read in O(log n).
struct TotalBounds {
    initial: i128,
    /// Ok additions by return time, with running sums; likewise removals.
    added_done: Vec<(u64, i128)>,
    removed_done: Vec<(u64, i128)>,
    /// All additions (ok or indeterminate) by call time; likewise removals.
    added_started: Vec<(u64, i128)>,
    removed_started: Vec<(u64, i128)>,
}

impl TotalBounds {
    fn new(initial: i128, changes: &[(u64, Option<u64>, i128)]) -> Self {
        let running = |mut points: Vec<(u64, i128)>| {
            points.sort_unstable();
            let mut sum = 0i128;
            for point in &mut points {
                sum += point.1;
                point.1 = sum;
            }
            points
        };
        let select = |positive: bool, done: bool| {
            running(
                changes
                    .iter()
                    .filter(|(_, _, amount)| (*amount > 0) == positive && *amount != 0)
                    .filter_map(|&(call, ret, amount)| {
                        if done {
                            ret.map(|ret| (ret, amount))
                        } else {
                            Some((call, amount))
                        }
                    })
                    .collect(),
            )
        };
        TotalBounds {
            initial,
            added_done: select(true, true),
            removed_done: select(false, true),
            added_started: select(true, false),
            removed_started: select(false, false),
        }
    }

    /// (min, max) total for a read invoked at `call_us` that returned at `return_us`: what
    /// completed strictly before the call surely counts; what started by the return may.
    fn between(&self, call_us: u64, return_us: u64) -> (i128, i128) {
        let before = |points: &[(u64, i128)], time: u64, inclusive: bool| {
            let n = points.partition_point(|(t, _)| if inclusive { *t <= time } else { *t < time });
            if n == 0 {
                0
            } else {
                points[n - 1].1
            }
        };
        let added_surely = before(&self.added_done, call_us, false);
        let removed_surely = before(&self.removed_done, call_us, false);
        let added_maybe = before(&self.added_started, return_us, true);
        let removed_maybe = before(&self.removed_started, return_us, true);
        (
            self.initial + added_surely + removed_maybe,
            self.initial + added_maybe + removed_surely,
        )
    }
}
