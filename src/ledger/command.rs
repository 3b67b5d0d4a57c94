//! What goes into the Raft log and what comes out of applying it: [`Proposal`]s (a
//! [`Command`] under a [`RequestId`]) and their [`Outcome`]s, plus the command fingerprint.
//!
//! These types are the log's on-disk and on-wire format (serde): their variants, fields and
//! field order must not change. [`Command::fingerprint`] is kept in snapshots, so its encoding
//! is pinned too; its hasher, `Fnv1a128`, also makes the ledger's state digest.

use serde::{Deserialize, Serialize};

use super::AccountId;

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
    /// Up to [`BATCH_ITEMS_MAX`] proposals applied in order, each on its own (see the ledger's
    /// module docs).
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
pub(super) struct Fnv1a128(u128);

impl Fnv1a128 {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    pub(super) fn new() -> Self {
        Self(Self::OFFSET_BASIS)
    }

    pub(super) fn write_u8(&mut self, byte: u8) {
        self.0 = (self.0 ^ u128::from(byte)).wrapping_mul(Self::PRIME);
    }

    fn write_bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u8(*byte);
        }
    }

    pub(super) fn write_u64(&mut self, value: u64) {
        self.write_bytes(&value.to_le_bytes());
    }

    pub(super) fn write_i64(&mut self, value: i64) {
        self.write_bytes(&value.to_le_bytes());
    }

    pub(super) fn write_u128(&mut self, value: u128) {
        self.write_bytes(&value.to_le_bytes());
    }

    pub(super) fn finish(self) -> u128 {
        self.0
    }
}
