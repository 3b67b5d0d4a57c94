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
//! JSON lines, one [`HistoryEvent`] per line (blank lines are skipped). Each line is an object
//! tagged by `"type"`:
//!
//! - `init` (optional, at most once, before every invoke): accounts that exist before the
//!   history, `{"type":"init","balances":{"1":100},"balances_min":{"1":-50}}`
//!   (`balances_min` optional, default 0 per account; the older spelling `min_balances` is
//!   read too, as `min_balance` is in `open`).
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
//! | `open` | `account`, `balance`, `balance_min` (default 0) | `{"balance": b}` |
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
//! is `Option<(balance, balance_min)>` (`None`: not opened yet).
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
//!
//! # Layout
//!
//! - `history`: the format above ([`HistoryEvent`], [`Op`], [`OpResult`], [`Observation`]),
//!   [`HistoryWriter`] and [`History`].
//! - `violation`: [`Violation`], the [`Subject`] / [`OpRef`] its messages name, and the
//!   [`Blame`] it puts on operations and final states (for `bank check --html`).
//! - `pairing` (check 1), `minimums` (2), `convergence` (3), `linearizability` (4, with
//!   `model`, `search`, `event_list` and `memo`), `conservation` (5).
//! - This file: [`check`] / [`check_with`], which run them in order, [`Limits`] and [`Summary`].

mod conservation;
mod convergence;
mod event_list;
mod history;
mod linearizability;
mod memo;
mod minimums;
mod model;
mod pairing;
mod search;
mod violation;

#[cfg(test)]
mod tests;

use std::fmt;

pub use history::{
    BranchId, History, HistoryError, HistoryEvent, HistoryWriter, Observation, Op, OpResult,
    ProcessId,
};
pub use violation::{Blame, OpRef, Subject, Violation};

use conservation::check_conservation;
use convergence::check_convergence;
use linearizability::check_linearizable;
use minimums::check_minimums;
use pairing::{pair_operations, Outcome};

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
