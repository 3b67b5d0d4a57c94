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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::check::{Event, Observation, Op, OpResult};
use crate::client::{Client, ClientConfig, ClientError, Outcome, ReadLevel};
use crate::ledger::AccountId;

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
    pub history: Vec<Event>,
    pub transfers_ok: u64,
    pub transfers_refused: u64,
    pub reads_ok: u64,
    pub reads_failed: u64,
    /// Transfers whose outcome is unknown (`info`).
    pub unknown: u64,
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

/// A small deterministic generator (xorshift64*), one per client.
#[derive(Debug, Clone)]
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        // xorshift must not start at zero.
        Random(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..bound` for a workload; `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// The shared history: events in the order they were recorded.
#[derive(Clone)]
struct Recorder {
    started: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn record(&self, event: Event) {
        // A poisoned lock means a client task panicked; its events are still sound.
        let mut events = match self.events.lock() {
            Ok(events) => events,
            Err(poisoned) => poisoned.into_inner(),
        };
        events.push(event);
    }

    fn invoke(&self, process: u64, op: Op) {
        let time_us = self.now_us();
        self.record(Event::Invoke {
            process,
            time_us,
            op,
        });
    }

    fn ok(&self, process: u64, result: OpResult) {
        let time_us = self.now_us();
        self.record(Event::Ok {
            process,
            time_us,
            result,
        });
    }

    fn fail(&self, process: u64, observation: Option<Observation>, error: Option<String>) {
        let time_us = self.now_us();
        self.record(Event::Fail {
            process,
            time_us,
            observation,
            error,
        });
    }

    fn info(&self, process: u64, error: String) {
        let time_us = self.now_us();
        self.record(Event::Info {
            process,
            time_us,
            error: Some(error),
        });
    }
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
    let recorder = Recorder {
        started: Instant::now(),
        events: Arc::default(),
    };
    recorder.record(Event::Init {
        balances: accounts.iter().map(|&a| (a, opening)).collect(),
        min_balances: BTreeMap::new(),
    });

    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..workload.clients {
        let mut rotated = addresses.to_vec();
        rotated.rotate_left(index % addresses.len());
        let client = Client::new(&rotated, workload.client_config.clone())?;
        let context = ClientTask {
            client,
            index: index as u64,
            clients: workload.clients as u64,
            accounts: accounts.clone(),
            workload: workload.clone(),
            recorder: recorder.clone(),
            stop: stop.clone(),
        };
        tasks.spawn(context.run());
    }
    let mut report = WorkloadReport::default();
    while let Some(joined) = tasks.join_next().await {
        // A panicked client task is a bug in this module: surface it.
        let tally = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        report.transfers_ok += tally.transfers_ok;
        report.transfers_refused += tally.transfers_refused;
        report.reads_ok += tally.reads_ok;
        report.reads_failed += tally.reads_failed;
        report.unknown += tally.unknown;
    }

    for (index, addr) in addresses.iter().enumerate() {
        let alone = Client::new(std::slice::from_ref(addr), workload.client_config.clone())?;
        let reply = alone
            .get_balances(&accounts, ReadLevel::Linearizable)
            .await
            .map_err(|e| WorkloadError::FinalRead {
                addr: addr.clone(),
                why: e.to_string(),
            })?;
        let mut balances = BTreeMap::new();
        for entry in reply.balances {
            if let Some(balance) = entry.balance {
                balances.insert(entry.account, balance);
            }
        }
        recorder.record(Event::Final {
            branch: index as u64 + 1,
            balances,
            digest: None,
        });
    }
    let events = match Arc::try_unwrap(recorder.events) {
        Ok(events) => events.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(shared) => match shared.lock() {
            Ok(events) => events.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        },
    };
    report.history = events;
    Ok(report)
}

struct ClientTask {
    client: Client,
    index: u64,
    clients: u64,
    accounts: Vec<AccountId>,
    workload: BankWorkload,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
}

impl ClientTask {
    async fn run(self) -> WorkloadReport {
        let mut tally = WorkloadReport::default();
        let mut random = Random::new(
            self.workload
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(self.index),
        );
        // Process ids: client i is process i, then i + clients after its first unknown outcome,
        // and so on.
        let mut process = self.index;
        let mut done = 0u64;
        while !self.stop.load(Ordering::SeqCst)
            && self.workload.operations_per_client.is_none_or(|n| done < n)
        {
            done += 1;
            if random.below(self.workload.read_every) == 0 {
                self.read(process, &mut tally).await;
                continue;
            }
            let n = self.accounts.len() as u64;
            let from_index = random.below(n);
            let to_index = (from_index + 1 + random.below(n - 1)) % n;
            let (from, to) = (
                self.accounts[from_index as usize],
                self.accounts[to_index as usize],
            );
            let amount = 1 + random.below(self.workload.amount_max);
            if !self.transfer(process, from, to, amount, &mut tally).await {
                process += self.clients;
            }
        }
        tally
    }

    async fn read(&self, process: u64, tally: &mut WorkloadReport) {
        self.recorder.invoke(
            process,
            Op::Read {
                accounts: self.accounts.clone(),
            },
        );
        match self
            .client
            .get_balances(&self.accounts, ReadLevel::Linearizable)
            .await
        {
            Ok(reply) => {
                let balances = reply
                    .balances
                    .iter()
                    .filter_map(|b| b.balance.map(|balance| (b.account, balance)))
                    .collect();
                self.recorder.ok(process, OpResult::read(balances));
                tally.reads_ok += 1;
            }
            Err(e) => {
                // A read changes nothing: one that was not answered did not happen.
                self.recorder.fail(process, None, Some(e.to_string()));
                tally.reads_failed += 1;
            }
        }
    }

    /// Returns false when the outcome is unknown (the process must not be reused).
    async fn transfer(
        &self,
        process: u64,
        from: AccountId,
        to: AccountId,
        amount: u64,
        tally: &mut WorkloadReport,
    ) -> bool {
        let signed_amount = i64::try_from(amount).unwrap_or(i64::MAX);
        self.recorder.invoke(
            process,
            Op::Transfer {
                from,
                to,
                amount: signed_amount,
            },
        );
        match self.client.transfer(from, to, amount).await {
            Ok(written) => match written.outcome() {
                Outcome::Ok => {
                    let result = match (written.result.balance, written.result.to_balance) {
                        (Some(from_balance), Some(to_balance)) => {
                            OpResult::transfer(from_balance, to_balance)
                        }
                        _ => OpResult::default(),
                    };
                    self.recorder.ok(process, result);
                    tally.transfers_ok += 1;
                    true
                }
                Outcome::InsufficientFunds => {
                    let observation = Observation::InsufficientFunds {
                        balance: written.result.balance,
                    };
                    self.recorder.fail(process, Some(observation), None);
                    tally.transfers_refused += 1;
                    true
                }
                other => {
                    // Refused for another reason (nothing applied): a definite failure.
                    self.recorder
                        .fail(process, None, Some(format!("refused: {other:?}")));
                    tally.transfers_refused += 1;
                    true
                }
            },
            Err(e) => {
                self.recorder.info(process, e.to_string());
                tally.unknown += 1;
                false
            }
        }
    }
}

/// Pauses between nemesis steps and similar: bounded, never zero.
pub fn pause(random: &mut Random, min: Duration, max: Duration) -> Duration {
    let span = max.saturating_sub(min).as_millis().max(1) as u64;
    min + Duration::from_millis(random.below(span))
}
