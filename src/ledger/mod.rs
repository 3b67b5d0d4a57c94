//! The ledger: the bank's pure, deterministic state machine.
//!
//! Every branch holds one `Ledger` and applies the same [`Proposal`]s in the same (Raft log)
//! order, so every branch holds the same balances. Applying does no I/O, reads no clock, draws
//! no random number and never depends on hash-map iteration order (every map is a `BTreeMap`):
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
//! documentation that runs). A broken invariant means a bug in this file, and a replica that
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

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

mod snapshot;
pub use snapshot::SnapshotError;

/// Identifies an account. The original course project keeps a single shared balance: that is
/// [`ORIGINAL_ACCOUNT`].
pub type AccountId = u64;

/// The account behind the original `Branch.MsgDelivery` API.
pub const ORIGINAL_ACCOUNT: AccountId = 0;

/// The original API carries balances as `int32`, so its account can never hold more.
pub const ORIGINAL_BALANCE_MAX: u64 = i32::MAX as u64;

/// At most this many request ids are remembered (oldest forgotten first, in log order).
pub const REQUEST_IDS_MAX: usize = 100_000;

/// At most this many origins are remembered (the least recently recorded forgotten first).
pub const ORIGINS_MAX: usize = 65_536;

/// At most this many items in one [`Command::Batch`]. TigerBeetle's number: as many 128-byte
/// items as fit a 1 MiB message after its header. It bounds one log entry and one apply.
pub const BATCH_ITEMS_MAX: usize = 8_190;

/// Identifies one request for exactly-once application: `origin` is unique per proposer
/// incarnation (random), `sequence` counts that proposer's requests and must increase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub origin: u64,
    pub sequence: u64,
}

/// What goes into the Raft log: a command and the id that makes retrying it safe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub request_id: RequestId,
    pub command: Command,
}

/// A state change, proposed through Raft and applied by every branch in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create an account with an opening balance, an overdraft limit (its `balance_min` is
    /// `-overdraft_limit_minor_units`) and a `balance_max`. Refused if it exists; refused with
    /// `InvalidAmount` if a figure does not fit `i64` or the opening balance is above the max.
    Open {
        account: AccountId,
        balance_minor_units: u64,
        #[serde(default)]
        overdraft_limit_minor_units: u64,
        balance_max_minor_units: u64,
    },
    Deposit {
        account: AccountId,
        amount_minor_units: u64,
    },
    Withdraw {
        account: AccountId,
        amount_minor_units: u64,
    },
    /// Moves money from one account to another, atomically.
    Transfer {
        from: AccountId,
        to: AccountId,
        amount_minor_units: u64,
    },
    /// Up to [`BATCH_ITEMS_MAX`] proposals applied in order, each on its own (see module docs).
    Batch(Vec<Proposal>),
}

/// The replicated result of applying one command (or one non-command log entry).
///
/// Refusals change nothing. Where a refusal carries a balance, it is the balance of the
/// account that refused: the withdrawing or transfer's `from` account for
/// `InsufficientFunds`, the depositing or transfer's `to` account for `BalanceLimitExceeded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Opened {
        balance_minor_units: i64,
    },
    Deposited {
        balance_minor_units: i64,
    },
    Withdrawn {
        balance_minor_units: i64,
    },
    Transferred {
        from_balance_minor_units: i64,
        to_balance_minor_units: i64,
    },
    /// The balance would go below the account's `balance_min`.
    InsufficientFunds {
        balance_minor_units: i64,
    },
    /// The balance would go above the account's `balance_max`.
    BalanceLimitExceeded {
        balance_minor_units: i64,
    },
    /// `Open` of an account that exists.
    AccountExists {
        balance_minor_units: i64,
    },
    /// The named account does not exist (for a transfer, `from` is checked first).
    UnknownAccount {
        account: AccountId,
    },
    /// A request id remembered with a different command ("exists with different fields").
    RequestIdReused,
    /// A request id at or below its origin's watermark and no longer remembered: it may have
    /// been applied, so it is not applied again.
    RequestIdExpired,
    /// A zero amount, a transfer to its own account, or an `Open` whose figures do not fit
    /// `i64` or whose opening balance is above its max.
    InvalidAmount,
    /// An empty or oversized batch, a nested batch, or an item reusing the batch's own id.
    InvalidBatch,
    /// One outcome per batch item, in order.
    Batch(Vec<Outcome>),
    /// Log entries that carry no command (Raft's blank and membership entries).
    NoCommand,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance_minor_units: i64,
    /// `<= 0`: minus the overdraft limit.
    pub balance_min_minor_units: i64,
    /// `>= 0`.
    pub balance_max_minor_units: i64,
}

/// Why a balance change was refused.
enum LimitBreach {
    BelowMin,
    AboveMax,
}

impl Account {
    /// The balance after adding `delta`, if it stays within this account's limits. `i128`
    /// holds any `i64 ± u64` exactly.
    fn balance_after(&self, delta_minor_units: i128) -> Result<i64, LimitBreach> {
        let after = i128::from(self.balance_minor_units)
            .checked_add(delta_minor_units)
            .ok_or(if delta_minor_units < 0 {
                LimitBreach::BelowMin
            } else {
                LimitBreach::AboveMax
            })?;
        if after < i128::from(self.balance_min_minor_units) {
            return Err(LimitBreach::BelowMin);
        }
        if after > i128::from(self.balance_max_minor_units) {
            return Err(LimitBreach::AboveMax);
        }
        // Within [min, max], both `i64`: the conversion cannot fail.
        i64::try_from(after).map_err(|_| LimitBreach::AboveMax)
    }
}

/// All accounts, the running totals the conservation invariant is checked against, and the
/// request log that makes retries safe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    accounts: BTreeMap<AccountId, Account>,
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
        self.accounts.get(&account).map(|a| a.balance_minor_units)
    }

    pub fn accounts(&self) -> &BTreeMap<AccountId, Account> {
        &self.accounts
    }

    /// A deterministic 64-bit digest of every account (id, balance, limits) and the money
    /// totals: equal on replicas that applied the same log, for cheap convergence checks. The
    /// request log is not included. Stable across builds and platforms (FNV-1a).
    pub fn state_digest(&self) -> u64 {
        let mut hasher = Fnv1a128::new();
        hasher.write_u64(self.accounts.len() as u64);
        for (id, account) in &self.accounts {
            hasher.write_u64(*id);
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
        if let Some(existing) = self.accounts.get(&account) {
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
        self.accounts.insert(
            account,
            Account {
                balance_minor_units: balance_signed,
                balance_min_minor_units: balance_min_signed,
                balance_max_minor_units: balance_max_signed,
            },
        );
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
        let Some(entry) = self.accounts.get_mut(&account) else {
            return Outcome::UnknownAccount { account };
        };
        match entry.balance_after(i128::from(amount)) {
            Ok(balance) => {
                assert_eq!(
                    i128::from(balance),
                    i128::from(entry.balance_minor_units) + i128::from(amount)
                );
                entry.balance_minor_units = balance;
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
        let Some(entry) = self.accounts.get_mut(&account) else {
            return Outcome::UnknownAccount { account };
        };
        match entry.balance_after(-i128::from(amount)) {
            Ok(balance) => {
                assert_eq!(
                    i128::from(balance),
                    i128::from(entry.balance_minor_units) - i128::from(amount)
                );
                entry.balance_minor_units = balance;
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
        let Some(from_account) = self.accounts.get(&from) else {
            return Outcome::UnknownAccount { account: from };
        };
        let Some(to_account) = self.accounts.get(&to) else {
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
        for (id, balance) in [(from, from_balance), (to, to_balance)] {
            match self.accounts.get_mut(&id) {
                Some(account) => {
                    assert!(
                        (account.balance_min_minor_units..=account.balance_max_minor_units)
                            .contains(&balance),
                        "ledger invariant broken: transfer takes account {id} out of its limits"
                    );
                    account.balance_minor_units = balance;
                }
                None => unreachable!("account {id} was looked up above"),
            }
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
    pub fn check_invariants_fully(&self) -> Result<(), String> {
        let mut sum: i128 = 0;
        for (id, account) in &self.accounts {
            if account.balance_min_minor_units > 0 || account.balance_max_minor_units < 0 {
                return Err(format!(
                    "account {id} has limits {}..={}",
                    account.balance_min_minor_units, account.balance_max_minor_units
                ));
            }
            if account.balance_minor_units < account.balance_min_minor_units
                || account.balance_minor_units > account.balance_max_minor_units
            {
                return Err(format!(
                    "account {id} holds {} outside its limits {}..={}",
                    account.balance_minor_units,
                    account.balance_min_minor_units,
                    account.balance_max_minor_units
                ));
            }
            sum = sum
                .checked_add(i128::from(account.balance_minor_units))
                .ok_or_else(|| "the sum of balances overflows i128".to_string())?;
        }
        if sum != self.balances_total_minor_units {
            return Err(format!(
                "balances sum to {sum}, but the running sum is {}",
                self.balances_total_minor_units
            ));
        }
        if Some(sum) != self.expected_total() {
            return Err(format!(
                "balances sum to {sum}, but opened {} + deposited {} - withdrawn {}",
                self.opened_total_minor_units,
                self.deposited_total_minor_units,
                self.withdrawn_total_minor_units
            ));
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

/// What the request log holds for one request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RememberedRequest {
    /// When it was recorded (the request log's counter), to tell a live entry from a stale one.
    tick: u64,
    /// [`Command::fingerprint`] of the command first applied under this id.
    fingerprint: u128,
    outcome: RememberedOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum RememberedOutcome {
    Outcome(Outcome),
    /// An applied batch: its items' outcomes are remembered under their own ids.
    Batch,
}

/// The requests of one origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct OriginRequests {
    /// sequence -> what is remembered.
    remembered: BTreeMap<u64, RememberedRequest>,
    /// The highest sequence forgotten from the window: at or below it, an unknown sequence
    /// is expired.
    forgotten_sequence_max: Option<u64>,
    /// The tick of this origin's latest recorded request, for forgetting origins.
    recorded_tick_last: u64,
}

/// How many request ids and origins the log keeps. Constants in production; small in tests so
/// that eviction is exercised cheaply. Not serialised: a snapshot takes this build's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RequestLimits {
    request_ids_max: usize,
    origins_max: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            request_ids_max: REQUEST_IDS_MAX,
            origins_max: ORIGINS_MAX,
        }
    }
}

/// Remembered request ids (see the module docs). Nested maps of integer keys so the ledger
/// serialises to plain JSON in snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RequestLog {
    /// origin -> its requests.
    origins: BTreeMap<u64, OriginRequests>,
    /// recorded_tick_last -> origin: the least recently recorded origin comes first.
    origins_by_recorded_tick: BTreeMap<u64, u64>,
    /// Recorded ids with their tick, oldest first, for eviction. Entries of a forgotten origin
    /// stay until they reach the front, where their tick no longer matches and they are dropped.
    order: VecDeque<(u64, RequestId)>,
    /// How many ids `origins` remembers in all.
    remembered_count: usize,
    /// Counts recorded requests; a request's tick is unique.
    tick: u64,
    #[serde(skip)]
    limits: RequestLimits,
}

/// What the request log knows of an id.
enum Seen<'a> {
    New,
    Remembered(&'a RememberedRequest),
    Expired,
}

impl RequestLog {
    fn lookup(&self, id: RequestId) -> Seen<'_> {
        let Some(origin) = self.origins.get(&id.origin) else {
            return Seen::New;
        };
        if let Some(remembered) = origin.remembered.get(&id.sequence) {
            return Seen::Remembered(remembered);
        }
        match origin.forgotten_sequence_max {
            Some(watermark) if id.sequence <= watermark => Seen::Expired,
            _ => Seen::New,
        }
    }

    /// Remembers a request applied under a new id, then forgets the oldest past the limits.
    fn record(&mut self, id: RequestId, fingerprint: u128, outcome: RememberedOutcome) {
        // Not `Seen::New` alone: a batch's items may raise the watermark of the batch's own
        // origin past the batch's sequence while it applies; remembering wins over it.
        assert!(
            !matches!(self.lookup(id), Seen::Remembered(_)),
            "recording a remembered id"
        );
        self.tick = self
            .tick
            .checked_add(1)
            .expect("request log invariant broken: 2^64 requests recorded");
        let tick = self.tick;
        if !self.origins.contains_key(&id.origin) {
            while self.origins.len() >= self.limits.origins_max {
                self.forget_oldest_origin();
            }
            self.origins.insert(id.origin, OriginRequests::default());
        }
        let Some(origin) = self.origins.get_mut(&id.origin) else {
            unreachable!("origin {} was inserted above", id.origin);
        };
        self.origins_by_recorded_tick
            .remove(&origin.recorded_tick_last);
        origin.recorded_tick_last = tick;
        self.origins_by_recorded_tick.insert(tick, id.origin);
        let previous = origin.remembered.insert(
            id.sequence,
            RememberedRequest {
                tick,
                fingerprint,
                outcome,
            },
        );
        assert!(previous.is_none());
        self.remembered_count += 1;
        self.order.push_back((tick, id));
        while self.order.len() > self.limits.request_ids_max {
            self.forget_oldest_request();
        }
    }

    fn forget_oldest_request(&mut self) {
        let Some((tick, id)) = self.order.pop_front() else {
            return;
        };
        let Some(origin) = self.origins.get_mut(&id.origin) else {
            return; // The origin was forgotten whole.
        };
        if origin.remembered.get(&id.sequence).map(|r| r.tick) != Some(tick) {
            return; // A stale entry of a forgotten, since re-created origin.
        }
        origin.remembered.remove(&id.sequence);
        self.remembered_count -= 1;
        origin.forgotten_sequence_max = Some(
            origin
                .forgotten_sequence_max
                .map_or(id.sequence, |watermark| watermark.max(id.sequence)),
        );
    }

    fn forget_oldest_origin(&mut self) {
        let Some((_, origin_id)) = self.origins_by_recorded_tick.pop_first() else {
            unreachable!("a full origin table has a least recently recorded origin");
        };
        let Some(origin) = self.origins.remove(&origin_id) else {
            unreachable!("origin {origin_id} is indexed by its tick");
        };
        self.remembered_count -= origin.remembered.len();
    }

    /// Cheap checks, run after every apply.
    fn check_invariants(&self) -> Result<(), String> {
        if self.order.len() > self.limits.request_ids_max {
            return Err(format!(
                "the request log holds {} ids, over its limit of {}",
                self.order.len(),
                self.limits.request_ids_max
            ));
        }
        if self.remembered_count > self.order.len() {
            return Err(format!(
                "the request log counts {} remembered ids but orders only {}",
                self.remembered_count,
                self.order.len()
            ));
        }
        if self.origins.len() > self.limits.origins_max {
            return Err(format!(
                "the request log holds {} origins, over its limit of {}",
                self.origins.len(),
                self.limits.origins_max
            ));
        }
        if self.origins.len() != self.origins_by_recorded_tick.len() {
            return Err(format!(
                "the request log holds {} origins but {} recorded ticks",
                self.origins.len(),
                self.origins_by_recorded_tick.len()
            ));
        }
        Ok(())
    }
}

impl Command {
    /// A stable 128-bit fingerprint of this command: FNV-1a over a canonical encoding (a tag
    /// byte per variant, then each field in declaration order as little-endian bytes; a batch
    /// adds its item count, then each item's origin, sequence and command). Fingerprints are
    /// kept in snapshots, so the encoding of existing variants must never change; a new variant
    /// takes a new tag. Not std's hashers: their output may change between Rust releases.
    pub fn fingerprint(&self) -> u128 {
        let mut hasher = Fnv1a128::new();
        self.encode(&mut hasher);
        hasher.finish()
    }

    fn encode(&self, hasher: &mut Fnv1a128) {
        match self {
            Command::Open {
                account,
                balance_minor_units,
                overdraft_limit_minor_units,
                balance_max_minor_units,
            } => {
                hasher.write_u8(1);
                hasher.write_u64(*account);
                hasher.write_u64(*balance_minor_units);
                hasher.write_u64(*overdraft_limit_minor_units);
                hasher.write_u64(*balance_max_minor_units);
            }
            Command::Deposit {
                account,
                amount_minor_units,
            } => {
                hasher.write_u8(2);
                hasher.write_u64(*account);
                hasher.write_u64(*amount_minor_units);
            }
            Command::Withdraw {
                account,
                amount_minor_units,
            } => {
                hasher.write_u8(3);
                hasher.write_u64(*account);
                hasher.write_u64(*amount_minor_units);
            }
            Command::Transfer {
                from,
                to,
                amount_minor_units,
            } => {
                hasher.write_u8(4);
                hasher.write_u64(*from);
                hasher.write_u64(*to);
                hasher.write_u64(*amount_minor_units);
            }
            Command::Batch(items) => {
                hasher.write_u8(5);
                hasher.write_u64(items.len() as u64);
                for item in items {
                    hasher.write_u64(item.request_id.origin);
                    hasher.write_u64(item.request_id.sequence);
                    item.command.encode(hasher);
                }
            }
        }
    }
}

/// 128-bit FNV-1a: tiny, and its output is fixed by its definition, on every platform.
struct Fnv1a128(u128);

impl Fnv1a128 {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn new() -> Self {
        Self(Self::OFFSET_BASIS)
    }

    fn write_u8(&mut self, byte: u8) {
        self.0 = (self.0 ^ u128::from(byte)).wrapping_mul(Self::PRIME);
    }

    fn write_bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u8(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.write_bytes(&value.to_le_bytes());
    }

    fn write_i64(&mut self, value: i64) {
        self.write_bytes(&value.to_le_bytes());
    }

    fn write_u128(&mut self, value: u128) {
        self.write_bytes(&value.to_le_bytes());
    }

    fn finish(self) -> u128 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(origin: u64, sequence: u64) -> RequestId {
        RequestId { origin, sequence }
    }

    fn proposal(origin: u64, sequence: u64, command: Command) -> Proposal {
        Proposal {
            request_id: id(origin, sequence),
            command,
        }
    }

    fn open(account: AccountId, balance: u64, overdraft_limit: u64, balance_max: u64) -> Command {
        Command::Open {
            account,
            balance_minor_units: balance,
            overdraft_limit_minor_units: overdraft_limit,
            balance_max_minor_units: balance_max,
        }
    }

    fn ledger_with(balance: u64) -> Ledger {
        let mut ledger = Ledger::new();
        let outcome = ledger.apply(&open(ORIGINAL_ACCOUNT, balance, 0, ORIGINAL_BALANCE_MAX));
        assert_eq!(
            outcome,
            Outcome::Opened {
                balance_minor_units: i64::try_from(balance).expect("test balance fits i64")
            }
        );
        ledger
    }

    fn ledger_with_limits(request_ids_max: usize, origins_max: usize) -> Ledger {
        assert!(request_ids_max > 0 && origins_max > 0);
        let mut ledger = Ledger::new();
        ledger.requests.limits = RequestLimits {
            request_ids_max,
            origins_max,
        };
        ledger
    }

    fn deposit(amount: u64) -> Command {
        deposit_to(ORIGINAL_ACCOUNT, amount)
    }

    fn deposit_to(account: AccountId, amount: u64) -> Command {
        Command::Deposit {
            account,
            amount_minor_units: amount,
        }
    }

    fn withdraw(amount: u64) -> Command {
        withdraw_from(ORIGINAL_ACCOUNT, amount)
    }

    fn withdraw_from(account: AccountId, amount: u64) -> Command {
        Command::Withdraw {
            account,
            amount_minor_units: amount,
        }
    }

    fn transfer(from: AccountId, to: AccountId, amount: u64) -> Command {
        Command::Transfer {
            from,
            to,
            amount_minor_units: amount,
        }
    }

    /// Accounts 1 (balance 100, overdraft 50, max 1,000) and 2 (balance 10, no overdraft,
    /// max 200).
    fn two_accounts() -> Ledger {
        let mut ledger = Ledger::new();
        assert_eq!(
            ledger.apply(&open(1, 100, 50, 1_000)),
            Outcome::Opened {
                balance_minor_units: 100
            }
        );
        assert_eq!(
            ledger.apply(&open(2, 10, 0, 200)),
            Outcome::Opened {
                balance_minor_units: 10
            }
        );
        ledger
    }

    #[test]
    fn project_1_sequence() {
        let mut ledger = ledger_with(400);
        assert_eq!(
            ledger.apply(&deposit(170)),
            Outcome::Deposited {
                balance_minor_units: 570
            }
        );
        assert_eq!(
            ledger.apply(&withdraw(70)),
            Outcome::Withdrawn {
                balance_minor_units: 500
            }
        );
        assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(500));
    }

    #[test]
    fn overdraw_is_an_outcome_and_changes_nothing() {
        let mut ledger = ledger_with(100);
        let before = ledger.clone();
        assert_eq!(
            ledger.apply(&withdraw(101)),
            Outcome::InsufficientFunds {
                balance_minor_units: 100
            }
        );
        assert_eq!(ledger, before);
        assert_eq!(
            ledger.apply(&withdraw(100)),
            Outcome::Withdrawn {
                balance_minor_units: 0
            }
        );
    }

    #[test]
    fn deposit_over_the_int32_limit_is_refused_not_wrapped() {
        let mut ledger = ledger_with(ORIGINAL_BALANCE_MAX - 5);
        let before = ledger.clone();
        let max = i64::from(i32::MAX);
        assert_eq!(
            ledger.apply(&deposit(6)),
            Outcome::BalanceLimitExceeded {
                balance_minor_units: max - 5
            }
        );
        assert_eq!(ledger, before);
        assert_eq!(
            ledger.apply(&deposit(5)),
            Outcome::Deposited {
                balance_minor_units: max
            }
        );
        assert_eq!(
            ledger.apply(&deposit(u64::MAX)),
            Outcome::BalanceLimitExceeded {
                balance_minor_units: max
            }
        );
    }

    #[test]
    fn open_validates_its_figures() {
        let mut ledger = Ledger::new();
        let too_big = i64::MAX as u64 + 1;
        for command in [
            open(1, 11, 0, 10),
            open(1, too_big, 0, u64::MAX),
            open(1, 0, too_big, 10),
            open(1, 0, 0, too_big),
            open(1, u64::MAX, u64::MAX, u64::MAX),
        ] {
            assert_eq!(
                ledger.apply(&command),
                Outcome::InvalidAmount,
                "{command:?}"
            );
        }
        assert_eq!(ledger, Ledger::new());
        assert_eq!(
            ledger.apply(&open(1, i64::MAX as u64, i64::MAX as u64, i64::MAX as u64)),
            Outcome::Opened {
                balance_minor_units: i64::MAX
            }
        );
        assert_eq!(
            ledger.accounts()[&1],
            Account {
                balance_minor_units: i64::MAX,
                balance_min_minor_units: -i64::MAX,
                balance_max_minor_units: i64::MAX,
            }
        );
        assert_eq!(
            ledger.apply(&open(1, 0, 0, 0)),
            Outcome::AccountExists {
                balance_minor_units: i64::MAX
            }
        );
    }

    #[test]
    fn an_overdraft_goes_down_to_its_limit_and_no_further() {
        let mut ledger = two_accounts();
        assert_eq!(
            ledger.apply(&withdraw_from(1, 150)),
            Outcome::Withdrawn {
                balance_minor_units: -50
            }
        );
        let before = ledger.clone();
        assert_eq!(
            ledger.apply(&withdraw_from(1, 1)),
            Outcome::InsufficientFunds {
                balance_minor_units: -50
            }
        );
        assert_eq!(ledger, before);
        assert_eq!(
            ledger.apply(&deposit_to(1, 60)),
            Outcome::Deposited {
                balance_minor_units: 10
            }
        );
    }

    #[test]
    fn amounts_beyond_i64_are_exact_never_wrapped() {
        let mut ledger = Ledger::new();
        let max = i64::MAX as u64;
        ledger.apply(&open(1, 0, max, max));
        ledger.apply(&withdraw_from(1, max));
        assert_eq!(ledger.balance(1), Some(-i64::MAX));
        let before = ledger.clone();
        // -i64::MAX + u64::MAX = i64::MAX + 1: over the max.
        assert_eq!(
            ledger.apply(&deposit_to(1, u64::MAX)),
            Outcome::BalanceLimitExceeded {
                balance_minor_units: -i64::MAX
            }
        );
        assert_eq!(
            ledger.apply(&withdraw_from(1, u64::MAX)),
            Outcome::InsufficientFunds {
                balance_minor_units: -i64::MAX
            }
        );
        assert_eq!(ledger, before);
        // An amount above i64::MAX that lands inside the limits is applied exactly.
        assert_eq!(
            ledger.apply(&deposit_to(1, max + 2)),
            Outcome::Deposited {
                balance_minor_units: 2
            }
        );
    }

    #[test]
    fn zero_amounts_unknown_accounts_and_reopen_are_refused() {
        let mut ledger = ledger_with(10);
        let before = ledger.clone();
        assert_eq!(ledger.apply(&deposit(0)), Outcome::InvalidAmount);
        assert_eq!(ledger.apply(&withdraw(0)), Outcome::InvalidAmount);
        assert_eq!(
            ledger.apply(&deposit_to(99, 1)),
            Outcome::UnknownAccount { account: 99 }
        );
        assert_eq!(
            ledger.apply(&withdraw_from(98, 1)),
            Outcome::UnknownAccount { account: 98 }
        );
        assert_eq!(
            ledger.apply(&open(ORIGINAL_ACCOUNT, 5, 0, 5)),
            Outcome::AccountExists {
                balance_minor_units: 10
            }
        );
        assert_eq!(ledger, before);
    }

    #[test]
    fn a_transfer_moves_money_atomically() {
        let mut ledger = two_accounts();
        assert_eq!(
            ledger.apply(&transfer(1, 2, 140)),
            Outcome::Transferred {
                from_balance_minor_units: -40,
                to_balance_minor_units: 150
            }
        );
        assert_eq!(ledger.balance(1), Some(-40));
        assert_eq!(ledger.balance(2), Some(150));
        assert_eq!(
            ledger.apply(&transfer(2, 1, 150)),
            Outcome::Transferred {
                from_balance_minor_units: 0,
                to_balance_minor_units: 110
            }
        );
    }

    #[test]
    fn a_refused_transfer_changes_nothing() {
        let mut ledger = two_accounts();
        let before = ledger.clone();
        let cases = [
            (transfer(1, 2, 0), Outcome::InvalidAmount),
            (transfer(1, 1, 5), Outcome::InvalidAmount),
            (transfer(9, 2, 5), Outcome::UnknownAccount { account: 9 }),
            (transfer(1, 8, 5), Outcome::UnknownAccount { account: 8 }),
            (transfer(9, 8, 5), Outcome::UnknownAccount { account: 9 }),
            // 2 holds 10 and has no overdraft.
            (
                transfer(2, 1, 11),
                Outcome::InsufficientFunds {
                    balance_minor_units: 10,
                },
            ),
            // 1 may go to -50; 2 may hold at most 200.
            (
                transfer(1, 2, 151),
                Outcome::InsufficientFunds {
                    balance_minor_units: 100,
                },
            ),
            (
                transfer(1, 2, 150),
                Outcome::Transferred {
                    from_balance_minor_units: -50,
                    to_balance_minor_units: 160,
                },
            ),
        ];
        for (command, expected) in &cases[..7] {
            assert_eq!(&ledger.apply(command), expected, "{command:?}");
            assert_eq!(ledger, before, "{command:?}");
        }
        let (command, expected) = &cases[7];
        assert_eq!(&ledger.apply(command), expected);
        let before = ledger.clone();
        ledger.apply(&deposit_to(1, 100));
        assert_eq!(
            ledger.apply(&transfer(1, 2, 41)),
            Outcome::BalanceLimitExceeded {
                balance_minor_units: 160
            }
        );
        assert_eq!(
            ledger.apply(&transfer(2, 1, u64::MAX)),
            Outcome::InsufficientFunds {
                balance_minor_units: 160
            }
        );
        ledger.apply(&withdraw_from(1, 100));
        assert_eq!(ledger.accounts(), before.accounts());
    }

    #[test]
    fn a_repeated_request_id_applies_once() {
        let mut ledger = ledger_with(100);
        let first_proposal = proposal(7, 1, deposit(50));
        let first = ledger.apply_proposal(&first_proposal);
        assert_eq!(
            first,
            Outcome::Deposited {
                balance_minor_units: 150
            }
        );
        let before = ledger.clone();
        assert_eq!(ledger.apply_proposal(&first_proposal), first);
        assert_eq!(
            ledger.apply_proposal(&proposal(7, 1, withdraw(50))),
            Outcome::RequestIdReused
        );
        assert_eq!(
            ledger.apply_proposal(&proposal(7, 1, deposit(51))),
            Outcome::RequestIdReused
        );
        assert_eq!(ledger, before);
        // The same sequence from another origin is another request.
        assert_eq!(
            ledger.apply_proposal(&proposal(8, 1, deposit(50))),
            Outcome::Deposited {
                balance_minor_units: 200
            }
        );
    }

    #[test]
    fn a_refusal_is_remembered_too() {
        let mut ledger = ledger_with(10);
        let overdraw = proposal(1, 1, withdraw(11));
        let refused = Outcome::InsufficientFunds {
            balance_minor_units: 10,
        };
        assert_eq!(ledger.apply_proposal(&overdraw), refused);
        ledger.apply_proposal(&proposal(1, 2, deposit(5)));
        // Now it would succeed, but the retry answers the first outcome.
        assert_eq!(ledger.apply_proposal(&overdraw), refused);
        assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(15));
    }

    #[test]
    fn a_batch_applies_each_item_on_its_own() {
        let mut ledger = two_accounts();
        let batch = proposal(
            1,
            10,
            Command::Batch(vec![
                proposal(2, 1, deposit_to(1, 5)),
                proposal(2, 2, transfer(2, 1, 11)),
                proposal(2, 3, deposit_to(7, 1)),
                proposal(2, 4, transfer(1, 2, 100)),
                // A duplicate within the batch answers the first item's outcome.
                proposal(2, 1, deposit_to(1, 5)),
                proposal(2, 1, deposit_to(1, 6)),
            ]),
        );
        let expected = Outcome::Batch(vec![
            Outcome::Deposited {
                balance_minor_units: 105,
            },
            Outcome::InsufficientFunds {
                balance_minor_units: 10,
            },
            Outcome::UnknownAccount { account: 7 },
            Outcome::Transferred {
                from_balance_minor_units: 5,
                to_balance_minor_units: 110,
            },
            Outcome::Deposited {
                balance_minor_units: 105,
            },
            Outcome::RequestIdReused,
        ]);
        assert_eq!(ledger.apply_proposal(&batch), expected);
        let after = ledger.clone();
        assert_eq!(ledger.apply_proposal(&batch), expected);
        assert_eq!(ledger, after);
        // Items are remembered on their own, and the batch's id with its body.
        assert_eq!(
            ledger.apply_proposal(&proposal(2, 1, deposit_to(1, 5))),
            Outcome::Deposited {
                balance_minor_units: 105
            }
        );
        assert_eq!(
            ledger.apply_proposal(&proposal(1, 10, deposit_to(1, 5))),
            Outcome::RequestIdReused
        );
        assert_eq!(
            ledger.apply_proposal(&proposal(
                1,
                10,
                Command::Batch(vec![proposal(2, 1, deposit_to(1, 5))])
            )),
            Outcome::RequestIdReused
        );
        assert_eq!(ledger, after);
    }

    #[test]
    fn a_malformed_batch_is_refused_whole() {
        let mut ledger = two_accounts();
        let item = proposal(2, 1, deposit_to(1, 5));
        let oversized: Vec<Proposal> = (0..=BATCH_ITEMS_MAX as u64)
            .map(|sequence| proposal(3, sequence, deposit_to(1, 1)))
            .collect();
        let cases = [
            proposal(1, 1, Command::Batch(vec![])),
            proposal(1, 2, Command::Batch(oversized)),
            proposal(
                1,
                3,
                Command::Batch(vec![
                    item.clone(),
                    proposal(2, 2, Command::Batch(vec![proposal(2, 3, deposit_to(1, 1))])),
                ]),
            ),
            proposal(
                1,
                4,
                Command::Batch(vec![item.clone(), proposal(1, 4, deposit_to(1, 1))]),
            ),
        ];
        for case in &cases {
            let before = ledger.accounts().clone();
            assert_eq!(ledger.apply_proposal(case), Outcome::InvalidBatch);
            assert_eq!(ledger.accounts(), &before);
            // Remembered: the retry answers the same.
            assert_eq!(ledger.apply_proposal(case), Outcome::InvalidBatch);
        }
        // Nothing of the refused batches was applied or remembered.
        assert_eq!(
            ledger.apply_proposal(&item),
            Outcome::Deposited {
                balance_minor_units: 105
            }
        );
        // The largest batch is accepted.
        let largest: Vec<Proposal> = (0..BATCH_ITEMS_MAX as u64)
            .map(|sequence| proposal(4, sequence, deposit_to(2, 1)))
            .collect();
        let Outcome::Batch(outcomes) =
            ledger.apply_proposal(&proposal(1, 5, Command::Batch(largest)))
        else {
            panic!("the largest batch is applied");
        };
        assert_eq!(outcomes.len(), BATCH_ITEMS_MAX);
        assert_eq!(ledger.balance(2), Some(200));
    }

    #[test]
    fn past_the_window_an_id_expires_instead_of_applying_again() {
        let mut ledger = ledger_with_limits(3, 10);
        ledger.apply(&open(1, 0, 0, 1_000));
        for sequence in 1..=4 {
            ledger.apply_proposal(&proposal(5, sequence, deposit_to(1, 1)));
        }
        assert_eq!(ledger.balance(1), Some(4));
        let before = ledger.clone();
        // Sequence 1 left the window: expired, whatever its body.
        assert_eq!(
            ledger.apply_proposal(&proposal(5, 1, deposit_to(1, 1))),
            Outcome::RequestIdExpired
        );
        assert_eq!(
            ledger.apply_proposal(&proposal(5, 0, deposit_to(1, 9))),
            Outcome::RequestIdExpired
        );
        // Sequence 2 is still remembered.
        assert_eq!(
            ledger.apply_proposal(&proposal(5, 2, deposit_to(1, 1))),
            Outcome::Deposited {
                balance_minor_units: 2
            }
        );
        assert_eq!(ledger, before);
        // Other origins have their own watermark.
        assert_eq!(
            ledger.apply_proposal(&proposal(6, 1, deposit_to(1, 1))),
            Outcome::Deposited {
                balance_minor_units: 5
            }
        );
        assert_eq!(ledger.requests.remembered_count, 3);
    }

    #[test]
    fn the_least_recently_recorded_origin_is_forgotten() {
        let mut ledger = ledger_with_limits(100, 2);
        ledger.apply(&open(1, 0, 0, 1_000));
        ledger.apply_proposal(&proposal(1, 1, deposit_to(1, 1)));
        ledger.apply_proposal(&proposal(2, 1, deposit_to(1, 1)));
        ledger.apply_proposal(&proposal(1, 2, deposit_to(1, 1)));
        ledger.apply_proposal(&proposal(3, 1, deposit_to(1, 1)));
        assert_eq!(ledger.requests.origins.keys().collect::<Vec<_>>(), [&1, &3]);
        assert_eq!(ledger.requests.remembered_count, 3);
        // The documented cost: origin 2 is forgotten whole, so its retry applies again.
        assert_eq!(
            ledger.apply_proposal(&proposal(2, 1, deposit_to(1, 1))),
            Outcome::Deposited {
                balance_minor_units: 5
            }
        );
        assert_eq!(ledger.requests.origins.keys().collect::<Vec<_>>(), [&2, &3]);
    }

    #[test]
    fn remembered_request_ids_are_bounded() {
        let mut ledger = ledger_with(0);
        let total = REQUEST_IDS_MAX as u64 + 10;
        for sequence in 0..total {
            ledger.apply_proposal(&proposal(1, sequence, deposit(1)));
        }
        assert_eq!(ledger.requests.order.len(), REQUEST_IDS_MAX);
        assert_eq!(ledger.requests.remembered_count, REQUEST_IDS_MAX);
        let total_signed = i64::try_from(total).expect("fits");
        assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(total_signed));
        // The oldest ids are expired, the newest still deduplicate.
        assert_eq!(
            ledger.apply_proposal(&proposal(1, 9, deposit(1))),
            Outcome::RequestIdExpired
        );
        assert_eq!(
            ledger.apply_proposal(&proposal(1, total - 1, deposit(1))),
            Outcome::Deposited {
                balance_minor_units: total_signed
            }
        );
        assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(total_signed));
    }

    #[test]
    fn fnv1a_matches_its_published_vectors() {
        assert_eq!(Fnv1a128::new().finish(), 0x6c62272e07bb014262b821756295c58d);
        let mut hasher = Fnv1a128::new();
        hasher.write_u8(b'a');
        assert_eq!(hasher.finish(), 0xd228cb696f1a8caf78912b704e4a8964);
    }

    /// Fingerprints and digests are kept in snapshots and compared across branches: a change
    /// of encoding must be deliberate.
    #[test]
    fn fingerprints_and_digests_are_pinned() {
        let batch = Command::Batch(vec![proposal(1, 2, transfer(3, 4, 5))]);
        assert_eq!(batch.fingerprint(), PINNED_BATCH_FINGERPRINT);
        assert_ne!(
            deposit_to(1, 2).fingerprint(),
            withdraw_from(1, 2).fingerprint()
        );
        assert_ne!(
            deposit_to(1, 2).fingerprint(),
            deposit_to(2, 1).fingerprint()
        );
        let ledger = two_accounts();
        assert_eq!(ledger.state_digest(), PINNED_STATE_DIGEST);
        let mut moved = ledger.clone();
        moved.apply(&transfer(1, 2, 1));
        assert_ne!(moved.state_digest(), ledger.state_digest());
    }

    const PINNED_BATCH_FINGERPRINT: u128 = 93_871_046_531_861_545_052_257_314_214_445_091_016;
    const PINNED_STATE_DIGEST: u64 = 2_372_089_036_273_766_268;

    #[test]
    fn a_ledger_survives_a_snapshot_round_trip() {
        let mut ledger = two_accounts();
        ledger.apply_proposal(&proposal(1, 1, transfer(1, 2, 3)));
        ledger.apply_proposal(&proposal(
            1,
            2,
            Command::Batch(vec![proposal(1, 3, deposit_to(1, 1))]),
        ));
        let json = serde_json::to_string(&ledger).expect("serialises");
        let restored: Ledger = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(restored, ledger);
        assert_eq!(restored.state_digest(), ledger.state_digest());
    }

    /// Log entries written before overdrafts existed still decode.
    #[test]
    fn an_open_without_an_overdraft_limit_decodes() {
        let json = r#"{"Open":{"account":0,"balance_minor_units":5,"balance_max_minor_units":9}}"#;
        let command: Command = serde_json::from_str(json).expect("decodes");
        assert_eq!(command, open(0, 5, 0, 9));
    }

    /// A deterministic pseudo-random walk: the balance never goes negative and always equals
    /// the opening balance plus successful deposits minus successful withdrawals.
    #[test]
    fn random_walk_conserves_money() {
        let mut ledger = ledger_with(1_000);
        let mut expected: i64 = 1_000;
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let amount = seed % 300 + 1;
            let amount_signed = i64::try_from(amount).expect("small");
            if seed % 2 == 0 {
                if let Outcome::Deposited { .. } = ledger.apply(&deposit(amount)) {
                    expected += amount_signed;
                }
            } else {
                match ledger.apply(&withdraw(amount)) {
                    Outcome::Withdrawn { .. } => expected -= amount_signed,
                    Outcome::InsufficientFunds {
                        balance_minor_units,
                    } => assert!(balance_minor_units < amount_signed),
                    other => panic!("unexpected outcome {other:?}"),
                }
            }
            assert_eq!(ledger.balance(ORIGINAL_ACCOUNT), Some(expected));
        }
    }
}

/// Property tests: random sequences of opens, deposits, withdrawals, transfers, batches, retries
/// and reused ids over a few accounts, checked against a small model of the request-id rules.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const ACCOUNTS: u64 = 4;
    const ORIGINS: u64 = 3;
    /// The origin of the opening proposals every run starts with.
    const SETUP_ORIGIN: u64 = 100;

    fn amount() -> impl Strategy<Value = u64> {
        // Multiples of 50 land exactly on the setup's limits (also multiples of 50) often.
        prop_oneof![
            8 => (0u64..8).prop_map(|k| k * 50),
            6 => 0u64..300,
            1 => Just(i64::MAX as u64),
            1 => Just(i64::MAX as u64 + 1),
            1 => Just(u64::MAX),
        ]
    }

    /// A command that is not a batch. Account `ACCOUNTS - 1` is never opened by the setup.
    fn command() -> impl Strategy<Value = Command> {
        let account = 0..ACCOUNTS;
        prop_oneof![
            1 => (account.clone(), 0u64..500, prop_oneof![0u64..300, Just(u64::MAX)], prop_oneof![0u64..1_000, Just(i64::MAX as u64)])
                .prop_map(|(account, balance, overdraft, max)| Command::Open {
                    account,
                    balance_minor_units: balance,
                    overdraft_limit_minor_units: overdraft,
                    balance_max_minor_units: max,
                }),
            3 => (account.clone(), amount()).prop_map(|(account, amount_minor_units)| Command::Deposit { account, amount_minor_units }),
            3 => (account.clone(), amount()).prop_map(|(account, amount_minor_units)| Command::Withdraw { account, amount_minor_units }),
            5 => (account.clone(), account, amount()).prop_map(|(from, to, amount_minor_units)| Command::Transfer { from, to, amount_minor_units }),
        ]
    }

    /// One step of a run; ids are assigned when the run is built (increasing per origin).
    #[derive(Debug, Clone)]
    enum Step {
        Fresh(u64, Command),
        Batch(u64, Vec<BatchItem>),
        /// Retry an earlier proposal (index modulo how many there are).
        Retry(usize),
        /// An earlier proposal's id with another command.
        Reuse(usize, Command),
    }

    #[derive(Debug, Clone)]
    enum BatchItem {
        Fresh(u64, Command),
        /// An earlier proposal as an item (a nested batch if it was a batch).
        Retry(usize),
    }

    fn batch_item() -> impl Strategy<Value = BatchItem> {
        prop_oneof![
            6 => (0..ORIGINS, command()).prop_map(|(origin, command)| BatchItem::Fresh(origin, command)),
            1 => any::<usize>().prop_map(BatchItem::Retry),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (0..ORIGINS, command()).prop_map(|(origin, command)| Step::Fresh(origin, command)),
            2 => (0..ORIGINS, prop::collection::vec(batch_item(), 0..6)).prop_map(|(origin, items)| Step::Batch(origin, items)),
            2 => any::<usize>().prop_map(Step::Retry),
            1 => (any::<usize>(), command()).prop_map(|(index, command)| Step::Reuse(index, command)),
        ]
    }

    /// Turns steps into proposals, after a setup that opens accounts `0..ACCOUNTS - 1`.
    fn build(steps: &[Step]) -> Vec<Proposal> {
        let mut sequences: BTreeMap<u64, u64> = BTreeMap::new();
        let mut next_id = |origin: u64| {
            let sequence = sequences.entry(origin).or_insert(0);
            *sequence += 1;
            RequestId {
                origin,
                sequence: *sequence,
            }
        };
        let mut proposals: Vec<Proposal> = (0..ACCOUNTS - 1)
            .map(|account| Proposal {
                request_id: next_id(SETUP_ORIGIN),
                command: Command::Open {
                    account,
                    balance_minor_units: 100 * account,
                    overdraft_limit_minor_units: 50 * account,
                    balance_max_minor_units: 200 + 100 * account,
                },
            })
            .collect();
        for step in steps {
            let proposal = match step {
                Step::Fresh(origin, command) => Proposal {
                    request_id: next_id(*origin),
                    command: command.clone(),
                },
                Step::Batch(origin, items) => {
                    let request_id = next_id(*origin);
                    let items = items
                        .iter()
                        .map(|item| match item {
                            BatchItem::Fresh(origin, command) => Proposal {
                                request_id: next_id(*origin),
                                command: command.clone(),
                            },
                            BatchItem::Retry(index) => proposals[index % proposals.len()].clone(),
                        })
                        .collect();
                    Proposal {
                        request_id,
                        command: Command::Batch(items),
                    }
                }
                Step::Retry(index) => proposals[index % proposals.len()].clone(),
                Step::Reuse(index, command) => Proposal {
                    request_id: proposals[index % proposals.len()].request_id,
                    command: command.clone(),
                },
            };
            proposals.push(proposal);
        }
        proposals
    }

    /// An unbounded model of the request-id rules (the window is never reached in these runs)
    /// and of the money that came in and went out.
    #[derive(Default)]
    struct Model {
        requests: BTreeMap<RequestId, (Command, Outcome)>,
        money_minor_units: i128,
    }

    impl Model {
        /// Checks one proposal's outcome and the ledger change it made, and learns from it.
        fn check(
            &mut self,
            proposal: &Proposal,
            outcome: &Outcome,
            before: &Ledger,
            after: &Ledger,
        ) {
            if let Some((command, first)) = self.requests.get(&proposal.request_id) {
                if *command == proposal.command {
                    if let (Command::Batch(items), Outcome::Batch(_)) = (command, first) {
                        // A replayed batch answers its items' remembered outcomes.
                        let Outcome::Batch(outcomes) = outcome else {
                            panic!("a replayed batch answered {outcome:?}");
                        };
                        for (item, item_outcome) in items.iter().zip(outcomes) {
                            let (_, remembered) = &self.requests[&item.request_id];
                            let expected = if self.requests[&item.request_id].0 == item.command {
                                remembered.clone()
                            } else {
                                Outcome::RequestIdReused
                            };
                            assert_eq!(item_outcome, &expected);
                        }
                    } else {
                        assert_eq!(outcome, first, "a retry answers the first outcome");
                    }
                } else {
                    assert_eq!(outcome, &Outcome::RequestIdReused);
                }
                assert_eq!(after, before, "a retry or reused id changes nothing");
                return;
            }
            match (&proposal.command, outcome) {
                (Command::Batch(items), Outcome::Batch(outcomes)) => {
                    assert!(!items.is_empty() && items.len() <= BATCH_ITEMS_MAX);
                    assert_eq!(items.len(), outcomes.len());
                    // Item by item against a ledger that applies them one at a time.
                    let mut stepwise = before.clone();
                    for (item, item_outcome) in items.iter().zip(outcomes) {
                        let item_before = stepwise.clone();
                        assert_eq!(&stepwise.apply_proposal(item), item_outcome);
                        self.check(item, item_outcome, &item_before, &stepwise);
                    }
                    assert_eq!(stepwise.accounts(), after.accounts());
                    assert_eq!(stepwise.state_digest(), after.state_digest());
                }
                (Command::Batch(items), Outcome::InvalidBatch) => {
                    assert!(
                        items.is_empty()
                            || items
                                .iter()
                                .any(|item| matches!(item.command, Command::Batch(_)))
                    );
                    assert_eq!(after.accounts(), before.accounts());
                }
                (Command::Batch(_), other) => panic!("a batch answered {other:?}"),
                (command, outcome) => self.check_one(command, outcome, before, after),
            }
            self.requests.insert(
                proposal.request_id,
                (proposal.command.clone(), outcome.clone()),
            );
        }

        fn check_one(
            &mut self,
            command: &Command,
            outcome: &Outcome,
            before: &Ledger,
            after: &Ledger,
        ) {
            let balance = |ledger: &Ledger, account: AccountId| ledger.balance(account);
            match (command, outcome) {
                (
                    Command::Open {
                        account,
                        balance_minor_units,
                        ..
                    },
                    Outcome::Opened {
                        balance_minor_units: opened,
                    },
                ) => {
                    assert_eq!(i128::from(*opened), i128::from(*balance_minor_units));
                    assert_eq!(balance(before, *account), None);
                    self.money_minor_units += i128::from(*opened);
                }
                (
                    Command::Deposit {
                        account,
                        amount_minor_units,
                    },
                    Outcome::Deposited {
                        balance_minor_units,
                    },
                ) => {
                    let was = balance(before, *account).expect("deposited into an open account");
                    assert_eq!(
                        i128::from(*balance_minor_units),
                        i128::from(was) + i128::from(*amount_minor_units)
                    );
                    self.money_minor_units += i128::from(*amount_minor_units);
                }
                (
                    Command::Withdraw {
                        account,
                        amount_minor_units,
                    },
                    Outcome::Withdrawn {
                        balance_minor_units,
                    },
                ) => {
                    let was = balance(before, *account).expect("withdrawn from an open account");
                    assert_eq!(
                        i128::from(*balance_minor_units),
                        i128::from(was) - i128::from(*amount_minor_units)
                    );
                    self.money_minor_units -= i128::from(*amount_minor_units);
                }
                (
                    Command::Transfer {
                        from,
                        to,
                        amount_minor_units,
                    },
                    Outcome::Transferred {
                        from_balance_minor_units,
                        to_balance_minor_units,
                    },
                ) => {
                    let amount = i128::from(*amount_minor_units);
                    let from_was = balance(before, *from).expect("from is open");
                    let to_was = balance(before, *to).expect("to is open");
                    assert_eq!(
                        i128::from(*from_balance_minor_units),
                        i128::from(from_was) - amount
                    );
                    assert_eq!(
                        i128::from(*to_balance_minor_units),
                        i128::from(to_was) + amount
                    );
                    // Only the two accounts changed.
                    let mut expected = before.accounts().clone();
                    for (account, balance) in [
                        (from, from_balance_minor_units),
                        (to, to_balance_minor_units),
                    ] {
                        if let Some(entry) = expected.get_mut(account) {
                            entry.balance_minor_units = *balance;
                        }
                    }
                    assert_eq!(&expected, after.accounts());
                }
                (_, outcome) => {
                    assert!(
                        matches!(
                            outcome,
                            Outcome::InsufficientFunds { .. }
                                | Outcome::BalanceLimitExceeded { .. }
                                | Outcome::AccountExists { .. }
                                | Outcome::UnknownAccount { .. }
                                | Outcome::InvalidAmount
                        ),
                        "{command:?} answered {outcome:?}"
                    );
                    assert_eq!(
                        after.accounts(),
                        before.accounts(),
                        "a refusal changes nothing"
                    );
                }
            }
            if let Outcome::InsufficientFunds {
                balance_minor_units,
            }
            | Outcome::BalanceLimitExceeded {
                balance_minor_units,
            } = outcome
            {
                let account = match command {
                    Command::Deposit { account, .. } | Command::Withdraw { account, .. } => {
                        *account
                    }
                    Command::Transfer { from, .. }
                        if matches!(outcome, Outcome::InsufficientFunds { .. }) =>
                    {
                        *from
                    }
                    Command::Transfer { to, .. } => *to,
                    other => panic!("{other:?} answered {outcome:?}"),
                };
                assert_eq!(balance(before, account), Some(*balance_minor_units));
                // The refusal was needed: the change really breaks the account's limit.
                let limits = &before.accounts()[&account];
                let Some(amount) = amount_of(command) else {
                    panic!("{command:?} answered {outcome:?}");
                };
                let breaks_limit = if matches!(outcome, Outcome::InsufficientFunds { .. }) {
                    i128::from(*balance_minor_units) - amount
                        < i128::from(limits.balance_min_minor_units)
                } else {
                    i128::from(*balance_minor_units) + amount
                        > i128::from(limits.balance_max_minor_units)
                };
                assert!(breaks_limit, "{command:?} refused needlessly: {outcome:?}");
            }
        }
    }

    fn amount_of(command: &Command) -> Option<i128> {
        match command {
            Command::Deposit {
                amount_minor_units, ..
            }
            | Command::Withdraw {
                amount_minor_units, ..
            }
            | Command::Transfer {
                amount_minor_units, ..
            } => Some(i128::from(*amount_minor_units)),
            Command::Open { .. } | Command::Batch(_) => None,
        }
    }

    fn assert_money_and_limits(ledger: &Ledger, model: &Model) {
        let mut sum: i128 = 0;
        for account in ledger.accounts().values() {
            assert!(account.balance_min_minor_units <= account.balance_minor_units);
            assert!(account.balance_minor_units <= account.balance_max_minor_units);
            sum += i128::from(account.balance_minor_units);
        }
        assert_eq!(sum, model.money_minor_units, "money is conserved");
    }

    fn apply_all(ledger: &mut Ledger, proposals: &[Proposal]) -> Vec<Outcome> {
        proposals
            .iter()
            .map(|p| {
                let outcome = ledger.apply_proposal(p);
                // The full pass after every apply here, not only every FULL_CHECK_EVERY.
                ledger.assert_invariants_fully();
                outcome
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Every outcome agrees with the model: money conserved, limits held, refusals change
        /// nothing, retries answer their first outcome, batches equal their items one by one.
        #[test]
        fn outcomes_agree_with_the_model(steps in prop::collection::vec(step(), 1..60)) {
            let proposals = build(&steps);
            let mut ledger = Ledger::new();
            let mut model = Model::default();
            for proposal in &proposals {
                let before = ledger.clone();
                let outcome = ledger.apply_proposal(proposal);
                model.check(proposal, &outcome, &before, &ledger);
                assert_money_and_limits(&ledger, &model);
            }
        }

        /// Replaying any prefix of the log changes nothing and answers the same outcomes.
        #[test]
        fn replaying_a_prefix_changes_nothing(
            steps in prop::collection::vec(step(), 1..60),
            prefix in any::<prop::sample::Index>(),
        ) {
            let proposals = build(&steps);
            let mut ledger = Ledger::new();
            let outcomes = apply_all(&mut ledger, &proposals);
            let snapshot = serde_json::to_string(&ledger).expect("serialises");
            let prefix = prefix.index(proposals.len() + 1);
            let replayed = apply_all(&mut ledger, &proposals[..prefix]);
            prop_assert_eq!(&replayed[..], &outcomes[..prefix]);
            prop_assert_eq!(serde_json::to_string(&ledger).expect("serialises"), snapshot);
        }

        /// Two ledgers fed the same proposals serialise identically; a snapshot restores one.
        #[test]
        fn ledgers_are_deterministic(steps in prop::collection::vec(step(), 1..60)) {
            let proposals = build(&steps);
            let mut first = Ledger::new();
            let mut second = Ledger::new();
            prop_assert_eq!(apply_all(&mut first, &proposals), apply_all(&mut second, &proposals));
            let json = serde_json::to_string(&first).expect("serialises");
            prop_assert_eq!(&json, &serde_json::to_string(&second).expect("serialises"));
            prop_assert_eq!(first.state_digest(), second.state_digest());
            let restored: Ledger = serde_json::from_str(&json).expect("deserialises");
            prop_assert_eq!(&restored, &first);
        }

        /// With a tiny window, forgotten ids expire: replaying the whole log applies nothing,
        /// and every replayed outcome is the first one or `RequestIdExpired`.
        #[test]
        fn expired_ids_never_apply_again(
            steps in prop::collection::vec(step(), 1..60),
            request_ids_max in 1usize..8,
        ) {
            let proposals = build(&steps);
            let mut ledger = Ledger::new();
            ledger.requests.limits = RequestLimits { request_ids_max, origins_max: ORIGINS_MAX };
            let outcomes = apply_all(&mut ledger, &proposals);
            let accounts = ledger.accounts().clone();
            for (proposal, first) in proposals.iter().zip(&outcomes) {
                let again = ledger.apply_proposal(proposal);
                let expected_or_expired = |again: &Outcome, first: &Outcome| {
                    again == first || *again == Outcome::RequestIdExpired
                };
                match (&again, first) {
                    (Outcome::Batch(again), Outcome::Batch(first)) => {
                        for (again, first) in again.iter().zip(first) {
                            prop_assert!(expected_or_expired(again, first), "{:?} then {:?}", first, again);
                        }
                    }
                    (again, first) => prop_assert!(expected_or_expired(again, first), "{:?} then {:?}", first, again),
                }
                prop_assert_eq!(ledger.accounts(), &accounts);
            }
        }
    }
}
