//! Check 4, linearizability per account: splits every operation (and the first final state)
//! into per-account sub-operations and runs the search (`search.rs`) on each account, turning a
//! refutation into a [`Violation::NotLinearizable`] that names the operation no order explains.

use std::collections::BTreeMap;

use crate::ledger::AccountId;

use super::history::{Observation, Op};
use super::model::{AccountState, Origin, Step, SubOp};
use super::pairing::{Outcome, Recorded};
use super::search::{linearize, Unexplained};
use super::violation::{Subject, Violation};
use super::Limits;

/// Splits every operation (and the first final state) into per-account steps.
fn sub_ops(recorded: &Recorded) -> BTreeMap<AccountId, Vec<SubOp>> {
    let mut per_account: BTreeMap<AccountId, Vec<SubOp>> = BTreeMap::new();
    for (index, operation) in recorded.operations.iter().enumerate() {
        let mut push = |account: AccountId, step: Step| {
            per_account.entry(account).or_default().push(SubOp {
                origin: Origin::Op(index),
                call_us: operation.invoke_us,
                return_us: operation.return_us(),
                step,
            });
        };
        let ok = match &operation.outcome {
            Outcome::Ok(result) => Some(result),
            Outcome::Info => None,
            Outcome::Fail(observation) => {
                if let (
                    Op::Withdraw {
                        account: from,
                        amount,
                    }
                    | Op::Transfer { from, amount, .. },
                    Some(Observation::InsufficientFunds { balance }),
                ) = (&operation.op, observation)
                {
                    push(
                        *from,
                        Step::Refused {
                            amount: *amount,
                            observed: *balance,
                        },
                    );
                }
                continue;
            }
        };
        match &operation.op {
            Op::Open {
                account,
                balance,
                balance_min,
            } => push(
                *account,
                Step::Open {
                    balance: *balance,
                    balance_min: *balance_min,
                    observed: ok.and_then(|r| r.balance),
                },
            ),
            Op::Deposit { account, amount } => push(
                *account,
                Step::Change {
                    delta: *amount,
                    floor: false,
                    observed: ok.and_then(|r| r.balance),
                },
            ),
            Op::Withdraw { account, amount } => push(
                *account,
                Step::Change {
                    delta: amount.saturating_neg(),
                    floor: true,
                    observed: ok.and_then(|r| r.balance),
                },
            ),
            Op::Transfer { from, to, amount } => {
                push(
                    *from,
                    Step::Change {
                        delta: amount.saturating_neg(),
                        floor: true,
                        observed: ok.and_then(|r| r.from_balance),
                    },
                );
                push(
                    *to,
                    Step::Change {
                        delta: *amount,
                        floor: false,
                        observed: ok.and_then(|r| r.to_balance),
                    },
                );
            }
            Op::Read { accounts } => {
                // An indeterminate read says nothing.
                if let Some(result) = ok {
                    for account in accounts {
                        let observed = result.balances.as_ref().and_then(|b| b.get(account));
                        push(
                            *account,
                            Step::Read {
                                observed: observed.copied(),
                            },
                        );
                    }
                }
            }
        }
    }
    // The branches agree (checked before): the first final state is a read of every account
    // after everything else.
    if let Some(state) = recorded.finals.first() {
        for account in recorded.accounts() {
            per_account.entry(account).or_default().push(SubOp {
                origin: Origin::Final(0),
                call_us: recorded.end_us,
                return_us: Some(recorded.end_us),
                step: Step::Read {
                    observed: state.balances.get(&account).copied(),
                },
            });
        }
    }
    per_account
}

pub(super) fn check_linearizable(recorded: &Recorded, limits: &Limits) -> Result<u64, Violation> {
    let minimums = recorded.minimums();
    let mut steps_total = 0u64;
    for (account, ops) in sub_ops(recorded) {
        let initial = recorded.init.get(&account).map(|&balance| AccountState {
            balance,
            balance_min: minimums.get(&account).copied().unwrap_or(0),
        });
        let subject = |origin: Origin| match origin {
            Origin::Op(index) => recorded.operations[index].subject(),
            Origin::Final(index) => Subject::Final {
                branch: recorded.finals[index].branch,
            },
        };
        match linearize(initial, &ops, limits.search_steps_max) {
            Ok(steps) => steps_total = steps_total.saturating_add(steps),
            Err(Unexplained::Inconclusive { steps }) => {
                return Err(Violation::Inconclusive {
                    account,
                    search_steps: steps,
                })
            }
            Err(Unexplained::Refuted(deepest)) => {
                return Err(Violation::NotLinearizable {
                    account,
                    subject: subject(ops[deepest.blocked].origin),
                    claim: ops[deepest.blocked].step.claim(),
                    prefix_ops: deepest.depth,
                    last: deepest.last.map(|last| subject(ops[last].origin)),
                    state: deepest.state.map(|s| (s.balance, s.balance_min)),
                })
            }
        }
    }
    Ok(steps_total)
}
