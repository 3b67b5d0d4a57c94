//! `bank bench`: drives a cluster with concurrent `bank.v1` clients and reports throughput,
//! latency percentiles, errors by kind, and an invariant check at the end. The files:
//!
//! - `mod.rs`: its configuration and the run: opening accounts, driving the clients through
//!   [`super::driver`], reading the final balances and checking the invariants; the public
//!   types are re-exported here;
//! - `client.rs`: one bench client, a [`super::driver::LoadClient`]: its requests and tallies;
//! - `mix.rs`: the operation mix ([`Mix`]);
//! - `summary.rs`: what a run measured ([`BenchReport`]) and its human-readable rendering;
//! - `stall.rs`: the longest time without an acknowledged write ([`Stall`]).
//!
//! With a rate (`bank bench --rate`), the load is an open loop ([`super::pacing`]): requests are
//! due at a fixed rate, the clients are the bounded pool that sends them, and every latency is
//! measured from when its request was due.
//!
//! Each client loops: it draws an operation from the mix (deposit / withdraw / transfer /
//! query), or with `batch > 1` a batch of that many writes sent as one `SubmitBatch` (queries
//! then read `batch` accounts at once), and records the request's latency. Accounts are opened
//! first (in batches) with a large balance, so withdrawals and transfers rarely fail.
//!
//! The invariant check reads every account at every branch (linearizably, so each has applied
//! every acknowledged write) and requires that all branches agree and that the total equals the
//! opening total plus acknowledged deposits minus acknowledged withdrawals — within the range
//! left open by writes whose outcome is unknown.

mod client;
mod mix;
mod stall;
mod summary;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::driver::{self, Plan};
use super::history::Recorder;
use super::measure::Tally;
use super::pacing::{rate_is_valid, RATE_MAX, RATE_MIN};
use super::random::Random;
use crate::check::HistoryEvent;
use crate::client::{Client, ClientConfig, ClientError, Outcome, ReadLevel, Write};
use crate::ledger::BATCH_ITEMS_MAX;
use client::BenchClient;
use stall::Acks;

pub use super::driver::Length;
pub use super::measure::{Latency, LatencyPoint, Throughput};
pub use super::pacing::OpenLoop;
pub use mix::Mix;
pub use stall::Stall;
pub use summary::{BenchReport, Invariants};

/// Opening balance of every benchmark account: large, so withdrawals rarely fail.
pub const OPENING_BALANCE: u64 = 1_000_000_000;

/// At most this many callers share one client: what its queue of writes holds.
pub const CALLERS_PER_CLIENT_MAX: usize = crate::client::QUEUED_WRITES_MAX;

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub clients: usize,
    /// Concurrent callers sharing each client (1: one caller per client). Their writes are
    /// batched by the client ([`crate::client::ClientConfig::batching`]).
    pub callers_per_client: usize,
    pub length: Length,
    pub mix: Mix,
    /// Writes per request (1: one operation per request).
    pub batch: usize,
    pub read_level: ReadLevel,
    pub accounts: u64,
    pub seed: u64,
    /// Record a history for `bank check` (only with `batch == 1`; memory grows with the run).
    pub record_history: bool,
    pub client_config: ClientConfig,
    /// Requests due per second (open loop); `None`: each client sends back to back.
    pub rate: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Config(String),
    #[error("opening account {account}: {outcome:?}")]
    Open { account: u64, outcome: Outcome },
    #[error("reading the balances at {addr}: {cause}")]
    Read { addr: String, cause: ClientError },
}

/// Opens accounts `1..=accounts` in batches; accounts that exist already are kept as they are.
async fn open_accounts(client: &Client, accounts: u64) -> Result<(), BenchError> {
    let mut next = 1;
    while next <= accounts {
        let last = accounts.min(next + BATCH_ITEMS_MAX as u64 - 1);
        let writes: Vec<Write> = (next..=last)
            .map(|account| Write::Open {
                account,
                opening_balance: OPENING_BALANCE,
                overdraft_limit: 0,
                balance_max: None,
            })
            .collect();
        let written = client.submit_batch(&writes).await?;
        for (offset, result) in written.reply.results.iter().enumerate() {
            let outcome = result.outcome();
            if !matches!(outcome, Outcome::Ok | Outcome::AccountExists) {
                return Err(BenchError::Open {
                    account: next + offset as u64,
                    outcome,
                });
            }
        }
        next = last + 1;
    }
    Ok(())
}

/// Every account's balance at the branch at `addr` (linearizable), in account order.
pub async fn read_all(
    addr: &str,
    accounts: u64,
    config: &ClientConfig,
) -> Result<Vec<Option<i64>>, BenchError> {
    let client = Client::new(&[addr], config.clone())?;
    let mut balances = Vec::new();
    let mut next = 1;
    while next <= accounts {
        let last = accounts.min(next + BATCH_ITEMS_MAX as u64 - 1);
        let ids: Vec<u64> = (next..=last).collect();
        let reply = client
            .get_balances(&ids, ReadLevel::Linearizable)
            .await
            .map_err(|cause| BenchError::Read {
                addr: addr.to_string(),
                cause,
            })?;
        balances.extend(reply.balances.iter().map(|b| b.balance));
        next = last + 1;
    }
    Ok(balances)
}

fn total(balances: &[Option<i64>]) -> i128 {
    balances.iter().flatten().map(|&b| i128::from(b)).sum()
}

/// The balances that exist, by account (`balances[i]` is account `i + 1`'s).
fn by_account(balances: &[Option<i64>]) -> BTreeMap<u64, i64> {
    balances
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.map(|b| (i as u64 + 1, b)))
        .collect()
}

fn validate(addresses: &[String], config: &BenchConfig) -> Result<(), BenchError> {
    if config.clients == 0 || config.accounts < 2 {
        return Err(BenchError::Config(
            "needs at least 1 client and 2 accounts".to_string(),
        ));
    }
    if config.callers_per_client == 0 || config.callers_per_client > CALLERS_PER_CLIENT_MAX {
        return Err(BenchError::Config(format!(
            "--callers-per-client must be 1..={CALLERS_PER_CLIENT_MAX}"
        )));
    }
    if config.batch == 0 || config.batch > BATCH_ITEMS_MAX {
        return Err(BenchError::Config(format!(
            "--batch must be 1..={BATCH_ITEMS_MAX}"
        )));
    }
    if config.record_history && config.batch > 1 {
        return Err(BenchError::Config(
            "a history can only be recorded with --batch 1".to_string(),
        ));
    }
    if config.rate.is_some_and(|rate| !rate_is_valid(rate)) {
        return Err(BenchError::Config(format!(
            "--rate must be {RATE_MIN}..={RATE_MAX} requests per second"
        )));
    }
    if addresses.is_empty() {
        return Err(BenchError::Client(ClientError::NoBranches));
    }
    Ok(())
}

/// The invariants of the final balances (`finals`, one list per branch, not empty).
fn check_invariants(finals: &[Vec<Option<i64>>], opening_total: i128, tally: &Tally) -> Invariants {
    let branches_agree = finals.windows(2).all(|pair| pair[0] == pair[1]);
    let final_total = finals.first().map_or(0, |balances| total(balances));
    let expected = opening_total + tally.net;
    let negative_balances = finals
        .iter()
        .flatten()
        .flatten()
        .filter(|&&b| b < 0)
        .count() as u64;
    Invariants {
        branches_agree,
        total: final_total,
        expected_min: expected - tally.unknown_out,
        expected_max: expected + tally.unknown_in,
        negative_balances,
        passed: branches_agree
            && negative_balances == 0
            && (expected - tally.unknown_out..=expected + tally.unknown_in).contains(&final_total),
    }
}

/// Runs the benchmark against the branches at `addresses`. `progress` is incremented with
/// every answered operation (for a progress bar).
pub async fn run_bench(
    addresses: &[String],
    config: &BenchConfig,
    progress: Arc<AtomicU64>,
) -> Result<BenchReport, BenchError> {
    validate(addresses, config)?;
    let setup = Client::new(addresses, config.client_config.clone())?;
    open_accounts(&setup, config.accounts).await?;
    let opening = read_all(&addresses[0], config.accounts, &config.client_config).await?;

    let history = config.record_history.then(Recorder::new);
    if let Some(history) = &history {
        history.record(HistoryEvent::Init {
            balances: by_account(&opening),
            balances_min: BTreeMap::new(),
        });
    }
    let acks = Acks::default();
    let callers = config.callers_per_client;
    let mut bench_clients = Vec::with_capacity(config.clients.saturating_mul(callers));
    for index in 0..config.clients {
        let mut rotated = addresses.to_vec();
        rotated.rotate_left(index % addresses.len());
        let client = Arc::new(Client::new(&rotated, config.client_config.clone())?);
        // Caller `caller` is the driver's client (and the history's process) of that number.
        for caller in index * callers..(index + 1) * callers {
            bench_clients.push(BenchClient {
                client: client.clone(),
                mix: config.mix,
                batch: config.batch,
                read_level: config.read_level,
                accounts: config.accounts,
                random: Random::new(
                    config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ caller as u64,
                ),
                progress: progress.clone(),
                acks: acks.clone(),
                tally: Tally::new(),
            });
        }
    }
    let plan = Plan {
        history: history.clone(),
        rate: config.rate,
        ..Plan::new(config.length)
    };
    let driven = driver::run(bench_clients, plan).await;
    let mut tally = Tally::new();
    for caller in driven.clients {
        tally.merge(caller.tally);
    }

    let mut finals = Vec::with_capacity(addresses.len());
    for addr in addresses {
        finals.push(read_all(addr, config.accounts, &config.client_config).await?);
    }
    let invariants = check_invariants(&finals, total(&opening), &tally);
    let history = match history {
        Some(history) => {
            for (index, balances) in finals.iter().enumerate() {
                history.record(HistoryEvent::Final {
                    branch: index as u64 + 1,
                    balances: by_account(balances),
                    digest: None,
                });
            }
            history.into_events()
        }
        None => Vec::new(),
    };
    let elapsed_s = driven.elapsed.as_secs_f64();
    Ok(BenchReport {
        branches: addresses.len(),
        clients: config.clients,
        callers_per_client: callers,
        batch: config.batch,
        accounts: config.accounts,
        mix: config.mix,
        elapsed_s,
        operations: tally.operations,
        operations_per_s: tally.operations as f64 / elapsed_s.max(1e-9),
        latency: Latency::of(&tally.all()),
        latency_by_kind: tally.latency_by_kind(),
        latency_curves: tally.latency_curves(),
        errors: tally.errors,
        longest_stall: acks.longest(),
        invariants,
        history,
        throughput: driven.throughput,
        open_loop: driven.open_loop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invariants_allow_for_unknown_outcomes_only() {
        let mut tally = Tally::new();
        tally.net = 30;
        tally.unknown(20);
        tally.unknown(-5);
        let agree = vec![vec![Some(100), Some(40)], vec![Some(100), Some(40)]];
        let checked = check_invariants(&agree, 100, &tally);
        assert!(checked.passed && checked.branches_agree);
        assert_eq!((checked.expected_min, checked.expected_max), (125, 150));
        let off = vec![vec![Some(100), Some(60)]];
        assert!(!check_invariants(&off, 100, &tally).passed);
        let split = vec![vec![Some(140), None], vec![Some(100), Some(40)]];
        assert!(!check_invariants(&split, 100, &tally).branches_agree);
        let negative = vec![vec![Some(150), Some(-10)]];
        assert_eq!(
            check_invariants(&negative, 100, &tally).negative_balances,
            1
        );
    }

    #[tokio::test]
    async fn bad_configurations_are_refused_before_any_call() {
        let mut config = BenchConfig {
            clients: 1,
            callers_per_client: 1,
            length: Length::Count(1),
            mix: Mix::default(),
            batch: 1,
            read_level: ReadLevel::Linearizable,
            accounts: 10,
            seed: 1,
            record_history: true,
            client_config: ClientConfig::default(),
            rate: None,
        };
        let progress = Arc::new(AtomicU64::new(0));
        let no_branch = run_bench(&[], &config, progress.clone()).await;
        assert!(matches!(
            no_branch,
            Err(BenchError::Client(ClientError::NoBranches))
        ));
        config.batch = 2;
        let batched = run_bench(&[], &config, progress).await;
        assert!(matches!(batched, Err(BenchError::Config(m)) if m.contains("--batch 1")));
        config.batch = 1;
        config.rate = Some(0.0);
        let stopped = run_bench(&["127.0.0.1:1".to_string()], &config, Arc::default()).await;
        assert!(matches!(stopped, Err(BenchError::Config(m)) if m.contains("--rate")));
    }
}
