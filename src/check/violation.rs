//! What the checker reports: [`Violation`], the first way a history is wrong, and the
//! [`Subject`] / [`OpRef`] that name where a balance was seen, with the wording of every
//! message; and [`Blame`], the operations and final states a violation names, as data. Every
//! check builds its violations from here, so the messages live in one place.

use std::fmt;

use crate::ledger::AccountId;

use super::history::{BranchId, Op, ProcessId};

/// An operation as the history recorded it, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRef {
    pub process: ProcessId,
    pub op: Op,
    pub line: usize,
    pub invoke_us: u64,
    /// `"ok"`, `"fail"`, `"info"` or `"no completion"`.
    pub outcome: &'static str,
    pub complete_us: Option<u64>,
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "process {}'s {} (line {}, invoked at {} µs, ",
            self.process,
            DescribeOp(&self.op),
            self.line,
            self.invoke_us
        )?;
        match self.complete_us {
            Some(time) => write!(f, "{} at {} µs)", self.outcome, time),
            None => write!(f, "{})", self.outcome),
        }
    }
}

/// An operation in words, for messages.
pub(super) struct DescribeOp<'a>(pub(super) &'a Op);

impl fmt::Display for DescribeOp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Op::Open {
                account,
                balance,
                balance_min,
            } => write!(
                f,
                "open of account {account} with balance {balance} (minimum {balance_min})"
            ),
            Op::Deposit { account, amount } => {
                write!(f, "deposit of {amount} into account {account}")
            }
            Op::Withdraw { account, amount } => {
                write!(f, "withdrawal of {amount} from account {account}")
            }
            Op::Transfer { from, to, amount } => {
                write!(
                    f,
                    "transfer of {amount} from account {from} to account {to}"
                )
            }
            Op::Read { accounts } => write!(f, "read of accounts {accounts:?}"),
        }
    }
}

/// Where a balance was seen: an operation or a branch's final state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Op(Box<OpRef>),
    Final { branch: BranchId },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Op(op) => write!(f, "{op}"),
            Subject::Final { branch } => write!(f, "branch {branch}'s final state"),
        }
    }
}

/// The first way a history is wrong, in plain words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("line {line}: process {process} completes an operation at {time_us} µs but has none in flight")]
    CompletionWithoutInvoke {
        line: usize,
        process: ProcessId,
        time_us: u64,
    },
    #[error("line {second_line}: process {process} invokes an operation while its operation from line {first_line} is still in flight")]
    DoubleInvoke {
        process: ProcessId,
        first_line: usize,
        second_line: usize,
    },
    #[error("line {line}: {reason}")]
    IllFormed {
        line: usize,
        reason: String,
        /// The line of the invoke of the operation it is about, if it is about one.
        operation: Option<usize>,
    },
    #[error(
        "account {account}'s balance {balance} is below its minimum {balance_min}, in {seen_in}"
    )]
    BelowMinimum {
        account: AccountId,
        balance: i64,
        balance_min: i64,
        seen_in: Subject,
    },
    #[error("branches {branch} and {other_branch} diverged: account {account} is {} on branch {branch} and {} on branch {other_branch}", show_balance(*.balance), show_balance(*.other_balance))]
    Divergence {
        branch: BranchId,
        other_branch: BranchId,
        account: AccountId,
        balance: Option<i64>,
        other_balance: Option<i64>,
    },
    #[error("branches {branch} and {other_branch} have the same balances but different digests ({digest:?} and {other_digest:?})")]
    DigestMismatch {
        branch: BranchId,
        other_branch: BranchId,
        digest: Option<String>,
        other_digest: Option<String>,
    },
    #[error("account {account} is not linearizable: no order of its operations explains {subject}, which {claim}; after the {prefix_ops} operation(s) that can come before it{}, {}", last.as_ref().map(|last| format!(" (the last: {last})")).unwrap_or_default(), show_state(*.state))]
    NotLinearizable {
        account: AccountId,
        subject: Subject,
        /// What the operation says about the account, in words.
        claim: String,
        /// How many operations the deepest attempt could put before it.
        prefix_ops: usize,
        last: Option<Subject>,
        /// The account then: `None` if it did not exist, else (balance, minimum).
        state: Option<(i64, i64)>,
    },
    #[error("account {account}: the linearizability search gave up after {search_steps} steps; the history is neither proven linearizable nor refuted (too many indeterminate or concurrent operations)")]
    Inconclusive {
        account: AccountId,
        search_steps: u64,
    },
    #[error("money is not conserved: {seen_in} totals {total} over {accounts} accounts, but {}", show_range(*.expected_min, *.expected_max))]
    NotConserved {
        seen_in: Subject,
        accounts: usize,
        total: i128,
        expected_min: i128,
        expected_max: i128,
    },
}

/// What a [`Violation`] names: the operations it blames, each by the line of its invoke event
/// (the operation's id in a history file), and the branches whose final states it blames. The
/// message says the same in words; this is for pictures (`bank check --html`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blame {
    /// Lines of invoke events, in the order the message names them, without repeats.
    pub operations: Vec<usize>,
    /// Branches whose `final` lines are blamed, without repeats.
    pub branches: Vec<BranchId>,
}

impl Blame {
    fn operation(&mut self, line: usize) {
        if !self.operations.contains(&line) {
            self.operations.push(line);
        }
    }

    fn branch(&mut self, branch: BranchId) {
        if !self.branches.contains(&branch) {
            self.branches.push(branch);
        }
    }

    fn subject(&mut self, subject: &Subject) {
        match subject {
            Subject::Op(op) => self.operation(op.line),
            Subject::Final { branch } => self.branch(*branch),
        }
    }
}

impl Violation {
    /// The operations and final states this violation blames: for a history that is not
    /// linearizable, the operation no order explains and the last one that could come before
    /// it; for a balance below its minimum or money not conserved, where it was seen; for
    /// diverged branches, both branches; for an ill-formed history, the operation(s) the line
    /// is about. A completion without an invoke and an inconclusive search blame none.
    pub fn blame(&self) -> Blame {
        let mut blame = Blame::default();
        match self {
            Violation::CompletionWithoutInvoke { .. } | Violation::Inconclusive { .. } => {}
            Violation::DoubleInvoke {
                first_line,
                second_line,
                ..
            } => {
                blame.operation(*first_line);
                blame.operation(*second_line);
            }
            Violation::IllFormed { operation, .. } => {
                if let Some(line) = operation {
                    blame.operation(*line);
                }
            }
            Violation::BelowMinimum { seen_in, .. } | Violation::NotConserved { seen_in, .. } => {
                blame.subject(seen_in)
            }
            Violation::Divergence {
                branch,
                other_branch,
                ..
            }
            | Violation::DigestMismatch {
                branch,
                other_branch,
                ..
            } => {
                blame.branch(*branch);
                blame.branch(*other_branch);
            }
            Violation::NotLinearizable { subject, last, .. } => {
                blame.subject(subject);
                if let Some(last) = last {
                    blame.subject(last);
                }
            }
        }
        blame
    }
}

fn show_balance(balance: Option<i64>) -> String {
    match balance {
        Some(balance) => format!("{balance}"),
        None => "missing".to_string(),
    }
}

fn show_state(state: Option<(i64, i64)>) -> String {
    match state {
        Some((balance, _)) => format!("the balance is {balance}"),
        None => "the account does not exist".to_string(),
    }
}

fn show_range(min: i128, max: i128) -> String {
    if min == max {
        format!("the total must be {min} at that time")
    } else {
        format!("the total must be between {min} and {max} at that time")
    }
}
