//! The history file: its events ([`HistoryEvent`]), operations, results and observations (with
//! the serde helpers that read account-keyed JSON maps), [`HistoryWriter`] to record one and
//! [`History`] to parse or load one. This is the format the module docs describe, kept apart
//! from the checks: what records a history (`load`'s recorder, for `bank bench`, Jepsen's bank
//! workload and the simulator's customers) uses only this part.
//!
//! An event is a `HistoryEvent`, not an `Event`: the crate has other events (a course
//! customer's, a Lamport clock's), and an `Entry` would be taken for a map's or the Raft log's.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ledger::AccountId;

/// A process of a history, as in Jepsen: one customer (a load client) with at most one
/// operation in flight; after an operation of unknown outcome it goes on as a new process.
pub type ProcessId = u64;
/// A branch (server) whose final state a history records.
pub type BranchId = u64;

/// One line of a history. See the module docs for the format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HistoryEvent {
    /// Accounts that exist before the first operation.
    Init {
        #[serde(with = "account_map")]
        balances: BTreeMap<AccountId, i64>,
        /// Minimum balance per account; absent means 0.
        #[serde(
            default,
            skip_serializing_if = "BTreeMap::is_empty",
            with = "account_map",
            alias = "min_balances"
        )]
        balances_min: BTreeMap<AccountId, i64>,
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
        #[serde(default, skip_serializing_if = "is_zero", alias = "min_balance")]
        balance_min: i64,
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

    pub fn write(&mut self, event: &HistoryEvent) -> io::Result<()> {
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
    pub(super) events: Vec<(usize, HistoryEvent)>,
}

impl History {
    /// A history of events as if they were lines 1, 2, ...
    pub fn from_events(events: Vec<HistoryEvent>) -> Self {
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

    pub fn events(&self) -> impl Iterator<Item = &HistoryEvent> {
        self.events.iter().map(|(_, event)| event)
    }

    /// The events with their line numbers in the file (an operation's id is the line of its
    /// invoke: what [`crate::check::Blame`] names).
    pub fn lines(&self) -> impl Iterator<Item = (usize, &HistoryEvent)> {
        self.events.iter().map(|(line, event)| (*line, event))
    }
}
