//! Check 1, well-formedness: pairs every invoke with its completion into an `Operation`,
//! refusing a history whose events do not fit together (a completion without an invoke, a
//! second invoke in flight, a completion before its invoke, a result that does not fit its
//! operation). The `Recorded` history it returns is what every later check reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ledger::AccountId;

use super::history::{BranchId, History, HistoryEvent, Observation, Op, OpResult, ProcessId};
use super::violation::{DescribeOp, OpRef, Subject, Violation};

/// How an operation completed.
#[derive(Clone, Debug)]
pub(super) enum Outcome {
    Ok(OpResult),
    Fail(Option<Observation>),
    Info,
}

/// An invoke paired with its completion.
#[derive(Clone, Debug)]
pub(super) struct Operation {
    process: ProcessId,
    pub(super) op: Op,
    line: usize,
    pub(super) invoke_us: u64,
    /// `Info` both for an `info` completion and for none (then `complete_us` is `None`).
    pub(super) outcome: Outcome,
    pub(super) complete_us: Option<u64>,
}

impl Operation {
    pub(super) fn subject(&self) -> Subject {
        let outcome = match (&self.outcome, self.complete_us) {
            (Outcome::Ok(_), _) => "ok",
            (Outcome::Fail(_), _) => "fail",
            (Outcome::Info, Some(_)) => "info",
            (Outcome::Info, None) => "no completion",
        };
        Subject::Op(Box::new(OpRef {
            process: self.process,
            op: self.op.clone(),
            line: self.line,
            invoke_us: self.invoke_us,
            outcome,
            complete_us: self.complete_us,
        }))
    }

    /// When it returned, if it is known to have happened (or not) by then.
    pub(super) fn return_us(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Info => None,
            Outcome::Ok(_) | Outcome::Fail(_) => self.complete_us,
        }
    }
}

/// A branch's state after the workload.
pub(super) struct FinalState {
    pub(super) branch: BranchId,
    pub(super) balances: BTreeMap<AccountId, i64>,
    pub(super) digest: Option<String>,
}

/// A well-formed history, ready for the other checks.
pub(super) struct Recorded {
    pub(super) init: BTreeMap<AccountId, i64>,
    init_min: BTreeMap<AccountId, i64>,
    pub(super) operations: Vec<Operation>,
    pub(super) finals: Vec<FinalState>,
    /// After every time in the history: when final states are read.
    pub(super) end_us: u64,
}

impl Recorded {
    pub(super) fn accounts(&self) -> BTreeSet<AccountId> {
        let mut accounts: BTreeSet<AccountId> = self.init.keys().copied().collect();
        for operation in &self.operations {
            match &operation.op {
                Op::Open { account, .. }
                | Op::Deposit { account, .. }
                | Op::Withdraw { account, .. } => {
                    accounts.insert(*account);
                }
                Op::Transfer { from, to, .. } => {
                    accounts.insert(*from);
                    accounts.insert(*to);
                }
                Op::Read { accounts: read } => accounts.extend(read),
            }
        }
        for state in &self.finals {
            accounts.extend(state.balances.keys());
        }
        accounts
    }

    /// Each account's minimum: from `init`, else from its first open that did not fail.
    pub(super) fn minimums(&self) -> BTreeMap<AccountId, i64> {
        let mut minimums: BTreeMap<AccountId, i64> =
            self.init.keys().map(|account| (*account, 0)).collect();
        minimums.extend(&self.init_min);
        for operation in &self.operations {
            if let (
                Op::Open {
                    account,
                    balance_min,
                    ..
                },
                Outcome::Ok(_) | Outcome::Info,
            ) = (&operation.op, &operation.outcome)
            {
                minimums.entry(*account).or_insert(*balance_min);
            }
        }
        minimums
    }
}

pub(super) fn pair_operations(history: &History) -> Result<Recorded, Violation> {
    let mut recorded = Recorded {
        init: BTreeMap::new(),
        init_min: BTreeMap::new(),
        operations: Vec::new(),
        finals: Vec::new(),
        end_us: 0,
    };
    let mut in_flight: HashMap<ProcessId, usize> = HashMap::new();
    let mut seen_init_or_invoke = false;
    for (line, event) in &history.events {
        let line = *line;
        let (process, time_us, outcome) = match event {
            HistoryEvent::Init {
                balances,
                balances_min,
            } => {
                if seen_init_or_invoke {
                    return Err(ill_formed(
                        line,
                        "init must come once, before every invoke",
                        None,
                    ));
                }
                seen_init_or_invoke = true;
                recorded.init = balances.clone();
                recorded.init_min = balances_min.clone();
                continue;
            }
            HistoryEvent::Final {
                branch,
                balances,
                digest,
            } => {
                recorded.finals.push(FinalState {
                    branch: *branch,
                    balances: balances.clone(),
                    digest: digest.clone(),
                });
                continue;
            }
            HistoryEvent::Invoke {
                process,
                time_us,
                op,
            } => {
                seen_init_or_invoke = true;
                if let Some(&first) = in_flight.get(process) {
                    return Err(Violation::DoubleInvoke {
                        process: *process,
                        first_line: recorded.operations[first].line,
                        second_line: line,
                    });
                }
                if let Op::Transfer { from, to, .. } = op {
                    if from == to {
                        return Err(ill_formed(
                            line,
                            format!("a transfer from account {from} to itself"),
                            Some(line),
                        ));
                    }
                }
                in_flight.insert(*process, recorded.operations.len());
                recorded.operations.push(Operation {
                    process: *process,
                    op: op.clone(),
                    line,
                    invoke_us: *time_us,
                    outcome: Outcome::Info,
                    complete_us: None,
                });
                recorded.end_us = recorded.end_us.max(*time_us);
                continue;
            }
            HistoryEvent::Ok {
                process,
                time_us,
                result,
            } => (process, time_us, Outcome::Ok(result.clone())),
            HistoryEvent::Fail {
                process,
                time_us,
                observation,
                ..
            } => (process, time_us, Outcome::Fail(observation.clone())),
            HistoryEvent::Info {
                process, time_us, ..
            } => (process, time_us, Outcome::Info),
        };
        let Some(index) = in_flight.remove(process) else {
            return Err(Violation::CompletionWithoutInvoke {
                line,
                process: *process,
                time_us: *time_us,
            });
        };
        complete(&mut recorded.operations[index], line, *time_us, outcome)?;
        recorded.end_us = recorded.end_us.max(*time_us);
    }
    recorded.end_us = recorded.end_us.saturating_add(1);
    Ok(recorded)
}

/// Completes `operation` with the completion at `line`, if it fits.
fn complete(
    operation: &mut Operation,
    line: usize,
    time_us: u64,
    outcome: Outcome,
) -> Result<(), Violation> {
    let process = operation.process;
    if time_us < operation.invoke_us {
        return Err(ill_formed(
            line,
            format!(
                "process {process} completes at {time_us} µs the operation it invoked at {} µs (line {})",
                operation.invoke_us, operation.line
            ),
            Some(operation.line),
        ));
    }
    if let Err(reason) = fits(&operation.op, &outcome) {
        return Err(ill_formed(
            line,
            format!(
                "the completion of process {process}'s {}: {reason}",
                DescribeOp(&operation.op)
            ),
            Some(operation.line),
        ));
    }
    operation.outcome = outcome;
    operation.complete_us = Some(time_us);
    Ok(())
}

/// An ill-formed history at `line`, about the operation invoked at line `operation` if any.
fn ill_formed(line: usize, reason: impl Into<String>, operation: Option<usize>) -> Violation {
    Violation::IllFormed {
        line,
        reason: reason.into(),
        operation,
    }
}

/// Whether a completion's result or observation fits its operation.
fn fits(op: &Op, outcome: &Outcome) -> Result<(), String> {
    match (op, outcome) {
        (_, Outcome::Info) | (_, Outcome::Fail(None)) => Ok(()),
        (Op::Withdraw { .. } | Op::Transfer { .. }, Outcome::Fail(Some(_))) => Ok(()),
        (_, Outcome::Fail(Some(_))) => {
            Err("only a withdrawal or a transfer can fail for insufficient funds".to_string())
        }
        (Op::Open { .. } | Op::Deposit { .. } | Op::Withdraw { .. }, Outcome::Ok(result)) => {
            if result.from_balance.is_some()
                || result.to_balance.is_some()
                || result.balances.is_some()
            {
                Err("its result may only carry \"balance\"".to_string())
            } else {
                Ok(())
            }
        }
        (Op::Transfer { .. }, Outcome::Ok(result)) => {
            if result.balance.is_some() || result.balances.is_some() {
                Err("its result may only carry \"from_balance\" and \"to_balance\"".to_string())
            } else {
                Ok(())
            }
        }
        (Op::Read { accounts }, Outcome::Ok(result)) => {
            if result.balance.is_some()
                || result.from_balance.is_some()
                || result.to_balance.is_some()
            {
                return Err("its result may only carry \"balances\"".to_string());
            }
            let Some(balances) = &result.balances else {
                return Err("an ok read must carry \"balances\"".to_string());
            };
            match balances.keys().find(|account| !accounts.contains(account)) {
                Some(account) => Err(format!(
                    "it returns account {account}, which it did not read"
                )),
                None => Ok(()),
            }
        }
    }
}
