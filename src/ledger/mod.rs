//! The ledger: the bank's pure, deterministic state machine.
//!
//! Every branch holds one `Ledger` and applies the same [`Proposal`]s in the same (Raft log)
//! order, so every branch holds the same balances. Applying does no I/O, reads no clock, draws
//! no random number and never depends on hash-map iteration order (every map is a `BTreeMap`,
//! the accounts a sorted [`Accounts`]):
//! that is what makes replicas identical. Business failures (insufficient funds, a balance over
//! its limit, an unknown account) are [`Outcome`]s, not errors: they are replicated results like
//! any other and never make replicas diverge.
//!
//! # Accounts and money
//!
//! Money is integer minor units, never floats. A balance is an `i64` within the account's
//! `balance_min..=balance_max`, where `balance_min = -overdraft_limit` (`0`: no overdraft, the
//! default) and `balance_max >= 0`. Amounts in commands are `u64`; arithmetic is done in `i128`
//! (where `i64 ± u64` cannot overflow) and checked against the limits before anything changes,
//! so a huge amount is a refusal ([`Outcome::InvalidAmount`] or a limit outcome), never a panic
//! or a wrap. A [`Command::Transfer`] moves money between two accounts atomically: it either
//! changes both balances or neither.
//!
//! The original course API's account, [`ORIGINAL_ACCOUNT`], is opened with
//! `balance_max = ORIGINAL_BALANCE_MAX` (`i32::MAX`, its wire format) and no overdraft.
//!
//! # Invariants
//!
//! The ledger asserts its invariants as it applies (TigerBeetle-style: assertions are
//! documentation that runs). A broken invariant means a bug in this module, and a replica that
//! continued past it would spread wrong balances, so it panics instead:
//! - every balance is within `balance_min..=balance_max`, with `balance_min <= 0 <= balance_max`;
//! - the sum of all balances equals money opened + deposited − withdrawn (transfers move money,
//!   they never make or destroy it); sums are kept in `u128`/`i128` with checked arithmetic;
//! - the request log holds at most [`REQUEST_IDS_MAX`] ids and [`ORIGINS_MAX`] origins.
//!
//! After every apply, in constant time: the accounts it touched are within their limits, a
//! transfer left the two balances' sum unchanged, and the running sum of balances equals the
//! running totals. Every [`FULL_CHECK_EVERY`] applies (and on demand, e.g. after a snapshot is
//! restored) every account is re-summed and re-checked: a full pass per apply would cost
//! O(accounts) per batch item, a million steps per item with a million accounts.
//!
//! # Request ids: exactly once, within bounds
//!
//! Every command arrives in a [`Proposal`] with a [`RequestId`] `{origin, sequence}`, created by
//! the proposer and reused when it retries (after a timeout or a leader change). **A proposer
//! must use increasing sequences within its origin** (gaps are fine); see below for why.
//!
//! - The ledger remembers the last [`REQUEST_IDS_MAX`] request ids it applied, in log order,
//!   each with a 128-bit fingerprint of its command (FNV-1a over a canonical byte encoding,
//!   [`Command::fingerprint`]) and its outcome. Command bodies are not stored: a batch would
//!   otherwise keep thousands of commands per id.
//! - The same id with the same command answers the first outcome and applies nothing.
//! - The same id with a different command answers [`Outcome::RequestIdReused`] ("exists with
//!   different fields") and applies nothing.
//! - When an id falls out of the window, its origin's *watermark* (the highest forgotten
//!   sequence) rises to it. A proposal whose sequence is at or below its origin's watermark and
//!   is not remembered answers [`Outcome::RequestIdExpired`] and applies nothing: the ledger
//!   can no longer tell whether it was applied, so it refuses rather than risk applying twice.
//!   That is why sequences must increase: a *new* request with a sequence below an old,
//!   forgotten one would be refused as expired.
//! - At most [`ORIGINS_MAX`] origins are remembered. When a new origin arrives and the table is
//!   full, the origin that recorded a request least recently is forgotten whole: its remembered
//!   ids *and its watermark*. A retry from that origin would then apply again, so it takes
//!   65,536 other proposers (origins are one per branch incarnation) to appear between a request
//!   and its retry for that to happen; branches retry for seconds.
//! - Fingerprints collide with probability about 2⁻¹²⁸ per reused id; a collision would answer
//!   a different command's outcome instead of `RequestIdReused`.
//!
//! # Batches
//!
//! [`Command::Batch`] carries up to [`BATCH_ITEMS_MAX`] proposals, each with its own request id.
//! Items apply in order, each on its own: each is deduplicated by its own id, and a failed item
//! does not stop the items after it ([`Outcome::Batch`] lists each item's outcome). An empty or
//! oversized batch, a batch nested in a batch, or an item that reuses the batch's own request id
//! is refused whole with [`Outcome::InvalidBatch`] and nothing applied. Every item takes a slot
//! in the request-id window. Replaying a batch answers each item's remembered outcome (an item
//! that has since left the window answers `RequestIdExpired`) and applies nothing.
//!
//! # Where things are
//!
//! This file holds [`Ledger`] itself: applying commands, balances, the state digest and the
//! invariant checks ([`InvariantViolation`]). The rest has a file per concern, all re-exported
//! here: `account.rs` (accounts, ids and limits), `accounts.rs` (every account, held
//! compactly in id order), `command.rs` (what the log carries and
//! answers, and the command fingerprint), `requests.rs` (the request-id window) and
//! `snapshot.rs` (the snapshot encoding); `tests.rs` and `properties.rs` test the whole.

use serde::{Deserialize, Serialize};

mod account;
mod accounts;
mod command;
mod requests;
mod snapshot;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

pub use account::{Account, AccountId, ORIGINAL_ACCOUNT, ORIGINAL_BALANCE_MAX};
pub use accounts::Accounts;
pub use command::{Command, Outcome, Proposal, RequestId, BATCH_ITEMS_MAX};
pub use requests::{ORIGINS_MAX, REQUEST_IDS_MAX};
pub use snapshot::SnapshotError;

use command::Fnv1a128;
use requests::{RememberedOutcome, RequestLog, Seen};

/// All accounts, the running totals the conservation invariant is checked against, and the
/// request log that makes retries safe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    accounts: Accounts,
    /// Opening balances, deposits and withdrawals are never negative: `u128` sums of `u64`
    /// amounts, which would take 2⁶⁴ log entries to overflow.
    opened_total_minor_units: u128,
    deposited_total_minor_units: u128,
    withdrawn_total_minor_units: u128,
    /// The sum of all balances, kept as they change (checked in full every
    /// [`FULL_CHECK_EVERY`] applies).
    #[serde(default)]
    balances_total_minor_units: i128,
    requests: RequestLog,
    /// Applies since the last full invariant check. Not state: when a check runs changes no
    /// balance, only how soon a bug is caught.
    #[serde(skip)]
    applies_since_full_check: Countdown,
}

/// A counter that is not part of the ledger's value: two ledgers with the same accounts,
/// totals and request log are equal whatever it says.
#[derive(Debug, Clone, Copy, Default)]
struct Countdown(u64);

impl PartialEq for Countdown {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Countdown {}

/// A full invariant check (every account re-summed) runs once per this many applies.
pub const FULL_CHECK_EVERY: u64 = 1_024;

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn balance(&self, account: AccountId) -> Option<i64> {
        self.accounts.get(account).map(|a| a.balance_minor_units)
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// The sum of every account's balance, kept as balances change (no walk over accounts).
    pub fn balances_total_minor_units(&self) -> i128 {
        self.balances_total_minor_units
    }

    /// A deterministic 64-bit digest of every account (id, balance, limits) and the money
    /// totals: equal on replicas that applied the same log, for cheap convergence checks. The
    /// request log is not included. Stable across builds and platforms (FNV-1a).
    pub fn state_digest(&self) -> u64 {
        let mut hasher = Fnv1a128::new();
        hasher.write_u64(self.accounts.len() as u64);
        for (id, account) in self.accounts.iter() {
            hasher.write_u64(id);
            hasher.write_i64(account.balance_minor_units);
            hasher.write_i64(account.balance_min_minor_units);
            hasher.write_i64(account.balance_max_minor_units);
        }
        hasher.write_u128(self.opened_total_minor_units);
        hasher.write_u128(self.deposited_total_minor_units);
        hasher.write_u128(self.withdrawn_total_minor_units);
        let digest = hasher.finish();
        // Fold the two halves: truncation is the point.
        ((digest >> 64) as u64) ^ (digest as u64)
    }

    /// Applies a proposal at most once per request id (see the module docs): a remembered id
    /// answers its first outcome and changes nothing. Deterministic.
    pub fn apply_proposal(&mut self, proposal: &Proposal) -> Outcome {
        let fingerprint = proposal.command.fingerprint();
        if let Some(outcome) = self.replayed_outcome(proposal, fingerprint) {
            return outcome;
        }
        let outcome = match &proposal.command {
            Command::Batch(items) => self.apply_batch(items, Some(proposal.request_id)),
            command => self.apply_one(command),
        };
        let remembered = match &outcome {
            // Each item's outcome is remembered under the item's own id: a replay rebuilds the
            // batch's outcome from those, so a batch costs one small entry, not thousands.
            Outcome::Batch(_) => RememberedOutcome::Batch,
            other => RememberedOutcome::Outcome(other.clone()),
        };
        self.requests
            .record(proposal.request_id, fingerprint, remembered);
        self.assert_invariants();
        outcome
    }

    /// Applies one command without remembering a request id for it (a batch's items are still
    /// deduplicated by their own ids). The replicated path is [`Ledger::apply_proposal`]; this
    /// is for tests and tools. Deterministic.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let outcome = match command {
            Command::Batch(items) => self.apply_batch(items, None),
            command => self.apply_one(command),
        };
        self.assert_invariants();
        outcome
    }

    /// The outcome of a proposal whose id is remembered or expired; `None` if it is new.
    fn replayed_outcome(&self, proposal: &Proposal, fingerprint: u128) -> Option<Outcome> {
        match self.requests.lookup(proposal.request_id) {
            Seen::New => None,
            Seen::Expired => Some(Outcome::RequestIdExpired),
            Seen::Remembered(remembered) if remembered.fingerprint != fingerprint => {
                Some(Outcome::RequestIdReused)
            }
            Seen::Remembered(remembered) => match (&remembered.outcome, &proposal.command) {
                (RememberedOutcome::Outcome(outcome), _) => Some(outcome.clone()),
                (RememberedOutcome::Batch, Command::Batch(items)) => Some(Outcome::Batch(
                    items.iter().map(|item| self.replayed_item(item)).collect(),
                )),
                // Same fingerprint, yet a batch against a non-batch: the bodies differ.
                (RememberedOutcome::Batch, _) => Some(Outcome::RequestIdReused),
            },
        }
    }

    /// An item of a batch being replayed: its remembered outcome, never applied again. An item
    /// the ledger no longer knows (out of the window, or its origin forgotten) is expired.
    fn replayed_item(&self, item: &Proposal) -> Outcome {
        match self.requests.lookup(item.request_id) {
            Seen::New | Seen::Expired => Outcome::RequestIdExpired,
            Seen::Remembered(remembered)
                if remembered.fingerprint != item.command.fingerprint() =>
            {
                Outcome::RequestIdReused
            }
            Seen::Remembered(remembered) => match &remembered.outcome {
                RememberedOutcome::Outcome(outcome) => outcome.clone(),
                // An applied batch's id matching an item: items are never batches.
                RememberedOutcome::Batch => Outcome::RequestIdReused,
            },
        }
    }

    /// Validates a batch whole, then applies its items in order, each through the request log.
    fn apply_batch(&mut self, items: &[Proposal], batch_id: Option<RequestId>) -> Outcome {
        if items.is_empty() || items.len() > BATCH_ITEMS_MAX {
            return Outcome::InvalidBatch;
        }
        let malformed = items.iter().any(|item| {
            matches!(item.command, Command::Batch(_)) || Some(item.request_id) == batch_id
        });
        if malformed {
            return Outcome::InvalidBatch;
        }
        let outcomes: Vec<Outcome> = items.iter().map(|item| self.apply_proposal(item)).collect();
        assert_eq!(outcomes.len(), items.len());
        Outcome::Batch(outcomes)
    }

    /// Applies one command that is not a batch.
    fn apply_one(&mut self, command: &Command) -> Outcome {
        match *command {
            Command::Open {
                account,
                balance_minor_units,
                overdraft_limit_minor_units,
                balance_max_minor_units,
            } => self.open(
                account,
                balance_minor_units,
                overdraft_limit_minor_units,
                balance_max_minor_units,
            ),
            Command::Deposit {
                account,
                amount_minor_units,
            } => self.deposit(account, amount_minor_units),
            Command::Withdraw {
                account,
                amount_minor_units,
            } => self.withdraw(account, amount_minor_units),
            Command::Transfer {
                from,
                to,
                amount_minor_units,
            } => self.transfer(from, to, amount_minor_units),
            Command::Batch(_) => unreachable!("batches are applied by apply_batch"),
        }
    }

    fn open(
        &mut self,
        account: AccountId,
        balance: u64,
        overdraft_limit: u64,
        balance_max: u64,
    ) -> Outcome {
        if let Some(existing) = self.accounts.get(account) {
            return Outcome::AccountExists {
                balance_minor_units: existing.balance_minor_units,
            };
        }
        let (Ok(balance_signed), Ok(overdraft_limit_signed), Ok(balance_max_signed)) = (
            i64::try_from(balance),
            i64::try_from(overdraft_limit),
            i64::try_from(balance_max),
        ) else {
            return Outcome::InvalidAmount;
        };
        if balance_signed > balance_max_signed {
            return Outcome::InvalidAmount;
        }
        // 0 <= limit <= i64::MAX, so its negation fits.
        let Some(balance_min_signed) = overdraft_limit_signed.checked_neg() else {
            return Outcome::InvalidAmount;
        };
        let inserted = self.accounts.insert_new(
            account,
            &Account {
                balance_minor_units: balance_signed,
                balance_min_minor_units: balance_min_signed,
                balance_max_minor_units: balance_max_signed,
            },
        );
        assert!(inserted, "account {account} was not open above");
        total_add(&mut self.opened_total_minor_units, balance);
        self.balances_total_minor_units += i128::from(balance_signed);
        Outcome::Opened {
            balance_minor_units: balance_signed,
        }
    }

    fn deposit(&mut self, account: AccountId, amount: u64) -> Outcome {
        if amount == 0 {
            return Outcome::InvalidAmount;
        }
        let Some(entry) = self.accounts.get(account) else {
            return Outcome::UnknownAccount { account };
        };
        match entry.balance_after(i128::from(amount)) {
            Ok(balance) => {
                assert_eq!(
                    i128::from(balance),
                    i128::from(entry.balance_minor_units) + i128::from(amount)
                );
                let set = self.accounts.set_balance(account, balance);
                assert!(set, "account {account} was looked up above");
                total_add(&mut self.deposited_total_minor_units, amount);
                self.balances_total_minor_units += i128::from(amount);
                Outcome::Deposited {
                    balance_minor_units: balance,
                }
            }
            Err(_) => Outcome::BalanceLimitExceeded {
                balance_minor_units: entry.balance_minor_units,
            },
        }
    }

    fn withdraw(&mut self, account: AccountId, amount: u64) -> Outcome {
        if amount == 0 {
            return Outcome::InvalidAmount;
        }
        let Some(entry) = self.accounts.get(account) else {
            return Outcome::UnknownAccount { account };
        };
        match entry.balance_after(-i128::from(amount)) {
            Ok(balance) => {
                assert_eq!(
                    i128::from(balance),
                    i128::from(entry.balance_minor_units) - i128::from(amount)
                );
                let set = self.accounts.set_balance(account, balance);
                assert!(set, "account {account} was looked up above");
                total_add(&mut self.withdrawn_total_minor_units, amount);
                self.balances_total_minor_units -= i128::from(amount);
                Outcome::Withdrawn {
                    balance_minor_units: balance,
                }
            }
            Err(_) => Outcome::InsufficientFunds {
                balance_minor_units: entry.balance_minor_units,
            },
        }
    }

    /// All checks first, then both balances change: a refused transfer changes nothing.
    fn transfer(&mut self, from: AccountId, to: AccountId, amount: u64) -> Outcome {
        if amount == 0 || from == to {
            return Outcome::InvalidAmount;
        }
        let Some(from_account) = self.accounts.get(from) else {
            return Outcome::UnknownAccount { account: from };
        };
        let Some(to_account) = self.accounts.get(to) else {
            return Outcome::UnknownAccount { account: to };
        };
        let delta = i128::from(amount);
        let Ok(from_balance) = from_account.balance_after(-delta) else {
            return Outcome::InsufficientFunds {
                balance_minor_units: from_account.balance_minor_units,
            };
        };
        let Ok(to_balance) = to_account.balance_after(delta) else {
            return Outcome::BalanceLimitExceeded {
                balance_minor_units: to_account.balance_minor_units,
            };
        };
        assert_eq!(
            i128::from(from_balance) + i128::from(to_balance),
            i128::from(from_account.balance_minor_units)
                + i128::from(to_account.balance_minor_units),
            "ledger invariant broken: a transfer made or destroyed money"
        );
        for (id, account, balance) in [
            (from, &from_account, from_balance),
            (to, &to_account, to_balance),
        ] {
            assert!(
                (account.balance_min_minor_units..=account.balance_max_minor_units)
                    .contains(&balance),
                "ledger invariant broken: transfer takes account {id} out of its limits"
            );
            let set = self.accounts.set_balance(id, balance);
            assert!(set, "account {id} was looked up above");
        }
        Outcome::Transferred {
            from_balance_minor_units: from_balance,
            to_balance_minor_units: to_balance,
        }
    }

    /// The per-apply check: constant time, plus a full check every [`FULL_CHECK_EVERY`]
    /// applies. Panics if an invariant does not hold (see the module documentation).
    fn assert_invariants(&mut self) {
        let expected = self.expected_total();
        assert_eq!(
            Some(self.balances_total_minor_units),
            expected,
            "ledger invariant broken: the running sum of balances disagrees with opened + deposited - withdrawn"
        );
        self.applies_since_full_check.0 += 1;
        if self.applies_since_full_check.0 >= FULL_CHECK_EVERY {
            self.applies_since_full_check.0 = 0;
            self.assert_invariants_fully();
        }
    }

    /// Opened + deposited − withdrawn, if it fits.
    fn expected_total(&self) -> Option<i128> {
        self.opened_total_minor_units
            .checked_add(self.deposited_total_minor_units)
            .and_then(|total| i128::try_from(total).ok())
            .zip(i128::try_from(self.withdrawn_total_minor_units).ok())
            .and_then(|(credits, debits)| credits.checked_sub(debits))
    }

    /// Re-checks every account and re-sums every balance (O(accounts)). Panics if an
    /// invariant does not hold: see the module documentation for why.
    pub fn assert_invariants_fully(&self) {
        if let Err(broken) = self.check_invariants_fully() {
            panic!("ledger invariant broken: {broken}");
        }
    }

    /// [`Ledger::assert_invariants_fully`] as a result: what is broken, in words. For ledgers
    /// that come from outside this replica's own applies (a decoded snapshot), where a broken
    /// invariant is damaged input to refuse, not a bug to stop on.
    pub fn check_invariants_fully(&self) -> Result<(), InvariantViolation> {
        if !self.accounts.is_well_formed() {
            return Err(InvariantViolation::AccountsMalformed);
        }
        let mut sum: i128 = 0;
        for (id, account) in self.accounts.iter() {
            if account.balance_min_minor_units > 0 || account.balance_max_minor_units < 0 {
                return Err(InvariantViolation::LimitsExcludeZero {
                    account: id,
                    balance_min_minor_units: account.balance_min_minor_units,
                    balance_max_minor_units: account.balance_max_minor_units,
                });
            }
            if account.balance_minor_units < account.balance_min_minor_units
                || account.balance_minor_units > account.balance_max_minor_units
            {
                return Err(InvariantViolation::BalanceOutsideLimits {
                    account: id,
                    balance_minor_units: account.balance_minor_units,
                    balance_min_minor_units: account.balance_min_minor_units,
                    balance_max_minor_units: account.balance_max_minor_units,
                });
            }
            sum = sum
                .checked_add(i128::from(account.balance_minor_units))
                .ok_or(InvariantViolation::BalanceSumOverflow)?;
        }
        if sum != self.balances_total_minor_units {
            return Err(InvariantViolation::RunningSumDiffers {
                sum_minor_units: sum,
                running_sum_minor_units: self.balances_total_minor_units,
            });
        }
        if Some(sum) != self.expected_total() {
            return Err(InvariantViolation::MoneyNotConserved {
                sum_minor_units: sum,
                opened_total_minor_units: self.opened_total_minor_units,
                deposited_total_minor_units: self.deposited_total_minor_units,
                withdrawn_total_minor_units: self.withdrawn_total_minor_units,
            });
        }
        self.requests.check_invariants()
    }
}

/// Adds a `u64` amount to a running total. Overflow would take 2⁶⁴ maximal amounts, i.e. more
/// log entries than can exist, so it is a broken invariant, not an input error.
fn total_add(total: &mut u128, amount: u64) {
    *total = total
        .checked_add(u128::from(amount))
        .expect("ledger invariant broken: a money total overflows u128");
}

/// A broken ledger invariant, with the figures that break it: what
/// [`Ledger::check_invariants_fully`] finds. Its text is the message that
/// [`Ledger::assert_invariants_fully`] panics with (after "ledger invariant broken: ") and that
/// a refused snapshot reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantViolation {
    /// An account's limits do not hold zero: `balance_min <= 0 <= balance_max` is broken.
    #[error("account {account} has limits {balance_min_minor_units}..={balance_max_minor_units}")]
    LimitsExcludeZero {
        account: AccountId,
        balance_min_minor_units: i64,
        balance_max_minor_units: i64,
    },
    /// An account's balance is outside `balance_min..=balance_max`.
    #[error("account {account} holds {balance_minor_units} outside its limits {balance_min_minor_units}..={balance_max_minor_units}")]
    BalanceOutsideLimits {
        account: AccountId,
        balance_minor_units: i64,
        balance_min_minor_units: i64,
        balance_max_minor_units: i64,
    },
    /// The accounts' compact layout is broken (a bug in `accounts.rs`, never input: a
    /// snapshot is decoded through the same inserts as applies).
    #[error("the accounts' layout is inconsistent")]
    AccountsMalformed,
    /// The balances do not even sum in `i128`.
    #[error("the sum of balances overflows i128")]
    BalanceSumOverflow,
    /// The balances' sum disagrees with the running sum kept as they change.
    #[error("balances sum to {sum_minor_units}, but the running sum is {running_sum_minor_units}")]
    RunningSumDiffers {
        sum_minor_units: i128,
        running_sum_minor_units: i128,
    },
    /// Money was made or destroyed: the balances' sum is not opened + deposited − withdrawn.
    #[error("balances sum to {sum_minor_units}, but opened {opened_total_minor_units} + deposited {deposited_total_minor_units} - withdrawn {withdrawn_total_minor_units}")]
    MoneyNotConserved {
        sum_minor_units: i128,
        opened_total_minor_units: u128,
        deposited_total_minor_units: u128,
        withdrawn_total_minor_units: u128,
    },
    /// The request log remembers more ids than its limit.
    #[error("the request log holds {ids} ids, over its limit of {limit}")]
    RequestIdsOverLimit { ids: usize, limit: usize },
    /// The request log's count of remembered ids exceeds the ids in its eviction order.
    #[error("the request log counts {remembered} remembered ids but orders only {ordered}")]
    RememberedOverOrdered { remembered: usize, ordered: usize },
    /// The request log remembers more origins than its limit.
    #[error("the request log holds {origins} origins, over its limit of {limit}")]
    OriginsOverLimit { origins: usize, limit: usize },
    /// The request log's origins and its index of them by recorded tick disagree.
    #[error("the request log holds {origins} origins but {recorded_ticks} recorded ticks")]
    OriginsUnlikeTicks {
        origins: usize,
        recorded_ticks: usize,
    },
}
