//! A Jepsen-style history checker: did the bank, as its customers saw it, behave like one
//! correct bank — and do the branches agree at the end?
//!
//! A workload runner records every operation it sends as an *invoke* event and every answer as a
//! *completion*, with times from one monotonic clock, into a history file (see
//! [`HistoryWriter`]). [`check`] then decides, from the history alone, whether some order of the
//! operations, each taking effect at one instant between its invoke and its completion, explains
//! every answer (linearizability), and checks money, minimum balances and the branches' final
//! states. `bank check HISTORY` runs it from the command line.
//!
//! # History format
//!
//! JSON lines, one [`Event`] per line (blank lines are skipped). Each line is an object tagged by
//! `"type"`:
//!
//! - `init` (optional, at most once, before every invoke): accounts that exist before the
//!   history, `{"type":"init","balances":{"1":100},"min_balances":{"1":-50}}`
//!   (`min_balances` optional, default 0 per account).
//! - `invoke`: process `P` sends an operation at `time_us`:
//!   `{"type":"invoke","process":P,"time_us":T,"op":{...}}`. A process has at most one
//!   operation in flight; the next event for `P` must be its completion.
//! - its completion, one of:
//!   - `ok` — it happened, with what it answered:
//!     `{"type":"ok","process":P,"time_us":T,"result":{...}}`;
//!   - `fail` — it definitely did not happen. It may carry an observation:
//!     `"observation":{"kind":"insufficient_funds","balance":40}` (the balance the refusal saw,
//!     optional). An optional `"error"` text is for people only;
//!   - `info` — indeterminate (a timeout, a lost connection): it may have happened or not, at
//!     any time after its invoke. An optional `"error"` text.
//!
//!   An invoke with no completion by the end of the file is treated as `info`.
//! - `final` (optional, any number): a branch's state after the workload ended,
//!   `{"type":"final","branch":B,"balances":{...},"digest":"..."}` (`digest` optional).
//!
//! Operations (`"op"`, tagged by `"type"`) and the fields of their `ok` result (every result
//! field is optional except a read's `balances`; a recorded value is checked):
//!
//! | op | fields | ok `result` |
//! |----|--------|-------------|
//! | `open` | `account`, `balance`, `min_balance` (default 0) | `{"balance": b}` |
//! | `deposit` | `account`, `amount` | `{"balance": b}` (after the deposit) |
//! | `withdraw` | `account`, `amount` | `{"balance": b}` (after the withdrawal) |
//! | `transfer` | `from`, `to`, `amount` | `{"from_balance": f, "to_balance": t}` |
//! | `read` | `accounts: [..]` | `{"balances": {"account": b}}`; a missing account: none |
//!
//! Money is `i64` minor units; a balance may be negative down to its account's minimum
//! (overdraft). Account ids are `u64`; as JSON object keys they are strings (`"7"`). Times are
//! microseconds from any origin, but from one clock for the whole history: the checker compares
//! times of different processes. An operation that completes at the very microsecond another is
//! invoked is treated as concurrent with it, never as before it.
//!
//! Example: two customers, a deposit that timed out (and did take effect), and two branches
//! that agree:
//!
//! ```text
//! {"type":"init","balances":{"1":100,"2":0}}
//! {"type":"invoke","process":0,"time_us":10,"op":{"type":"transfer","from":1,"to":2,"amount":30}}
//! {"type":"invoke","process":1,"time_us":12,"op":{"type":"read","accounts":[1,2]}}
//! {"type":"ok","process":1,"time_us":15,"result":{"balances":{"1":70,"2":30}}}
//! {"type":"ok","process":0,"time_us":20,"result":{"from_balance":70,"to_balance":30}}
//! {"type":"invoke","process":1,"time_us":21,"op":{"type":"deposit","account":2,"amount":5}}
//! {"type":"info","process":1,"time_us":90,"error":"timeout"}
//! {"type":"invoke","process":0,"time_us":95,"op":{"type":"withdraw","account":1,"amount":500}}
//! {"type":"fail","process":0,"time_us":99,"observation":{"kind":"insufficient_funds","balance":70}}
//! {"type":"final","branch":1,"balances":{"1":70,"2":35},"digest":"9f2c"}
//! {"type":"final","branch":2,"balances":{"1":70,"2":35},"digest":"9f2c"}
//! ```
//!
//! # Checks, in order; the first violation is reported
//!
//! 1. **Well-formedness**: a completion without an invoke, a second invoke while one is in
//!    flight, a completion before its invoke, a result that does not fit its operation, a
//!    transfer to its own account, `init` out of place. (An unknown op or a line that is not
//!    JSON is a [`HistoryError`] naming the line.)
//! 2. **Minimum balance**: no balance seen anywhere (results, reads, refusals, finals) is below
//!    its account's minimum.
//! 3. **Convergence**: every `final` line has the same balances and the same digest.
//! 4. **Linearizability, per account**, with the Wing–Gong–Lowe search (below). The final
//!    state, when given, is a read of every account after everything else, so an acknowledged
//!    write that the branches lost is caught there too.
//! 5. **Conservation of money**: every ok read of *all* accounts (every account in `init` and
//!    every open that did not fail) and every final state must sum to the money that can be in
//!    the bank at that time. Transfers move money and never change the total. In a
//!    transfer-only workload (Jepsen's bank test) the total is known exactly. Deposits,
//!    withdrawals and opens change it, and indeterminate or concurrent ones make it uncertain,
//!    so rather than giving up the checker bounds it: at least the money that ok operations
//!    completed before the read added, minus everything that might have been taken out before
//!    it returned; at most the converse. This is exact when nothing that changes the total is
//!    concurrent with the read or indeterminate, and never wrong when something is. It is what
//!    catches a read of several accounts that is not atomic, which per-account linearizability
//!    cannot see.
//!
//! # The linearizability search
//!
//! Accounts are independent: a history is linearizable if and only if its projection on every
//! account is (linearizability is compositional). Each operation is split into per-account
//! sub-operations: a deposit or withdrawal is one; a transfer is a withdrawal from `from` and a
//! deposit to `to`, each with the balance it reported; a read of N accounts is N reads; a
//! `fail` with an insufficient-funds observation is a read-like constraint on `from` (the balance
//! minus the amount was below the minimum, and was the observed balance if one is given); a plain
//! `fail` and an indeterminate read constrain nothing and are dropped. The model of one account
//! is `Option<(balance, min_balance)>` (`None`: not opened yet).
//!
//! Wing & Gong's search, with Lowe's memoisation (G. Lowe, "Testing for linearizability", 2017;
//! the algorithm of Knossos and Porcupine): the call and return events of the account's
//! completed sub-operations form a doubly linked list in time order. The calls before the first
//! return are the candidates: a candidate the model accepts in the current state is
//! *linearized* — lifted out of the list with its return and pushed on a stack — and the search
//! goes on from the new state. The first return is an operation that must be linearized by
//! then: when no candidate leads anywhere, pop the last choice, put it back, and try the next
//! candidate of that level. The search succeeds when every completed operation is linearized,
//! and refutes the history when the root level runs out of candidates. Memoisation: a (set of
//! linearized operations as a bitset, model state) pair already explored is never explored
//! again. Candidates are tried in call order (tried: by return time or by the middle of the
//! interval, both far slower on generated histories).
//!
//! Three refinements, each keeping the answer exact:
//! - Indeterminate operations have no return: they may be linearized at any time after their
//!   call, or never. They are candidates only once the completed ones at a level have failed,
//!   and only those invoked before the blocking return; otherwise every level would try every
//!   one of them, and those that never happened stay pending to the end.
//! - A choice that left the state unchanged (a read, a refusal) and failed ends its level: it
//!   fitted there, so any linearization that takes it later could take it there instead.
//! - A quick search first allows one indeterminate operation between two completed ones, and only
//!   if it leaves a balance that a candidate needs. A linearization it finds is a proof; only if it
//!   finds none does the complete search run, to refute or give up. Otherwise the complete search
//!   would try the subsets of the indeterminate operations that never happened.
//!
//! A bound on steps per account ([`Limits::search_steps_max`], a quarter of it for the quick
//! search) turns a search that would take too long into [`Violation::Inconclusive`] instead of
//! a hang.
//!
//! Speed, 10,000 operations on one account with an optimised build: 16 processes and 1%
//! indeterminate, 0.05 s; 32 processes and 1% indeterminate, 0.6 s; 64 processes all on the same
//! account and none indeterminate, 1.4 s. The hard case is many processes on one account with
//! indeterminate operations: at 64 processes and 0.2% indeterminate, the search gives up
//! (inconclusive) within its default bound. Real workloads spread processes over accounts.
//!
//! Limits of the method: the two halves of an indeterminate transfer are checked independently
//! (one may be taken without the other; conservation bounds the damage); times are trusted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ledger::AccountId;

/// A customer process of the workload: at most one operation in flight.
pub type ProcessId = u64;
/// A branch (server) whose final state a history records.
pub type BranchId = u64;

/// One line of a history. See the module docs for the format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Accounts that exist before the first operation.
    Init {
        #[serde(with = "account_map")]
        balances: BTreeMap<AccountId, i64>,
        /// Minimum balance per account; absent means 0.
        #[serde(
            default,
            skip_serializing_if = "BTreeMap::is_empty",
            with = "account_map"
        )]
        min_balances: BTreeMap<AccountId, i64>,
    },
    /// `process` sends `op`.
    Invoke {
        process: ProcessId,
        time_us: u64,
        op: Op,
    },
    /// The process's operation happened and answered `result`.
    Ok {
        process: ProcessId,
        time_us: u64,
        #[serde(default)]
        result: OpResult,
    },
    /// The process's operation definitely did not happen.
    Fail {
        process: ProcessId,
        time_us: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        observation: Option<Observation>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The process's operation may or may not have happened.
    Info {
        process: ProcessId,
        time_us: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A branch's state after the workload.
    Final {
        branch: BranchId,
        #[serde(with = "account_map")]
        balances: BTreeMap<AccountId, i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
}

/// An operation a customer sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    Open {
        account: AccountId,
        balance: i64,
        #[serde(default, skip_serializing_if = "is_zero")]
        min_balance: i64,
    },
    Deposit {
        account: AccountId,
        amount: i64,
    },
    Withdraw {
        account: AccountId,
        amount: i64,
    },
    Transfer {
        from: AccountId,
        to: AccountId,
        amount: i64,
    },
    Read {
        accounts: Vec<AccountId>,
    },
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// What an ok operation answered. Which fields fit which operation: see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_balance: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_balance: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "account_map_option"
    )]
    pub balances: Option<BTreeMap<AccountId, i64>>,
}

impl OpResult {
    /// The result of an open, deposit or withdrawal: the balance after it.
    pub fn balance(balance: i64) -> Self {
        OpResult {
            balance: Some(balance),
            ..OpResult::default()
        }
    }

    /// The result of a transfer: both balances after it.
    pub fn transfer(from_balance: i64, to_balance: i64) -> Self {
        OpResult {
            from_balance: Some(from_balance),
            to_balance: Some(to_balance),
            ..OpResult::default()
        }
    }

    /// The result of a read; an account that does not exist is left out.
    pub fn read(balances: BTreeMap<AccountId, i64>) -> Self {
        OpResult {
            balances: Some(balances),
            ..OpResult::default()
        }
    }
}

/// What a failed operation saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// A withdrawal (or a transfer, from its `from` account) was refused: the balance minus the
    /// amount would be below the minimum. `balance` is the balance it saw, if known.
    InsufficientFunds {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        balance: Option<i64>,
    },
}

/// Account-keyed maps: JSON object keys are strings. Serde's derived `u64` keys cannot be read
/// inside internally tagged enums (the content is buffered and keys stay strings), so parse them.
mod account_map {
    use super::AccountId;
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<AccountId, i64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        map.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<AccountId, i64>, D::Error> {
        let raw = BTreeMap::<String, i64>::deserialize(deserializer)?;
        raw.into_iter()
            .map(|(key, balance)| {
                key.parse::<AccountId>()
                    .map(|account| (account, balance))
                    .map_err(|_| D::Error::custom(format!("account {key:?} is not an account id")))
            })
            .collect()
    }
}

mod account_map_option {
    use super::AccountId;
    use serde::{Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        map: &Option<BTreeMap<AccountId, i64>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        map.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<BTreeMap<AccountId, i64>>, D::Error> {
        super::account_map::deserialize(deserializer).map(Some)
    }
}

/// Writes a history, one event per line. Flush (or drop a `BufWriter` cleanly) at the end.
pub struct HistoryWriter<W: Write> {
    out: W,
}

impl<W: Write> HistoryWriter<W> {
    pub fn new(out: W) -> Self {
        HistoryWriter { out }
    }

    pub fn write(&mut self, event: &Event) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A history file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read the history")]
    Read(#[from] io::Error),
    #[error("line {line}: {message}")]
    Malformed { line: usize, message: String },
}

/// A parsed history: its events with their line numbers.
#[derive(Clone, Debug, Default)]
pub struct History {
    events: Vec<(usize, Event)>,
}

impl History {
    /// A history of events as if they were lines 1, 2, ...
    pub fn from_events(events: Vec<Event>) -> Self {
        History {
            events: events
                .into_iter()
                .enumerate()
                .map(|(index, event)| (index + 1, event))
                .collect(),
        }
    }

    pub fn parse(text: &str) -> Result<Self, HistoryError> {
        let mut events = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str(line).map_err(|e| HistoryError::Malformed {
                line: number,
                message: e.to_string(),
            })?;
            events.push((number, event));
        }
        Ok(History { events })
    }

    pub fn load(path: &Path) -> Result<Self, HistoryError> {
        History::parse(&std::fs::read_to_string(path)?)
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().map(|(_, event)| event)
    }
}

/// Bounds on the work of [`check_with`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Steps of the linearizability search per account before giving up as inconclusive.
    pub search_steps_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // About a second per account in release; a realistic history needs a few steps per op.
        Limits {
            search_steps_max: 20_000_000,
        }
    }
}

/// What a passing history held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub operations: usize,
    pub ok: usize,
    pub failed: usize,
    pub indeterminate: usize,
    pub accounts: usize,
    pub search_steps: u64,
    /// Reads of all accounts and final states whose total was checked.
    pub totals_checked: usize,
    /// Reads of all accounts whose total was known exactly.
    pub totals_exact: usize,
    pub branches: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "history passes: {} operations ({} ok, {} failed, {} indeterminate) on {} accounts; \
             linearizable ({} search steps); money conserved in {} totals ({} exact)",
            self.operations,
            self.ok,
            self.failed,
            self.indeterminate,
            self.accounts,
            self.search_steps,
            self.totals_checked,
            self.totals_exact
        )?;
        match self.branches {
            0 => write!(f, "; no final states"),
            n => write!(f, "; {n} branches agree"),
        }
    }
}

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

struct DescribeOp<'a>(&'a Op);

impl fmt::Display for DescribeOp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Op::Open {
                account,
                balance,
                min_balance,
            } => write!(
                f,
                "open of account {account} with balance {balance} (minimum {min_balance})"
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
    IllFormed { line: usize, reason: String },
    #[error(
        "account {account}'s balance {balance} is below its minimum {min_balance}, in {seen_in}"
    )]
    BelowMinimum {
        account: AccountId,
        balance: i64,
        min_balance: i64,
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

/// [`check_with`] with default limits.
pub fn check(history: &History) -> Result<Summary, Violation> {
    check_with(history, &Limits::default())
}

/// Runs every check (see the module docs) and returns the first violation.
pub fn check_with(history: &History, limits: &Limits) -> Result<Summary, Violation> {
    let recorded = pair_operations(history)?;
    check_minimums(&recorded)?;
    check_convergence(&recorded.finals)?;
    let search_steps = check_linearizable(&recorded, limits)?;
    let (totals_checked, totals_exact) = check_conservation(&recorded)?;
    let count = |outcome: fn(&Outcome) -> bool| {
        recorded
            .operations
            .iter()
            .filter(|operation| outcome(&operation.outcome))
            .count()
    };
    Ok(Summary {
        operations: recorded.operations.len(),
        ok: count(|outcome| matches!(outcome, Outcome::Ok(_))),
        failed: count(|outcome| matches!(outcome, Outcome::Fail(_))),
        indeterminate: count(|outcome| matches!(outcome, Outcome::Info)),
        accounts: recorded.accounts().len(),
        search_steps,
        totals_checked,
        totals_exact,
        branches: recorded.finals.len(),
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Well-formedness: pair invokes with completions.

#[derive(Clone, Debug)]
enum Outcome {
    Ok(OpResult),
    Fail(Option<Observation>),
    Info,
}

#[derive(Clone, Debug)]
struct Operation {
    process: ProcessId,
    op: Op,
    line: usize,
    invoke_us: u64,
    /// `Info` both for an `info` completion and for none (then `complete_us` is `None`).
    outcome: Outcome,
    complete_us: Option<u64>,
}

impl Operation {
    fn subject(&self) -> Subject {
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
    fn return_us(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Info => None,
            Outcome::Ok(_) | Outcome::Fail(_) => self.complete_us,
        }
    }
}

struct FinalState {
    branch: BranchId,
    balances: BTreeMap<AccountId, i64>,
    digest: Option<String>,
}

struct Recorded {
    init: BTreeMap<AccountId, i64>,
    init_min: BTreeMap<AccountId, i64>,
    operations: Vec<Operation>,
    finals: Vec<FinalState>,
    /// After every time in the history: when final states are read.
    end_us: u64,
}

impl Recorded {
    fn accounts(&self) -> BTreeSet<AccountId> {
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
    fn minimums(&self) -> BTreeMap<AccountId, i64> {
        let mut minimums: BTreeMap<AccountId, i64> =
            self.init.keys().map(|account| (*account, 0)).collect();
        minimums.extend(&self.init_min);
        for operation in &self.operations {
            if let (
                Op::Open {
                    account,
                    min_balance,
                    ..
                },
                Outcome::Ok(_) | Outcome::Info,
            ) = (&operation.op, &operation.outcome)
            {
                minimums.entry(*account).or_insert(*min_balance);
            }
        }
        minimums
    }
}

fn pair_operations(history: &History) -> Result<Recorded, Violation> {
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
            Event::Init {
                balances,
                min_balances,
            } => {
                if seen_init_or_invoke {
                    return Err(ill_formed(line, "init must come once, before every invoke"));
                }
                seen_init_or_invoke = true;
                recorded.init = balances.clone();
                recorded.init_min = min_balances.clone();
                continue;
            }
            Event::Final {
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
            Event::Invoke {
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
            Event::Ok {
                process,
                time_us,
                result,
            } => (process, time_us, Outcome::Ok(result.clone())),
            Event::Fail {
                process,
                time_us,
                observation,
                ..
            } => (process, time_us, Outcome::Fail(observation.clone())),
            Event::Info {
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
        let operation = &mut recorded.operations[index];
        if *time_us < operation.invoke_us {
            return Err(ill_formed(
                line,
                format!(
                    "process {process} completes at {time_us} µs the operation it invoked at {} µs (line {})",
                    operation.invoke_us, operation.line
                ),
            ));
        }
        if let Err(reason) = fits(&operation.op, &outcome) {
            return Err(ill_formed(
                line,
                format!(
                    "the completion of process {process}'s {}: {reason}",
                    DescribeOp(&operation.op)
                ),
            ));
        }
        operation.outcome = outcome;
        operation.complete_us = Some(*time_us);
        recorded.end_us = recorded.end_us.max(*time_us);
    }
    recorded.end_us = recorded.end_us.saturating_add(1);
    Ok(recorded)
}

fn ill_formed(line: usize, reason: impl Into<String>) -> Violation {
    Violation::IllFormed {
        line,
        reason: reason.into(),
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

// ---------------------------------------------------------------------------------------------
// 2. Minimum balances.

fn check_minimums(recorded: &Recorded) -> Result<(), Violation> {
    let minimums = recorded.minimums();
    let check = |account: AccountId, balance: i64, seen_in: &dyn Fn() -> Subject| match minimums
        .get(&account)
    {
        Some(&min_balance) if balance < min_balance => Err(Violation::BelowMinimum {
            account,
            balance,
            min_balance,
            seen_in: seen_in(),
        }),
        _ => Ok(()),
    };
    for operation in &recorded.operations {
        let subject = || operation.subject();
        for (account, balance) in observed_balances(operation) {
            check(account, balance, &subject)?;
        }
    }
    for state in &recorded.finals {
        for (&account, &balance) in &state.balances {
            check(account, balance, &|| Subject::Final {
                branch: state.branch,
            })?;
        }
    }
    Ok(())
}

/// Every (account, balance) an operation's completion reports.
fn observed_balances(operation: &Operation) -> Vec<(AccountId, i64)> {
    match (&operation.op, &operation.outcome) {
        (
            Op::Open { account, .. } | Op::Deposit { account, .. } | Op::Withdraw { account, .. },
            Outcome::Ok(result),
        ) => result.balance.map(|b| (*account, b)).into_iter().collect(),
        (Op::Transfer { from, to, .. }, Outcome::Ok(result)) => {
            let from = result.from_balance.map(|b| (*from, b));
            let to = result.to_balance.map(|b| (*to, b));
            from.into_iter().chain(to).collect()
        }
        (Op::Read { .. }, Outcome::Ok(result)) => result
            .balances
            .iter()
            .flatten()
            .map(|(account, balance)| (*account, *balance))
            .collect(),
        (
            Op::Withdraw { account: from, .. } | Op::Transfer { from, .. },
            Outcome::Fail(Some(Observation::InsufficientFunds {
                balance: Some(balance),
            })),
        ) => vec![(*from, *balance)],
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Convergence.

fn check_convergence(finals: &[FinalState]) -> Result<(), Violation> {
    let Some((first, others)) = finals.split_first() else {
        return Ok(());
    };
    for other in others {
        let accounts: BTreeSet<&AccountId> =
            first.balances.keys().chain(other.balances.keys()).collect();
        for &account in accounts {
            let balance = first.balances.get(&account).copied();
            let other_balance = other.balances.get(&account).copied();
            if balance != other_balance {
                return Err(Violation::Divergence {
                    branch: first.branch,
                    other_branch: other.branch,
                    account,
                    balance,
                    other_balance,
                });
            }
        }
        if first.digest != other.digest {
            return Err(Violation::DigestMismatch {
                branch: first.branch,
                other_branch: other.branch,
                digest: first.digest.clone(),
                other_digest: other.digest.clone(),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Linearizability per account (Wing–Gong–Lowe; see the module docs).

/// One account's model state: `None` until opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct AccountState {
    balance: i64,
    min_balance: i64,
}

type Model = Option<AccountState>;

/// What one operation does to, or says about, one account.
#[derive(Clone, Copy, Debug)]
enum Step {
    Open {
        balance: i64,
        min_balance: i64,
        observed: Option<i64>,
    },
    /// A deposit (`floor: false`) or a withdrawal (`floor: true`: refused below the minimum).
    Change {
        delta: i64,
        floor: bool,
        observed: Option<i64>,
    },
    /// `observed: None`: the account did not exist.
    Read { observed: Option<i64> },
    /// Refused: the balance minus `amount` was below the minimum.
    Refused { amount: i64, observed: Option<i64> },
}

impl Step {
    /// The state after this step, or `None` if the step cannot happen in `state`.
    fn apply(self, state: Model) -> Option<Model> {
        match (self, state) {
            (
                Step::Open {
                    balance,
                    min_balance,
                    observed,
                },
                None,
            ) => (observed.is_none_or(|b| b == balance) && balance >= min_balance).then_some(Some(
                AccountState {
                    balance,
                    min_balance,
                },
            )),
            (Step::Open { .. }, Some(_)) => None,
            (
                Step::Change {
                    delta,
                    floor,
                    observed,
                },
                Some(state),
            ) => {
                let balance = state.balance.checked_add(delta)?;
                let allowed = (!floor || balance >= state.min_balance)
                    && observed.is_none_or(|b| b == balance);
                allowed.then_some(Some(AccountState { balance, ..state }))
            }
            (Step::Change { .. }, None) => None,
            (Step::Read { observed }, state) => {
                (observed == state.map(|s| s.balance)).then_some(state)
            }
            (Step::Refused { amount, observed }, Some(state)) => {
                let refused = state
                    .balance
                    .checked_sub(amount)
                    .is_none_or(|after| after < state.min_balance);
                (refused && observed.is_none_or(|b| b == state.balance)).then_some(Some(state))
            }
            (Step::Refused { .. }, None) => None,
        }
    }

    /// The balance this step can only happen at (`Some(None)`: the account must not exist), or
    /// `None` if it can happen at several.
    fn need(self) -> Option<Option<i64>> {
        match self {
            Step::Open { .. } => Some(None),
            Step::Change {
                delta,
                observed: Some(after),
                ..
            } => after.checked_sub(delta).map(Some),
            Step::Read { observed } => Some(observed),
            Step::Refused {
                observed: Some(balance),
                ..
            } => Some(Some(balance)),
            Step::Change { observed: None, .. } | Step::Refused { observed: None, .. } => None,
        }
    }

    fn claim(self) -> String {
        match self {
            Step::Open { balance, .. } => format!("opens it with balance {balance}"),
            Step::Change {
                delta,
                observed: Some(after),
                ..
            } => format!("changes it by {delta} to {after}"),
            Step::Change { delta, .. } => format!("changes it by {delta}"),
            Step::Read {
                observed: Some(balance),
            } => format!("reads balance {balance}"),
            Step::Read { observed: None } => "finds no such account".to_string(),
            Step::Refused {
                amount,
                observed: Some(balance),
            } => format!("is refused taking {amount} for insufficient funds at balance {balance}"),
            Step::Refused { amount, .. } => {
                format!("is refused taking {amount} for insufficient funds")
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Origin {
    Op(usize),
    Final(usize),
}

#[derive(Clone, Copy, Debug)]
struct SubOp {
    origin: Origin,
    call_us: u64,
    /// `None`: indeterminate; it may take effect at any time after its call, or never.
    return_us: Option<u64>,
    step: Step,
}

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
                min_balance,
            } => push(
                *account,
                Step::Open {
                    balance: *balance,
                    min_balance: *min_balance,
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

fn check_linearizable(recorded: &Recorded, limits: &Limits) -> Result<u64, Violation> {
    let minimums = recorded.minimums();
    let mut steps_total = 0u64;
    for (account, ops) in sub_ops(recorded) {
        let initial = recorded.init.get(&account).map(|&balance| AccountState {
            balance,
            min_balance: minimums.get(&account).copied().unwrap_or(0),
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
                    state: deepest.state.map(|s| (s.balance, s.min_balance)),
                })
            }
        }
    }
    Ok(steps_total)
}

/// The deepest point the search reached before it had to backtrack: `blocked` could not be
/// linearized after the `depth` operations placed before it, the last of which was `last`.
#[derive(Debug)]
struct Deepest {
    depth: usize,
    blocked: usize,
    last: Option<usize>,
    state: Model,
}

#[derive(Debug)]
enum Unexplained {
    Refuted(Deepest),
    Inconclusive { steps: u64 },
}

const NIL: usize = usize::MAX;

/// A call or return event in the search's doubly linked list. Node 0 is the head.
#[derive(Clone, Copy, Debug)]
struct Node {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// The events of one account's sub-operations in time order, as a doubly linked list from
/// which an operation's call and return are lifted when it is linearized and put back when
/// the search backtracks (dancing links).
struct EventList {
    nodes: Vec<Node>,
    call_node: Vec<usize>,
    return_node: Vec<Option<usize>>,
}

impl EventList {
    fn new(ops: &[SubOp]) -> Self {
        // Calls before returns at the same time: such operations are concurrent.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            events.push((op.call_us, false, index));
            if let Some(time) = op.return_us {
                events.push((time, true, index));
            }
        }
        events.sort_unstable();
        let mut list = EventList {
            nodes: Vec::with_capacity(events.len() + 1),
            call_node: vec![NIL; ops.len()],
            return_node: vec![None; ops.len()],
        };
        list.nodes.push(Node {
            op: NIL,
            is_call: false,
            prev: NIL,
            next: NIL,
        });
        for (position, (_, is_return, op)) in events.into_iter().enumerate() {
            let node = position + 1;
            list.nodes[node - 1].next = node;
            list.nodes.push(Node {
                op,
                is_call: !is_return,
                prev: node - 1,
                next: NIL,
            });
            if is_return {
                list.return_node[op] = Some(node);
            } else {
                list.call_node[op] = node;
            }
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = node;
        if next != NIL {
            self.nodes[next].prev = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if let Some(node) = self.return_node[op] {
            self.unlink(node);
        }
    }

    /// Undoes the last `lift`, which must have been of `op`.
    fn unlift(&mut self, op: usize) {
        if let Some(node) = self.return_node[op] {
            self.relink(node);
        }
        self.relink(self.call_node[op]);
    }
}

/// The set of linearized operations. Completed operations take bits `0..required` in call
/// order and indeterminate ones the words after, so the memo key stays short: the completed
/// part is stored from its first word that is not full (everything before the search frontier
/// is linearized), the indeterminate part up to its last set bit.
struct Linearized {
    words: Vec<u64>,
    required_words: usize,
}

impl Linearized {
    fn new(required: usize, optional: usize) -> Self {
        let required_words = required.div_ceil(64);
        Linearized {
            words: vec![0; required_words + optional.div_ceil(64)],
            required_words,
        }
    }

    fn bit(&self, op: usize, required: usize) -> (usize, u64) {
        // `op` indexes sub-ops: completed ones first, then the indeterminate ones.
        if op < required {
            (op / 64, 1 << (op % 64))
        } else {
            let optional = op - required;
            (self.required_words + optional / 64, 1 << (optional % 64))
        }
    }

    fn key(&self) -> Box<[u64]> {
        let (required, optional) = self.words.split_at(self.required_words);
        let full = required.iter().take_while(|w| **w == u64::MAX).count();
        let required_end = required
            .iter()
            .rposition(|w| *w != 0)
            .map_or(full, |i| i + 1);
        let optional_end = optional.iter().rposition(|w| *w != 0).map_or(0, |i| i + 1);
        let mut key = Vec::with_capacity(2 + required_end - full.min(required_end) + optional_end);
        key.push(full as u64);
        key.push(required_end.saturating_sub(full) as u64);
        key.extend_from_slice(&required[full.min(required_end)..required_end]);
        key.extend_from_slice(&optional[..optional_end]);
        key.into_boxed_slice()
    }
}

/// Searches for a linearization of one account's sub-operations (see the module docs);
/// returns the steps taken.
fn linearize(initial: Model, ops: &[SubOp], steps_max: u64) -> Result<u64, Unexplained> {
    // A quick search first, taking at most one indeterminate operation between two completed
    // ones: any linearization it finds is a proof, and it does not drown in the subsets of
    // indeterminate operations that never happened. Only if it finds none does the complete
    // search run, to refute or give up.
    let quick_steps_max = steps_max / 4;
    match search(initial, ops, quick_steps_max, Some(1)) {
        Ok(steps) => Ok(steps),
        Err(Unexplained::Refuted(_)) | Err(Unexplained::Inconclusive { .. }) => {
            let steps_left = steps_max - quick_steps_max;
            match search(initial, ops, steps_left, None) {
                Ok(steps) => Ok(steps + quick_steps_max),
                Err(Unexplained::Inconclusive { .. }) => {
                    Err(Unexplained::Inconclusive { steps: steps_max })
                }
                Err(refuted) => Err(refuted),
            }
        }
    }
}

/// One level of the search: the operations that may be linearized next, in the order tried.
struct Level {
    /// Completed operations whose call precedes the first pending return, most urgent (earliest
    /// return) first, then the indeterminate operations invoked before that return.
    candidates: Vec<usize>,
    tried: usize,
    /// The completed operation with the first pending return: it must be linearized by then.
    blocking: usize,
    /// The state and the operation this level was reached by (`None` at the root).
    state: Model,
    reached_by: Option<usize>,
}

/// One search; `in_a_row_max` bounds the indeterminate operations taken in a row (`None`: the
/// complete search).
///
/// A level's candidates are tried by urgency rather than in call order as in Lowe's
/// formulation: it is the same search tree in another order, and it finds real histories'
/// linearizations with far less backtracking (with many processes, a write often fits the
/// current balance by coincidence, and trying it first leads the search astray).
fn search(
    initial: Model,
    ops: &[SubOp],
    steps_max: u64,
    in_a_row_max: Option<usize>,
) -> Result<u64, Unexplained> {
    // Completed operations first, then indeterminate ones, each in call order.
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].return_us.is_none(), ops[i].call_us, i));
    let ops: Vec<SubOp> = order.iter().map(|&i| ops[i]).collect();
    let required = ops.iter().filter(|op| op.return_us.is_some()).count();
    let original = |op: usize| order[op];
    if required == 0 {
        return Ok(0);
    }

    let mut completed = EventList::new(&ops[..required]);
    // Indexed from 0: operation `required + i` is node `indeterminate.call_node[i]`.
    let mut indeterminate = EventList::new(&ops[required..]);
    let mut linearized = Linearized::new(required, ops.len() - required);
    let mut memo: HashSet<(Box<[u64]>, Model), BuildHasherDefault<FxHasher>> = HashSet::default();
    let mut required_left = required;
    let mut deepest: Option<Deepest> = None;
    let mut steps = 0u64;

    let level = |completed: &EventList,
                 indeterminate: &EventList,
                 state: Model,
                 reached_by: Option<usize>,
                 in_a_row: usize| {
        let mut candidates = Vec::new();
        let mut node = completed.nodes[0].next;
        // A completed operation is still in the list, so a return ends the walk.
        while completed.nodes[node].is_call {
            candidates.push(completed.nodes[node].op);
            node = completed.nodes[node].next;
            assert_ne!(node, NIL, "a pending operation has no return event");
        }
        let blocking = completed.nodes[node].op;
        // Lowe's order: by call time (tried: by return, by midpoint; both far slower).
        if in_a_row_max.is_none_or(|max| in_a_row < max) {
            // The last indeterminate operation allowed in a row is only worth taking if it
            // leaves a balance that some completed candidate needs.
            let last_allowed = in_a_row_max.is_some_and(|max| in_a_row + 1 == max);
            let mut needs: HashSet<Option<i64>, BuildHasherDefault<FxHasher>> = HashSet::default();
            let mut needs_any = !last_allowed;
            for &op in &candidates {
                match ops[op].step.need() {
                    Some(balance) => {
                        needs.insert(balance);
                    }
                    None => needs_any = true,
                }
            }
            let blocking_us = ops[blocking].return_us.unwrap_or(u64::MAX);
            let mut node = indeterminate.nodes[0].next;
            while node != NIL && ops[required + indeterminate.nodes[node].op].call_us <= blocking_us
            {
                let op = required + indeterminate.nodes[node].op;
                let useful = needs_any
                    || ops[op]
                        .step
                        .apply(state)
                        .is_some_and(|after| needs.contains(&after.map(|a| a.balance)));
                if useful {
                    candidates.push(op);
                }
                node = indeterminate.nodes[node].next;
            }
        }
        Level {
            candidates,
            tried: 0,
            blocking,
            state,
            reached_by,
        }
    };

    let mut levels = vec![level(&completed, &indeterminate, initial, None, 0)];
    let mut in_a_row = 0;
    while required_left > 0 {
        steps += 1;
        if steps > steps_max {
            return Err(Unexplained::Inconclusive { steps: steps_max });
        }
        let Some(top) = levels.last_mut() else {
            // The root level is never popped without returning.
            unreachable!("the search stack is empty");
        };
        if let Some(&op) = top.candidates.get(top.tried) {
            top.tried += 1;
            let state = top.state;
            let Some(next_state) = ops[op].step.apply(state) else {
                continue;
            };
            let (word, mask) = linearized.bit(op, required);
            linearized.words[word] |= mask;
            if !memo.insert((linearized.key(), next_state)) {
                linearized.words[word] &= !mask;
                continue;
            }
            if op < required {
                required_left -= 1;
                completed.lift(op);
                in_a_row = 0;
            } else {
                indeterminate.lift(op - required);
                in_a_row += 1;
            }
            if required_left > 0 {
                let next = level(&completed, &indeterminate, next_state, Some(op), in_a_row);
                levels.push(next);
            }
            continue;
        }
        // Every candidate failed: the blocking operation cannot be linearized after this
        // prefix. Undo the choice that led here.
        let (blocking, reached_by, state) = (top.blocking, top.reached_by, top.state);
        let depth = levels.len() - 1;
        if deepest.as_ref().is_none_or(|d| depth > d.depth) {
            deepest = Some(Deepest {
                depth,
                blocked: original(blocking),
                last: reached_by.map(original),
                state,
            });
        }
        levels.pop();
        let (Some(op), Some(parent)) = (reached_by, levels.last_mut()) else {
            let fallback = Deepest {
                depth: 0,
                blocked: original(blocking),
                last: None,
                state,
            };
            return Err(Unexplained::Refuted(deepest.unwrap_or(fallback)));
        };
        // A choice that left the state as it was (a read, a refusal) fitted where it was
        // taken, so any way on that takes it later could take it there instead, and that
        // failed: the parent's other candidates need not be tried.
        if parent.state == state {
            parent.tried = parent.candidates.len();
        }
        let (word, mask) = linearized.bit(op, required);
        linearized.words[word] &= !mask;
        if op < required {
            required_left += 1;
            completed.unlift(op);
        } else {
            indeterminate.unlift(op - required);
        }
        in_a_row = levels
            .iter()
            .rev()
            .take_while(|l| l.reached_by.is_some_and(|op| op >= required))
            .count();
    }
    Ok(steps)
}

/// FxHash (rustc's): the memo's keys are machine words from this process, not adversarial
/// input, and SipHash would dominate the search.
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.hash = (self.hash.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Conservation of money.

/// Checks every ok read of all accounts and every final state against the bounds on the total
/// (see the module docs). Returns (totals checked, of which exact).
fn check_conservation(recorded: &Recorded) -> Result<(usize, usize), Violation> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &str) -> Result<Summary, Violation> {
        check(&History::parse(lines).expect("test history parses"))
    }

    fn violation(lines: &str) -> Violation {
        match run(lines) {
            Ok(summary) => panic!("expected a violation, the history passed: {summary}"),
            Err(violation) => violation,
        }
    }

    fn passes(lines: &str) -> Summary {
        match run(lines) {
            Ok(summary) => summary,
            Err(violation) => panic!("expected a pass: {violation}"),
        }
    }

    /// The example of the module docs, verbatim.
    const DOC_EXAMPLE: &str = r#"
{"type":"init","balances":{"1":100,"2":0}}
{"type":"invoke","process":0,"time_us":10,"op":{"type":"transfer","from":1,"to":2,"amount":30}}
{"type":"invoke","process":1,"time_us":12,"op":{"type":"read","accounts":[1,2]}}
{"type":"ok","process":1,"time_us":15,"result":{"balances":{"1":70,"2":30}}}
{"type":"ok","process":0,"time_us":20,"result":{"from_balance":70,"to_balance":30}}
{"type":"invoke","process":1,"time_us":21,"op":{"type":"deposit","account":2,"amount":5}}
{"type":"info","process":1,"time_us":90,"error":"timeout"}
{"type":"invoke","process":0,"time_us":95,"op":{"type":"withdraw","account":1,"amount":500}}
{"type":"fail","process":0,"time_us":99,"observation":{"kind":"insufficient_funds","balance":70}}
{"type":"final","branch":1,"balances":{"1":70,"2":35},"digest":"9f2c"}
{"type":"final","branch":2,"balances":{"1":70,"2":35},"digest":"9f2c"}
"#;

    #[test]
    fn doc_example_passes_with_an_indeterminate_deposit_that_happened() {
        let summary = passes(DOC_EXAMPLE);
        assert_eq!(summary.operations, 4);
        assert_eq!(
            (summary.ok, summary.failed, summary.indeterminate),
            (2, 1, 1)
        );
        assert_eq!(summary.accounts, 2);
        assert_eq!(summary.branches, 2);
        // The read is exact (a transfer does not change the total); the finals are not (the
        // indeterminate deposit may or may not count).
        assert_eq!((summary.totals_checked, summary.totals_exact), (3, 1));
        assert!(summary
            .to_string()
            .starts_with("history passes: 4 operations"));
    }

    #[test]
    fn indeterminate_deposit_that_did_not_happen_passes() {
        let history = DOC_EXAMPLE.replace(r#""2":35"#, r#""2":30"#);
        passes(&history);
    }

    #[test]
    fn concurrent_operations_are_reordered() {
        // Process 0 invokes first but its deposit takes effect after process 1's.
        passes(
            r#"
{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"deposit","account":1,"amount":50}}
{"type":"invoke","process":1,"time_us":10,"op":{"type":"deposit","account":1,"amount":20}}
{"type":"ok","process":1,"time_us":20,"result":{"balance":120}}
{"type":"invoke","process":2,"time_us":30,"op":{"type":"read","accounts":[1]}}
{"type":"ok","process":2,"time_us":40,"result":{"balances":{"1":120}}}
{"type":"ok","process":0,"time_us":100,"result":{"balance":170}}
{"type":"invoke","process":2,"time_us":110,"op":{"type":"read","accounts":[1]}}
{"type":"ok","process":2,"time_us":120,"result":{"balances":{"1":170}}}
"#,
        );
    }

    #[test]
    fn indeterminate_withdrawal_seen_by_a_later_read_passes() {
        passes(
            r#"
{"type":"invoke","process":0,"time_us":0,"op":{"type":"open","account":4,"balance":100}}
{"type":"ok","process":0,"time_us":5,"result":{"balance":100}}
{"type":"invoke","process":0,"time_us":6,"op":{"type":"withdraw","account":4,"amount":40}}
{"type":"info","process":0,"time_us":50}
{"type":"invoke","process":1,"time_us":60,"op":{"type":"read","accounts":[4]}}
{"type":"ok","process":1,"time_us":70,"result":{"balances":{"4":100}}}
{"type":"invoke","process":1,"time_us":80,"op":{"type":"read","accounts":[4]}}
{"type":"ok","process":1,"time_us":90,"result":{"balances":{"4":60}}}
"#,
        );
    }

    #[test]
    fn plain_failures_are_dropped_and_refusals_constrain() {
        passes(
            r#"
{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"deposit","account":1,"amount":50}}
{"type":"fail","process":0,"time_us":5,"error":"not the leader"}
{"type":"invoke","process":0,"time_us":6,"op":{"type":"withdraw","account":1,"amount":101}}
{"type":"fail","process":0,"time_us":9,"observation":{"kind":"insufficient_funds","balance":100}}
{"type":"final","branch":1,"balances":{"1":100}}
"#,
        );
        // A refusal for insufficient funds while the balance covered the withdrawal.
        let refused = violation(
            r#"
{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":6,"op":{"type":"withdraw","account":1,"amount":60}}
{"type":"fail","process":0,"time_us":9,"observation":{"kind":"insufficient_funds"}}
"#,
        );
        assert!(
            matches!(
                refused,
                Violation::NotLinearizable {
                    account: 1,
                    prefix_ops: 0,
                    state: Some((100, 0)),
                    ..
                }
            ),
            "{refused}"
        );
    }

    #[test]
    fn stale_read_after_an_acknowledged_deposit() {
        let found = violation(
            r#"
{"type":"init","balances":{"1":100,"2":0}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"deposit","account":1,"amount":50}}
{"type":"ok","process":0,"time_us":10,"result":{"balance":150}}
{"type":"invoke","process":1,"time_us":20,"op":{"type":"read","accounts":[1]}}
{"type":"ok","process":1,"time_us":30,"result":{"balances":{"1":100}}}
"#,
        );
        let Violation::NotLinearizable {
            account,
            subject,
            prefix_ops,
            state,
            ..
        } = &found
        else {
            panic!("expected NotLinearizable, got {found}");
        };
        assert_eq!((*account, *prefix_ops, *state), (1, 1, Some((150, 0))));
        assert!(matches!(subject, Subject::Op(op) if op.process == 1 && op.line == 5));
        assert_eq!(
            found.to_string(),
            "account 1 is not linearizable: no order of its operations explains process 1's \
             read of accounts [1] (line 5, invoked at 20 µs, ok at 30 µs), which reads balance \
             100; after the 1 operation(s) that can come before it (the last: process 0's \
             deposit of 50 into account 1 (line 3, invoked at 0 µs, ok at 10 µs)), the balance \
             is 150"
        );
    }

    #[test]
    fn acknowledged_deposit_lost_by_the_branches() {
        let found = violation(
            r#"
{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"deposit","account":1,"amount":50}}
{"type":"ok","process":0,"time_us":10,"result":{"balance":150}}
{"type":"final","branch":1,"balances":{"1":100}}
{"type":"final","branch":2,"balances":{"1":100}}
"#,
        );
        assert!(
            matches!(
                &found,
                Violation::NotLinearizable {
                    account: 1,
                    subject: Subject::Final { branch: 1 },
                    state: Some((150, 0)),
                    ..
                }
            ),
            "{found}"
        );
        assert!(found
            .to_string()
            .contains("branch 1's final state, which reads balance 100"));
    }

    #[test]
    fn acknowledged_deposit_overwritten_by_a_later_one() {
        let found = violation(
            r#"
{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"deposit","account":1,"amount":50}}
{"type":"ok","process":0,"time_us":10,"result":{"balance":150}}
{"type":"invoke","process":1,"time_us":20,"op":{"type":"deposit","account":1,"amount":20}}
{"type":"ok","process":1,"time_us":30,"result":{"balance":120}}
"#,
        );
        assert!(
            matches!(&found, Violation::NotLinearizable { account: 1, subject: Subject::Op(op), .. } if op.process == 1),
            "{found}"
        );
        assert!(
            found.to_string().contains("changes it by 20 to 120"),
            "{found}"
        );
    }

    #[test]
    fn read_of_all_accounts_that_sums_wrong() {
        // Each account on its own is linearizable (the read is concurrent with the transfer)
        // but the read saw the withdrawal and not the deposit: money vanished.
        let found = violation(
            r#"
{"type":"init","balances":{"1":100,"2":0}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"transfer","from":1,"to":2,"amount":30}}
{"type":"invoke","process":1,"time_us":5,"op":{"type":"read","accounts":[1,2]}}
{"type":"ok","process":1,"time_us":15,"result":{"balances":{"1":70,"2":0}}}
{"type":"ok","process":0,"time_us":10,"result":{"from_balance":70,"to_balance":30}}
"#,
        );
        assert!(
            matches!(
                &found,
                Violation::NotConserved {
                    total: 70,
                    expected_min: 100,
                    expected_max: 100,
                    accounts: 2,
                    ..
                }
            ),
            "{found}"
        );
        assert!(
            found
                .to_string()
                .contains("totals 70 over 2 accounts, but the total must be 100"),
            "{found}"
        );
    }

    #[test]
    fn total_bounds_with_concurrent_deposits() {
        // A deposit concurrent with the read may or may not count: 100..=150 both pass.
        let history = |seen: i64| {
            format!(
                r#"
{{"type":"init","balances":{{"1":100,"2":0}}}}
{{"type":"invoke","process":0,"time_us":0,"op":{{"type":"deposit","account":2,"amount":50}}}}
{{"type":"invoke","process":1,"time_us":5,"op":{{"type":"read","accounts":[1,2]}}}}
{{"type":"ok","process":1,"time_us":15,"result":{{"balances":{{"1":100,"2":{seen}}}}}}}
{{"type":"ok","process":0,"time_us":20,"result":{{"balance":50}}}}
"#
            )
        };
        passes(&history(0));
        passes(&history(50));
        assert!(matches!(
            violation(&history(20)),
            Violation::NotLinearizable { account: 2, .. }
        ));
    }

    #[test]
    fn negative_balance_and_overdraft() {
        let found = violation(
            r#"
{"type":"init","balances":{"1":100}}
{"type":"invoke","process":0,"time_us":0,"op":{"type":"withdraw","account":1,"amount":110}}
{"type":"ok","process":0,"time_us":10,"result":{"balance":-10}}
"#,
        );
        assert!(
            matches!(
                &found,
                Violation::BelowMinimum {
                    account: 1,
                    balance: -10,
                    min_balance: 0,
                    ..
                }
            ),
            "{found}"
        );
        assert!(found.to_string().starts_with(
            "account 1's balance -10 is below its minimum 0, in process 0's withdrawal of 110"
        ));
        // An overdraft account may go down to its minimum, and no further.
        passes(
            r#"
{"type":"invoke","process":0,"time_us":0,"op":{"type":"open","account":3,"balance":0,"min_balance":-50}}
{"type":"ok","process":0,"time_us":5,"result":{"balance":0}}
{"type":"invoke","process":0,"time_us":6,"op":{"type":"withdraw","account":3,"amount":50}}
{"type":"ok","process":0,"time_us":9,"result":{"balance":-50}}
{"type":"invoke","process":0,"time_us":10,"op":{"type":"withdraw","account":3,"amount":1}}
{"type":"fail","process":0,"time_us":12,"observation":{"kind":"insufficient_funds","balance":-50}}
"#,
        );
    }

    #[test]
    fn divergent_final_states() {
        let found = violation(
            r#"
{"type":"init","balances":{"1":100,"2":5}}
{"type":"final","branch":1,"balances":{"1":100,"2":5},"digest":"a"}
{"type":"final","branch":2,"balances":{"1":100,"2":5},"digest":"a"}
{"type":"final","branch":3,"balances":{"1":100},"digest":"b"}
"#,
        );
        assert_eq!(
            found,
            Violation::Divergence {
                branch: 1,
                other_branch: 3,
                account: 2,
                balance: Some(5),
                other_balance: None,
            }
        );
        assert_eq!(
            found.to_string(),
            "branches 1 and 3 diverged: account 2 is 5 on branch 1 and missing on branch 3"
        );
        let digests = violation(
            r#"
{"type":"final","branch":1,"balances":{},"digest":"a"}
{"type":"final","branch":2,"balances":{},"digest":"b"}
"#,
        );
        assert!(matches!(
            digests,
            Violation::DigestMismatch {
                branch: 1,
                other_branch: 2,
                ..
            }
        ));
    }

    #[test]
    fn ill_formed_histories() {
        assert_eq!(
            violation(r#"{"type":"ok","process":3,"time_us":7}"#),
            Violation::CompletionWithoutInvoke {
                line: 1,
                process: 3,
                time_us: 7
            }
        );
        assert_eq!(
            violation(
                r#"{"type":"invoke","process":3,"time_us":7,"op":{"type":"read","accounts":[1]}}
{"type":"invoke","process":3,"time_us":8,"op":{"type":"read","accounts":[1]}}"#
            ),
            Violation::DoubleInvoke {
                process: 3,
                first_line: 1,
                second_line: 2
            }
        );
        let backwards = violation(
            r#"{"type":"invoke","process":3,"time_us":7,"op":{"type":"read","accounts":[1]}}
{"type":"ok","process":3,"time_us":6,"result":{"balances":{}}}"#,
        );
        assert!(
            matches!(backwards, Violation::IllFormed { line: 2, .. }),
            "{backwards}"
        );
        let wrong_result = violation(
            r#"{"type":"invoke","process":3,"time_us":7,"op":{"type":"deposit","account":1,"amount":5}}
{"type":"ok","process":3,"time_us":8,"result":{"from_balance":5}}"#,
        );
        assert!(
            wrong_result
                .to_string()
                .contains("may only carry \"balance\""),
            "{wrong_result}"
        );
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let unknown = History::parse(
            "\n{\"type\":\"invoke\",\"process\":1,\"time_us\":0,\"op\":{\"type\":\"steal\",\"account\":1}}",
        )
        .expect_err("an unknown op is refused");
        let message = unknown.to_string();
        assert!(
            message.starts_with("line 2: unknown variant `steal`"),
            "{message}"
        );
        let broken = History::parse("{\"type\":\"final\"").expect_err("not JSON");
        assert!(broken.to_string().starts_with("line 1: "), "{broken}");
        let key = History::parse(r#"{"type":"init","balances":{"one":1}}"#)
            .expect_err("account keys are numbers");
        assert!(
            key.to_string()
                .contains("account \"one\" is not an account id"),
            "{key}"
        );
    }

    #[test]
    fn writer_round_trips() {
        let events = vec![
            Event::Init {
                balances: BTreeMap::from([(1, 10)]),
                min_balances: BTreeMap::new(),
            },
            Event::Invoke {
                process: 0,
                time_us: 1,
                op: Op::Read { accounts: vec![1] },
            },
            Event::Ok {
                process: 0,
                time_us: 2,
                result: OpResult::read(BTreeMap::from([(1, 10)])),
            },
            Event::Final {
                branch: 1,
                balances: BTreeMap::from([(1, 10)]),
                digest: None,
            },
        ];
        let mut writer = HistoryWriter::new(Vec::new());
        for event in &events {
            writer.write(event).expect("write to memory");
        }
        let text = String::from_utf8(writer.into_inner()).expect("utf-8");
        assert_eq!(
            text.lines().nth(2),
            Some(r#"{"type":"ok","process":0,"time_us":2,"result":{"balances":{"1":10}}}"#)
        );
        let history = History::parse(&text).expect("parses");
        assert_eq!(history.events().cloned().collect::<Vec<_>>(), events);
        passes(&text);
    }

    #[test]
    fn search_bound_reports_inconclusive() {
        let history = History::parse(DOC_EXAMPLE).expect("parses");
        let found = check_with(
            &history,
            &Limits {
                search_steps_max: 1,
            },
        )
        .expect_err("one step is not enough");
        assert!(
            matches!(
                found,
                Violation::Inconclusive {
                    search_steps: 1,
                    ..
                }
            ),
            "{found}"
        );
    }

    /// xorshift64: deterministic test histories without a dependency.
    struct Random(u64);

    impl Random {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    /// A linearizable history on one account: `processes` customers, `ops` operations with
    /// overlapping random intervals, each taking effect at a random instant inside its interval;
    /// `info_per_mille` of them are indeterminate (and take effect half the time).
    fn generated_history(processes: u64, ops: u64, info_per_mille: u64, seed: u64) -> Vec<Event> {
        struct Planned {
            process: u64,
            call: u64,
            ret: u64,
            at: u64,
            op: Op,
        }
        let mut random = Random(seed);
        let mut planned = Vec::new();
        for process in 0..processes {
            let mut time = random.below(100);
            for _ in 0..ops / processes {
                let duration = 1 + random.below(200);
                let op = match random.below(10) {
                    0..=3 => Op::Deposit {
                        account: 1,
                        amount: 1 + random.below(100) as i64,
                    },
                    4..=6 => Op::Withdraw {
                        account: 1,
                        amount: 1 + random.below(150) as i64,
                    },
                    _ => Op::Read { accounts: vec![1] },
                };
                planned.push(Planned {
                    process,
                    call: time,
                    ret: time + duration,
                    at: time * 64 + random.below(duration * 64),
                    op,
                });
                time += duration + random.below(50);
            }
        }
        planned.sort_by_key(|p| p.at);
        let mut balance = 1000i64;
        let mut events = Vec::new();
        for p in &planned {
            let indeterminate = random.below(1000) < info_per_mille;
            let takes_effect = !indeterminate || random.below(2) == 0;
            let completion = match &p.op {
                Op::Deposit { amount, .. } => {
                    if takes_effect {
                        balance += amount;
                    }
                    Event::Ok {
                        process: p.process,
                        time_us: p.ret,
                        result: OpResult::balance(balance),
                    }
                }
                Op::Withdraw { amount, .. } if balance - amount < 0 => Event::Fail {
                    process: p.process,
                    time_us: p.ret,
                    observation: Some(Observation::InsufficientFunds {
                        balance: Some(balance),
                    }),
                    error: None,
                },
                Op::Withdraw { amount, .. } => {
                    if takes_effect {
                        balance -= amount;
                    }
                    Event::Ok {
                        process: p.process,
                        time_us: p.ret,
                        result: OpResult::balance(balance),
                    }
                }
                _ => Event::Ok {
                    process: p.process,
                    time_us: p.ret,
                    result: OpResult::read(BTreeMap::from([(1, balance)])),
                },
            };
            let completion = if indeterminate {
                Event::Info {
                    process: p.process,
                    time_us: p.ret,
                    error: None,
                }
            } else {
                completion
            };
            let invoke = Event::Invoke {
                process: p.process,
                time_us: p.call,
                op: p.op.clone(),
            };
            events.push((p.call, 1, invoke));
            events.push((p.ret, 0, completion));
        }
        // Completions before invokes at the same time: a process's next invoke may share it.
        events.sort_by_key(|(time, order, _)| (*time, *order));
        let mut history = vec![Event::Init {
            balances: BTreeMap::from([(1, 1000)]),
            min_balances: BTreeMap::new(),
        }];
        history.extend(events.into_iter().map(|(_, _, event)| event));
        history.push(Event::Final {
            branch: 1,
            balances: BTreeMap::from([(1, balance)]),
            digest: None,
        });
        history
    }

    /// Timings (this machine, optimised): 16 processes, 1% indeterminate: 0.05 s; 32
    /// processes, 1% indeterminate: 0.6 s; 64 processes, none indeterminate: 1.4 s. In the
    /// unoptimised test build about ten times that, so the 64-process case is kept smaller.
    #[test]
    fn ten_thousand_operations_by_16_processes_on_one_account() {
        let history = History::from_events(generated_history(16, 10_000, 10, 0x5eed));
        let summary = passes_history(&history);
        assert_eq!(summary.operations, 10_000);
        assert!(summary.indeterminate > 50, "{summary}");
    }

    #[test]
    fn two_thousand_operations_by_64_processes_on_one_account() {
        let history = History::from_events(generated_history(64, 2_048, 0, 0x5eed));
        assert_eq!(passes_history(&history).operations, 2_048);
    }

    fn passes_history(history: &History) -> Summary {
        match check(history) {
            Ok(summary) => summary,
            Err(violation) => panic!("expected a pass: {violation}"),
        }
    }

    #[test]
    fn generated_history_with_one_wrong_read_is_refuted() {
        let mut events = generated_history(8, 400, 10, 7);
        // The middle read sees one unit more than the balance it really had.
        let reads: Vec<usize> = (0..events.len())
            .filter(
                |&i| matches!(&events[i], Event::Ok { result, .. } if result.balances.is_some()),
            )
            .collect();
        let Event::Ok { result, .. } = &mut events[reads[reads.len() / 2]] else {
            unreachable!("filtered on reads");
        };
        let Some(balance) = result.balances.as_mut().and_then(|b| b.get_mut(&1)) else {
            panic!("a generated read reads account 1");
        };
        *balance += 1;
        let found = check(&History::from_events(events)).expect_err("refuted");
        assert!(
            matches!(found, Violation::NotLinearizable { account: 1, .. }),
            "{found}"
        );
    }
}
