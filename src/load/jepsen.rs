//! Jepsen's bank workload on the `bank.v1` API, recording a history for [`crate::check`].
//!
//! Accounts are opened with equal balances; then concurrent clients move 1..=`amount_max`
//! between random accounts and read every balance at once. Transfers move money, never make it,
//! so every read must sum to the opening total and no balance may go below zero. Every call is
//! recorded as an invoke event and one completion:
//! - `ok` with the balances the cluster answered;
//! - `fail` when it definitely did not happen (refused for insufficient funds — with the balance
//!   seen, which the checker holds against the model — or a read that no branch served);
//! - `info` when its outcome is unknown (the client gave up): it may take effect at any time
//!   later. The client then continues as a new *process*, as in Jepsen, so a process never has
//!   two operations in flight.
//!
//! Times are microseconds since the workload started, on one monotonic clock. At the end each
//! branch is read on its own (linearizably, so it has applied everything acknowledged) and its
//! balances recorded as a `final` event.
//!
//! This file owns the workload's configuration, its setup and final reads, and its client (a
//! [`driver::LoadClient`]: what it picks and what each answer means); the loop, the timing, the
//! processes and the recording of invocations and completions are the driver's.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::driver::{self, Limit, LoadClient, Plan};
use super::history::{self, Completion, Recorder, Reply};
use crate::check::{HistoryEvent, Op};
use crate::client::{Client, ClientConfig, ClientError, Outcome, ReadLevel, Written};
use crate::ledger::AccountId;
use crate::proto::v1 as pb;

pub use super::random::{pause, Random};

/// The workload's knobs.
#[derive(Debug, Clone)]
pub struct BankWorkload {
    /// Accounts `1..=accounts`.
    pub accounts: u64,
    pub opening_balance: u64,
    /// Concurrent clients, spread over the branches (client *i* prefers branch *i* mod n).
    pub clients: usize,
    /// Operations per client; `None`: until stopped.
    pub operations_per_client: Option<u64>,
    /// One operation in this many is a read of all balances; the others are transfers.
    pub read_every: u64,
    /// Transfers move 1..=`amount_max`.
    pub amount_max: u64,
    /// Seeds each client's choices, so a run's operations replay (not their interleaving).
    pub seed: u64,
    pub client_config: ClientConfig,
}

impl Default for BankWorkload {
    fn default() -> Self {
        BankWorkload {
            accounts: 8,
            opening_balance: 10,
            clients: 6,
            operations_per_client: Some(200),
            read_every: 3,
            amount_max: 5,
            seed: 1,
            client_config: ClientConfig::default(),
        }
    }
}

/// What a run did, and its history.
#[derive(Debug, Default)]
pub struct WorkloadReport {
    pub history: Vec<HistoryEvent>,
    pub transfers_ok: u64,
    pub transfers_refused: u64,
    pub reads_ok: u64,
    pub reads_failed: u64,
    /// Transfers whose outcome is unknown (`info`).
    pub unknown: u64,
}

impl WorkloadReport {
    /// Adds `other`'s counts (not its history).
    fn add(&mut self, other: &WorkloadReport) {
        self.transfers_ok += other.transfers_ok;
        self.transfers_refused += other.transfers_refused;
        self.reads_ok += other.reads_ok;
        self.reads_failed += other.reads_failed;
        self.unknown += other.unknown;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("opening account {account}: {outcome:?}")]
    Open {
        account: AccountId,
        outcome: Outcome,
    },
    #[error("final read at branch {addr}: {why}")]
    FinalRead { addr: String, why: String },
    #[error("the workload's configuration is unusable: {0}")]
    Config(&'static str),
}

fn signed(value: u64) -> Result<i64, WorkloadError> {
    i64::try_from(value).map_err(|_| WorkloadError::Config("an amount or balance above i64::MAX"))
}

/// Runs the workload against the branches at `addresses` until each client has done its
/// operations or `stop` is set, then reads every branch's final balances.
pub async fn run_bank_workload(
    addresses: &[String],
    workload: &BankWorkload,
    stop: Arc<AtomicBool>,
) -> Result<WorkloadReport, WorkloadError> {
    if workload.accounts < 2 || workload.clients == 0 || workload.amount_max == 0 {
        return Err(WorkloadError::Config(
            "needs at least 2 accounts, 1 client and a positive amount_max",
        ));
    }
    if addresses.is_empty() {
        return Err(WorkloadError::Client(ClientError::NoBranches));
    }
    let accounts: Vec<AccountId> = (1..=workload.accounts).collect();
    let opening = signed(workload.opening_balance)?;
    signed(workload.amount_max)?;
    let setup = Client::new(addresses, workload.client_config.clone())?;
    for &account in &accounts {
        let opened = setup
            .open_account(account, workload.opening_balance, 0, None)
            .await?;
        if opened.outcome() != Outcome::Ok {
            return Err(WorkloadError::Open {
                account,
                outcome: opened.outcome(),
            });
        }
    }
    let recorder = Recorder::new();
    recorder.record(HistoryEvent::Init {
        balances: accounts.iter().map(|&a| (a, opening)).collect(),
        balances_min: BTreeMap::new(),
    });

    let mut clients = Vec::with_capacity(workload.clients);
    for index in 0..workload.clients {
        let mut rotated = addresses.to_vec();
        rotated.rotate_left(index % addresses.len());
        clients.push(JepsenClient {
            client: Client::new(&rotated, workload.client_config.clone())?,
            accounts: accounts.clone(),
            read_every: workload.read_every,
            amount_max: workload.amount_max,
            random: Random::new(
                workload
                    .seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(index as u64),
            ),
            tally: WorkloadReport::default(),
        });
    }
    let plan = Plan {
        limit: match workload.operations_per_client {
            Some(count) => Limit::EachClient(count),
            None => Limit::UntilStopped,
        },
        stop,
        history: Some(recorder.clone()),
        rate: None,
    };
    let mut report = WorkloadReport::default();
    for client in driver::run(clients, plan).await.clients {
        report.add(&client.tally);
    }
    for (index, addr) in addresses.iter().enumerate() {
        recorder.record(HistoryEvent::Final {
            branch: index as u64 + 1,
            balances: final_balances(addr, &accounts, &workload.client_config).await?,
            digest: None,
        });
    }
    report.history = recorder.into_events();
    Ok(report)
}

/// The balances at the branch at `addr` alone (linearizable: it has applied everything
/// acknowledged).
async fn final_balances(
    addr: &str,
    accounts: &[AccountId],
    config: &ClientConfig,
) -> Result<BTreeMap<AccountId, i64>, WorkloadError> {
    let alone = Client::new(&[addr], config.clone())?;
    let reply = alone
        .get_balances(accounts, ReadLevel::Linearizable)
        .await
        .map_err(|e| WorkloadError::FinalRead {
            addr: addr.to_string(),
            why: e.to_string(),
        })?;
    Ok(reply
        .balances
        .into_iter()
        .filter_map(|entry| entry.balance.map(|balance| (entry.account, balance)))
        .collect())
}

/// One client of the workload: transfers between random accounts, and reads of them all.
struct JepsenClient {
    client: Client,
    accounts: Vec<AccountId>,
    read_every: u64,
    amount_max: u64,
    random: Random,
    /// The counts of what it did (no history: the driver records that).
    tally: WorkloadReport,
}

enum Call {
    ReadAll,
    Transfer {
        from: AccountId,
        to: AccountId,
        amount: u64,
    },
}

enum Answer {
    Read(Result<pb::GetBalancesReply, ClientError>),
    Transfer(Result<Written, ClientError>),
}

impl LoadClient for JepsenClient {
    type Op = Call;
    type Answer = Answer;

    fn pick(&mut self) -> Call {
        if self.random.below(self.read_every) == 0 {
            return Call::ReadAll;
        }
        let n = self.accounts.len() as u64;
        let from_index = self.random.below(n);
        let to_index = (from_index + 1 + self.random.below(n - 1)) % n;
        Call::Transfer {
            from: self.accounts[from_index as usize],
            to: self.accounts[to_index as usize],
            amount: 1 + self.random.below(self.amount_max),
        }
    }

    fn invocation(&self, call: &Call) -> Option<Op> {
        Some(match *call {
            Call::ReadAll => Op::Read {
                accounts: self.accounts.clone(),
            },
            Call::Transfer { from, to, amount } => Op::Transfer {
                from,
                to,
                amount: i64::try_from(amount).unwrap_or(i64::MAX),
            },
        })
    }

    async fn perform(&mut self, call: &Call) -> Answer {
        match *call {
            Call::ReadAll => Answer::Read(
                self.client
                    .get_balances(&self.accounts, ReadLevel::Linearizable)
                    .await,
            ),
            Call::Transfer { from, to, amount } => {
                Answer::Transfer(self.client.transfer(from, to, amount).await)
            }
        }
    }

    fn completion(&self, invoked: &Op, answer: &Answer) -> Completion {
        history::completion(
            invoked,
            match answer {
                Answer::Read(read) => Reply::Read(read),
                Answer::Transfer(written) => Reply::Write(written),
            },
        )
    }

    fn tally(&mut self, _: Call, answer: Answer, _: Duration) {
        let tally = &mut self.tally;
        match answer {
            Answer::Read(Ok(_)) => tally.reads_ok += 1,
            Answer::Read(Err(_)) => tally.reads_failed += 1,
            Answer::Transfer(Ok(written)) if written.outcome() == Outcome::Ok => {
                tally.transfers_ok += 1
            }
            Answer::Transfer(Ok(_)) => tally.transfers_refused += 1,
            Answer::Transfer(Err(_)) => tally.unknown += 1,
        }
    }
}
