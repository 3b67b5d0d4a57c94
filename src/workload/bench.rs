//! `bank bench`: drives a cluster with concurrent `bank.v1` clients and reports throughput,
//! latency percentiles, errors by kind, and an invariant check at the end.
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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::check::{Event, Observation, Op, OpResult};
use crate::client::{Client, ClientConfig, ClientError, Outcome, ReadLevel, Write};
use crate::ledger::BATCH_ITEMS_MAX;
use crate::workload::jepsen::Random;

/// Opening balance of every benchmark account: large, so withdrawals rarely fail.
pub const OPENING_BALANCE: u64 = 1_000_000_000;

/// Amounts are drawn from `1..=AMOUNT_MAX`.
const AMOUNT_MAX: u64 = 100;

/// Percentages of each operation; they add up to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mix {
    pub deposit: u32,
    pub withdraw: u32,
    pub transfer: u32,
    pub query: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            deposit: 25,
            withdraw: 25,
            transfer: 25,
            query: 25,
        }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;

    /// `deposit=40,withdraw=10,transfer=40,query=10`; operations left out get 0.
    fn from_str(text: &str) -> Result<Mix, String> {
        let mut mix = Mix {
            deposit: 0,
            withdraw: 0,
            transfer: 0,
            query: 0,
        };
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not OPERATION=PERCENT"))?;
            let value: u32 = value
                .trim()
                .parse()
                .map_err(|_| format!("{value:?} in {part:?} is not a whole percentage"))?;
            let slot = match name.trim() {
                "deposit" => &mut mix.deposit,
                "withdraw" => &mut mix.withdraw,
                "transfer" => &mut mix.transfer,
                "query" => &mut mix.query,
                other => {
                    return Err(format!(
                        "unknown operation {other:?}: use deposit, withdraw, transfer, query"
                    ))
                }
            };
            *slot = value;
        }
        let total = u64::from(mix.deposit)
            + u64::from(mix.withdraw)
            + u64::from(mix.transfer)
            + u64::from(mix.query);
        if total != 100 {
            return Err(format!("the percentages add up to {total}, not 100"));
        }
        Ok(mix)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deposit,
    Withdraw,
    Transfer,
    Query,
}

impl Mix {
    fn draw(&self, random: &mut Random) -> Kind {
        let roll = random.below(100) as u32;
        if roll < self.deposit {
            Kind::Deposit
        } else if roll < self.deposit + self.withdraw {
            Kind::Withdraw
        } else if roll < self.deposit + self.withdraw + self.transfer {
            Kind::Transfer
        } else {
            Kind::Query
        }
    }
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Length {
    /// Until this much time has passed.
    Duration(Duration),
    /// Until this many operations (batch items count one each) have been sent.
    Count(u64),
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub clients: usize,
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
}

/// Latency percentiles of one kind of request, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub requests: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        Latency {
            requests: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// The invariant check's findings.
#[derive(Debug, Clone, Serialize)]
pub struct Invariants {
    pub branches_agree: bool,
    pub total: i128,
    pub expected_min: i128,
    pub expected_max: i128,
    pub negative_balances: u64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub branches: usize,
    pub clients: usize,
    pub batch: usize,
    pub accounts: u64,
    pub mix: Mix,
    pub elapsed_s: f64,
    /// Operations that got an answer (batch items count one each).
    pub operations: u64,
    pub operations_per_s: f64,
    pub latency: Latency,
    pub latency_by_kind: BTreeMap<String, Latency>,
    /// Refused or failed operations, by kind of error.
    pub errors: BTreeMap<String, u64>,
    pub invariants: Invariants,
    #[serde(skip)]
    pub history: Vec<Event>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Config(String),
    #[error("opening account {account}: {outcome:?}")]
    Open { account: u64, outcome: Outcome },
    #[error("reading the balances at {addr}: {source}")]
    Read { addr: String, source: ClientError },
}

/// What one client measured.
struct Tally {
    histograms: BTreeMap<&'static str, Histogram<u64>>,
    errors: BTreeMap<String, u64>,
    operations: u64,
    /// Acknowledged deposits minus withdrawals.
    net: i128,
    /// Deposits / withdrawals whose outcome is unknown.
    unknown_in: i128,
    unknown_out: i128,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

impl Tally {
    fn new() -> Tally {
        Tally {
            histograms: BTreeMap::new(),
            errors: BTreeMap::new(),
            operations: 0,
            net: 0,
            unknown_in: 0,
            unknown_out: 0,
        }
    }

    fn record(&mut self, kind: &'static str, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.histograms
            .entry(kind)
            .or_insert_with(histogram)
            .saturating_record(micros);
    }

    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }
}

fn error_kind(error: &ClientError) -> String {
    match error {
        ClientError::OutcomeUnknown { .. } => "outcome_unknown".to_string(),
        ClientError::Unavailable { .. } => "unavailable".to_string(),
        ClientError::Refused { status, .. } => {
            format!("refused_{:?}", status.code()).to_lowercase()
        }
        ClientError::NoBranches | ClientError::BadAddress { .. } => "client".to_string(),
    }
}

fn outcome_kind(outcome: Outcome) -> String {
    format!("{outcome:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let lower = c.to_ascii_lowercase();
            if c.is_ascii_uppercase() && i > 0 {
                vec!['_', lower]
            } else {
                vec![lower]
            }
        })
        .collect()
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
            .map_err(|source| BenchError::Read {
                addr: addr.to_string(),
                source,
            })?;
        balances.extend(reply.balances.iter().map(|b| b.balance));
        next = last + 1;
    }
    Ok(balances)
}

fn total(balances: &[Option<i64>]) -> i128 {
    balances.iter().flatten().map(|&b| i128::from(b)).sum()
}

/// Runs the benchmark against the branches at `addresses`. `progress` is incremented with
/// every answered operation (for a progress bar).
pub async fn run_bench(
    addresses: &[String],
    config: &BenchConfig,
    progress: Arc<AtomicU64>,
) -> Result<BenchReport, BenchError> {
    if config.clients == 0 || config.accounts < 2 {
        return Err(BenchError::Config(
            "needs at least 1 client and 2 accounts".to_string(),
        ));
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
    let setup = Client::new(addresses, config.client_config.clone())?;
    open_accounts(&setup, config.accounts).await?;
    let opening = read_all(&addresses[0], config.accounts, &config.client_config).await?;
    let opening_total = total(&opening);

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let history = Arc::new(Mutex::new(Vec::new()));
    if config.record_history {
        let mut events = history.lock().unwrap_or_else(|p| p.into_inner());
        events.push(Event::Init {
            balances: opening
                .iter()
                .enumerate()
                .filter_map(|(i, b)| b.map(|b| (i as u64 + 1, b)))
                .collect(),
            min_balances: BTreeMap::new(),
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..config.clients {
        let mut rotated = addresses.to_vec();
        rotated.rotate_left(index % addresses.len());
        let client = Client::new(&rotated, config.client_config.clone())?;
        let worker = Worker {
            client,
            config: config.clone(),
            random: Random::new(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64),
            process: index as u64,
            started,
            stop: stop.clone(),
            sent: sent.clone(),
            progress: progress.clone(),
            history: config.record_history.then(|| history.clone()),
        };
        tasks.spawn(worker.run());
    }
    if let Length::Duration(duration) = config.length {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::SeqCst);
        });
    }
    let mut merged = Tally::new();
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        for (kind, histogram) in tally.histograms {
            let into = merged
                .histograms
                .entry(kind)
                .or_insert_with(self::histogram);
            // Same bounds on both sides: adding cannot fail.
            let _ = into.add(&histogram);
        }
        for (kind, count) in tally.errors {
            *merged.errors.entry(kind).or_default() += count;
        }
        merged.operations += tally.operations;
        merged.net += tally.net;
        merged.unknown_in += tally.unknown_in;
        merged.unknown_out += tally.unknown_out;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);

    let mut finals = Vec::with_capacity(addresses.len());
    for addr in addresses {
        finals.push(read_all(addr, config.accounts, &config.client_config).await?);
    }
    let branches_agree = finals.windows(2).all(|pair| pair[0] == pair[1]);
    let final_total = total(&finals[0]);
    let expected = opening_total + merged.net;
    let negative_balances = finals
        .iter()
        .flatten()
        .flatten()
        .filter(|&&b| b < 0)
        .count() as u64;
    let invariants = Invariants {
        branches_agree,
        total: final_total,
        expected_min: expected - merged.unknown_out,
        expected_max: expected + merged.unknown_in,
        negative_balances,
        passed: branches_agree
            && negative_balances == 0
            && (expected - merged.unknown_out..=expected + merged.unknown_in)
                .contains(&final_total),
    };
    let mut all = histogram();
    for histogram in merged.histograms.values() {
        let _ = all.add(histogram);
    }
    let mut events = match Arc::try_unwrap(history) {
        Ok(events) => events.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(shared) => shared.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    };
    if config.record_history {
        for (index, balances) in finals.iter().enumerate() {
            events.push(Event::Final {
                branch: index as u64 + 1,
                balances: balances
                    .iter()
                    .enumerate()
                    .filter_map(|(i, b)| b.map(|b| (i as u64 + 1, b)))
                    .collect(),
                digest: None,
            });
        }
    }
    Ok(BenchReport {
        branches: addresses.len(),
        clients: config.clients,
        batch: config.batch,
        accounts: config.accounts,
        mix: config.mix,
        elapsed_s: elapsed.as_secs_f64(),
        operations: merged.operations,
        operations_per_s: merged.operations as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Latency::of(&all),
        latency_by_kind: merged
            .histograms
            .iter()
            .map(|(kind, h)| (kind.to_string(), Latency::of(h)))
            .collect(),
        errors: merged.errors,
        invariants,
        history: events,
    })
}

struct Worker {
    client: Client,
    config: BenchConfig,
    random: Random,
    process: u64,
    started: Instant,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    progress: Arc<AtomicU64>,
    history: Option<Arc<Mutex<Vec<Event>>>>,
}

impl Worker {
    /// Claims `n` operations of the run's count; false when the run is over.
    fn claim(&self, n: u64) -> bool {
        if self.stop.load(Ordering::SeqCst) {
            return false;
        }
        match self.config.length {
            Length::Count(count) => self.sent.fetch_add(n, Ordering::SeqCst) < count,
            Length::Duration(_) => true,
        }
    }

    fn account(&mut self) -> u64 {
        1 + self.random.below(self.config.accounts)
    }

    fn write(&mut self, kind: Kind) -> Write {
        let amount = 1 + self.random.below(AMOUNT_MAX);
        match kind {
            Kind::Deposit => Write::Deposit {
                account: self.account(),
                amount,
            },
            Kind::Withdraw => Write::Withdraw {
                account: self.account(),
                amount,
            },
            Kind::Transfer | Kind::Query => {
                let from = self.account();
                let to =
                    1 + (from + self.random.below(self.config.accounts - 1)) % self.config.accounts;
                Write::Transfer { from, to, amount }
            }
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn log(&self, event: Event) {
        if let Some(history) = &self.history {
            history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(event);
        }
    }

    async fn run(mut self) -> Tally {
        let mut tally = Tally::new();
        let batch = self.config.batch;
        while self.claim(batch as u64) {
            let kind = self.config.mix.draw(&mut self.random);
            if kind == Kind::Query {
                self.query(batch, &mut tally).await;
            } else if batch == 1 {
                let write = self.write(kind);
                self.single(write, &mut tally).await;
            } else {
                let writes: Vec<Write> = (0..batch)
                    .map(|_| {
                        let kind = loop {
                            let kind = self.config.mix.draw(&mut self.random);
                            if kind != Kind::Query {
                                break kind;
                            }
                        };
                        self.write(kind)
                    })
                    .collect();
                self.batch(&writes, &mut tally).await;
            }
        }
        tally
    }

    async fn query(&mut self, accounts: usize, tally: &mut Tally) {
        let ids: Vec<u64> = (0..accounts).map(|_| self.account()).collect();
        if self.history.is_some() {
            self.log(Event::Invoke {
                process: self.process,
                time_us: self.now_us(),
                op: Op::Read {
                    accounts: ids.clone(),
                },
            });
        }
        let began = Instant::now();
        let read = self.client.get_balances(&ids, self.config.read_level).await;
        tally.record("query", began.elapsed());
        match read {
            Ok(reply) => {
                tally.operations += accounts as u64;
                self.progress.fetch_add(accounts as u64, Ordering::Relaxed);
                if self.history.is_some() {
                    let balances = reply
                        .balances
                        .iter()
                        .filter_map(|b| b.balance.map(|v| (b.account, v)))
                        .collect();
                    self.log(Event::Ok {
                        process: self.process,
                        time_us: self.now_us(),
                        result: OpResult::read(balances),
                    });
                }
            }
            Err(e) => {
                tally.error(format!("query_{}", error_kind(&e)));
                self.log(Event::Fail {
                    process: self.process,
                    time_us: self.now_us(),
                    observation: None,
                    error: Some(e.to_string()),
                });
            }
        }
    }

    async fn single(&mut self, write: Write, tally: &mut Tally) {
        let (kind, op, delta) = match write {
            Write::Deposit { account, amount } => (
                "deposit",
                Op::Deposit {
                    account,
                    amount: amount as i64,
                },
                amount as i128,
            ),
            Write::Withdraw { account, amount } => (
                "withdraw",
                Op::Withdraw {
                    account,
                    amount: amount as i64,
                },
                -(amount as i128),
            ),
            Write::Transfer { from, to, amount } => (
                "transfer",
                Op::Transfer {
                    from,
                    to,
                    amount: amount as i64,
                },
                0,
            ),
            Write::Open { .. } => return,
        };
        self.log(Event::Invoke {
            process: self.process,
            time_us: self.now_us(),
            op,
        });
        let began = Instant::now();
        let written = self.client.write(write).await;
        tally.record(kind, began.elapsed());
        match written {
            Ok(written) => {
                tally.operations += 1;
                self.progress.fetch_add(1, Ordering::Relaxed);
                match written.outcome() {
                    Outcome::Ok => {
                        tally.net += delta;
                        let result = match kind {
                            "transfer" => match (written.result.balance, written.result.to_balance)
                            {
                                (Some(f), Some(t)) => OpResult::transfer(f, t),
                                _ => OpResult::default(),
                            },
                            _ => written
                                .result
                                .balance
                                .map(OpResult::balance)
                                .unwrap_or_default(),
                        };
                        self.log(Event::Ok {
                            process: self.process,
                            time_us: self.now_us(),
                            result,
                        });
                    }
                    outcome => {
                        tally.error(format!("{kind}_{}", outcome_kind(outcome)));
                        let observation = (outcome == Outcome::InsufficientFunds).then_some(
                            Observation::InsufficientFunds {
                                balance: written.result.balance,
                            },
                        );
                        self.log(Event::Fail {
                            process: self.process,
                            time_us: self.now_us(),
                            observation,
                            error: Some(format!("{outcome:?}")),
                        });
                    }
                }
            }
            Err(e) => {
                tally.error(format!("{kind}_{}", error_kind(&e)));
                if delta > 0 {
                    tally.unknown_in += delta;
                } else {
                    tally.unknown_out -= delta;
                }
                self.log(Event::Info {
                    process: self.process,
                    time_us: self.now_us(),
                    error: Some(e.to_string()),
                });
                // As in Jepsen: a process with an operation in doubt is not reused.
                self.process += self.config.clients as u64;
            }
        }
    }

    async fn batch(&mut self, writes: &[Write], tally: &mut Tally) {
        let began = Instant::now();
        let written = self.client.submit_batch(writes).await;
        tally.record("batch", began.elapsed());
        let delta = |write: &Write| match *write {
            Write::Deposit { amount, .. } => amount as i128,
            Write::Withdraw { amount, .. } => -(amount as i128),
            _ => 0,
        };
        match written {
            Ok(written) if written.reply.outcome() == Outcome::Ok => {
                tally.operations += writes.len() as u64;
                self.progress
                    .fetch_add(writes.len() as u64, Ordering::Relaxed);
                for (write, result) in writes.iter().zip(&written.reply.results) {
                    match result.outcome() {
                        Outcome::Ok => tally.net += delta(write),
                        outcome => tally.error(format!("batch_item_{}", outcome_kind(outcome))),
                    }
                }
            }
            Ok(written) => tally.error(format!("batch_{}", outcome_kind(written.reply.outcome()))),
            Err(e) => {
                tally.error(format!("batch_{}", error_kind(&e)));
                for write in writes {
                    let d = delta(write);
                    if d > 0 {
                        tally.unknown_in += d;
                    } else {
                        tally.unknown_out -= d;
                    }
                }
            }
        }
    }
}

/// What [`drive`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct DriveReport {
    pub clients: usize,
    pub elapsed_s: f64,
    /// Operations that succeeded.
    pub operations: u64,
    pub operations_per_s: f64,
    pub latency: Latency,
    pub errors: BTreeMap<String, u64>,
}

/// The load generator on its own, for any system: `clients` tasks, each with its own
/// connection from `connect`, call `operation(connection, client, n)` back to back until
/// `length` is reached, and every call's latency is recorded. `bank-etcd-compare` drives bank
/// and etcd through this same function, so the two are measured the same way.
pub async fn drive<C, Connect, Op, Fut>(
    clients: usize,
    length: Length,
    connect: Connect,
    operation: Op,
) -> DriveReport
where
    C: Send + 'static,
    Connect: Fn(usize) -> C,
    Op: Fn(&C, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    if let Length::Duration(duration) = length {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::SeqCst);
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let connection = connect(client);
        let (operation, stop, sent) = (operation.clone(), stop.clone(), sent.clone());
        tasks.spawn(async move {
            let mut tally = Tally::new();
            let mut n = 0u64;
            loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Length::Count(count) = length {
                    if sent.fetch_add(1, Ordering::SeqCst) >= count {
                        break;
                    }
                }
                let began = Instant::now();
                let result = operation(&connection, client, n).await;
                n += 1;
                match result {
                    Ok(()) => {
                        tally.record("all", began.elapsed());
                        tally.operations += 1;
                    }
                    Err(kind) => tally.error(kind),
                }
            }
            tally
        });
    }
    let mut all = histogram();
    let mut errors = BTreeMap::new();
    let mut operations = 0;
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        for histogram in tally.histograms.values() {
            let _ = all.add(histogram);
        }
        for (kind, count) in tally.errors {
            *errors.entry(kind).or_default() += count;
        }
        operations += tally.operations;
    }
    let elapsed = started.elapsed().as_secs_f64();
    DriveReport {
        clients,
        elapsed_s: elapsed,
        operations,
        operations_per_s: operations as f64 / elapsed.max(1e-9),
        latency: Latency::of(&all),
        errors,
    }
}

impl BenchReport {
    /// The human-readable summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(
            &mut out,
            format!(
                "{} operations in {:.2} s: {:.0} ops/s ({} branches, {} clients, batch {}, {} accounts)",
                self.operations,
                self.elapsed_s,
                self.operations_per_s,
                self.branches,
                self.clients,
                self.batch,
                self.accounts
            ),
        );
        line(
            &mut out,
            format!(
                "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "latency", "requests", "p50", "p90", "p99", "p99.9", "max"
            ),
        );
        let row = |name: &str, l: &Latency| {
            format!(
                "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name,
                l.requests,
                micros(l.p50_us),
                micros(l.p90_us),
                micros(l.p99_us),
                micros(l.p999_us),
                micros(l.max_us)
            )
        };
        for (kind, latency) in &self.latency_by_kind {
            line(&mut out, row(kind, latency));
        }
        line(&mut out, row("all", &self.latency));
        if self.errors.is_empty() {
            line(&mut out, "errors: none".to_string());
        } else {
            let errors: Vec<String> = self
                .errors
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            line(&mut out, format!("errors: {}", errors.join(", ")));
        }
        let i = &self.invariants;
        line(
            &mut out,
            format!(
                "invariants: {} (branches agree: {}, total {} expected {}..={}, negative balances {})",
                if i.passed { "ok" } else { "VIOLATED" },
                i.branches_agree,
                i.total,
                i.expected_min,
                i.expected_max,
                i.negative_balances
            ),
        );
        out
    }
}

fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}ms", us as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_must_add_up() {
        let mix: Mix = "deposit=40,transfer=60".parse().expect("valid");
        assert_eq!(
            mix,
            Mix {
                deposit: 40,
                withdraw: 0,
                transfer: 60,
                query: 0
            }
        );
        assert!("deposit=40".parse::<Mix>().unwrap_err().contains("40"));
        assert!("teleport=100"
            .parse::<Mix>()
            .unwrap_err()
            .contains("teleport"));
        assert!("deposit=x".parse::<Mix>().is_err());
    }

    #[tokio::test]
    async fn drive_counts_and_times_every_operation() {
        let report = drive(
            3,
            Length::Count(30),
            |client| client,
            |_, _, n| async move {
                if n % 5 == 4 {
                    Err("every fifth".to_string())
                } else {
                    Ok(())
                }
            },
        )
        .await;
        assert_eq!(report.operations + report.errors["every fifth"], 30);
        assert_eq!(report.latency.requests, report.operations);
    }

    #[test]
    fn outcome_kinds_are_snake_case() {
        assert_eq!(
            outcome_kind(Outcome::InsufficientFunds),
            "insufficient_funds"
        );
    }
}
