//! Deterministic simulation: a whole cluster inside turmoil, one run per seed.
//!
//! A run ([`run`]) builds a turmoil `Sim` with three branch hosts and one to three customer
//! hosts, all on the calling thread with simulated time. From the seed it draws:
//! - turmoil's own generator (message latency, message loss);
//! - Raft's election timeouts ([`crate::retry::seed_thread_rng`]);
//! - each branch incarnation's request-id origin ([`BranchBuilder::origin`]) and each customer's
//!   client origin ([`Client::from_channels`](crate::client::Client::from_channels));
//! - the snapshot policy: a snapshot every 10 to 40 log entries, 0 to 8 entries kept behind it;
//! - a fault schedule ([`faults::Schedule`]): one to six of partitions, an isolated leader,
//!   one-way partitions, held (paused) links, crash + restart, message loss, latency spikes;
//! - the accounts (the original one and two to five more, with their opening balances) and the
//!   customers ([`customers`]): each is either a *bank customer* running Jepsen's bank workload
//!   (transfers, deposits, withdrawals, reads of every account, most linearizable, some at
//!   `READ_YOUR_WRITES` or `LOCAL`) on the `bank.v1`
//!   API through the real [`crate::client::Client`] and its retries under one request id, or
//!   (one in four) an *original customer* calling `Branch.MsgDelivery` on the original account.
//!
//! After the fault window every fault is healed; the branches must then converge (equal
//! ledgers at the same applied index), and the run is judged:
//! - [`crate::check`] on the whole history: linearizability per account, conservation of
//!   money, minimum balances, and the branches' final states (convergence);
//! - [`original_account::judge`], the simple judge of the original account's calls;
//! - [`exactly_once::check`]: every answered write applied exactly once, every unknown one at
//!   most once, against the committed log the branches applied; and every `READ_YOUR_WRITES`
//!   or `LOCAL` read shows the state at the index it was served at (the checker would take
//!   them for linearizable reads, so they are not in its history).
//!
//! State per host: each branch's Raft log ([`LogStore`]) and its latest snapshot live outside
//! its host, so a crash and restart (`Sim::crash` + `Sim::bounce`) keeps them, as a disk would.
//! The log is on a simulated disk ([`disk`]): an append is acknowledged only after its sync
//! (0 to 2 ms per seed), and each crash does a drawn storage fault to the disk: unsynced
//! writes kept, lost or torn, or (at most once a run) a flipped bit or a zeroed block in a
//! synced log entry or the snapshot, which the restarted branch must find and refuse to start
//! on (the other two branches carry on and converge without it). The applied state is memory: a restarted branch starts from its snapshot
//! ([`StateMachineStore::restarted`]) and re-applies the committed log after it. So seeds
//! exercise snapshot building, log purging, restarting from snapshot + log, and installing a
//! snapshot on a follower that fell behind the purged log ([`Stats`] counts them).
//!
//! Replay: a failing seed prints `BANK_SIM_SEED=<seed> cargo test --test simulation --
//! --nocapture seeds`, which runs that seed alone and prints its whole trace.

pub mod customers;
pub mod disk;
pub mod exactly_once;
pub mod faults;
mod judge;
pub mod original_account;
pub mod record;
pub mod transport;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::check::HistoryEvent;
use crate::ledger::{AccountId, Command, ORIGINAL_ACCOUNT};
use crate::node::{Branch, BranchBuilder, Storage};
use crate::raft::log_store::LogStore;
use crate::raft::network::Peers;
use crate::raft::state_machine::{StateMachineData, StateMachineStore};
use crate::retry::{seed_thread_rng, unseed_thread_rng};
use crate::server::{self, ServerConfig};
use crate::BranchId;
use customers::{Customer, Records};
use record::SimRecord;

/// The port every simulated branch serves on.
const PORT: u16 = 50051;
/// Branches per run.
pub const BRANCHES: u64 = 3;
/// Faults start after this: the cluster has elected a leader and opened the accounts.
pub const FAULTS_START: Duration = Duration::from_secs(3);
/// Faults stop, everything is healed and customers stop starting calls here.
pub const FAULTS_END: Duration = Duration::from_secs(9);
/// Bound on converging after the heal.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(20);
/// Bound on a whole run in simulated time; a run that needs more fails.
const SIMULATION_MAX: Duration = Duration::from_secs(60);

/// A deliberately broken variant, to show the simulator can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The real thing.
    Nothing,
    /// Reads skip the read index and serve the local replica (stale reads).
    LocalReads,
    /// The disk acknowledges appends before they are synced: a restarted branch has lost the
    /// last few entries it had acknowledged.
    UnsyncedAcks,
    /// The ledger ignores request ids: every proposal is applied under a fresh id of its own,
    /// so a write retried under its request id (by the client or the branch) after its first
    /// attempt committed is applied twice.
    IgnoredRequestIds,
    /// The log store ignores its checksums, and every crash damages a synced log entry: a
    /// restarted branch serves what the damage left.
    IgnoredChecksums,
}

/// What one seed's run is made of.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub broken: Broken,
}

/// What a run exercised, summed over its branches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub snapshots_built: u64,
    pub snapshots_installed: u64,
    pub restarts_from_snapshot: u64,
    /// Branches whose log was purged behind a snapshot by the end.
    pub branches_purged: u64,
    pub writes_answered: u64,
    pub writes_unknown: u64,
    /// Reads at `READ_YOUR_WRITES` or `LOCAL` answered.
    pub weak_reads: u64,
    pub original_calls: u64,
    /// Restarts refused because the branch found its own data damaged.
    pub refused_starts: u64,
}

/// What a run did and what the judge found.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub schedule: String,
    /// Every fault as applied, with its simulated time.
    pub applied: Vec<String>,
    /// The history, in [`crate::check`]'s format.
    pub history: Vec<HistoryEvent>,
    /// Each branch's applied index and ledger digest at convergence.
    pub final_states: Vec<(BranchId, Option<u64>, u64)>,
    pub stats: Stats,
    pub violations: Vec<String>,
    pub simulated: Duration,
}

fn event_line(event: &HistoryEvent) -> String {
    serde_json::to_string(event).unwrap_or_else(|e| format!("{event:?} ({e})"))
}

impl Report {
    /// Everything that must be equal between two runs of the same seed.
    pub fn trace(&self) -> String {
        let mut trace = format!("{}\n", self.schedule);
        for line in &self.applied {
            let _ = writeln!(trace, "{line}");
        }
        for event in &self.history {
            let _ = writeln!(trace, "{}", event_line(event));
        }
        let _ = writeln!(trace, "{:?}", self.final_states);
        let _ = writeln!(trace, "{:?}", self.stats);
        let _ = writeln!(trace, "{:?} {:?}", self.violations, self.simulated);
        trace
    }

    /// A failing run, explained: how to replay it, the faults, what was wrong, the history.
    pub fn explain(&self) -> String {
        let mut text = format!(
            "seed {} failed; replay: BANK_SIM_SEED={} cargo test --test simulation -- --nocapture seeds\n{}\nfaults applied:\n",
            self.seed, self.seed, self.schedule
        );
        for line in &self.applied {
            let _ = writeln!(text, "  {line}");
        }
        let _ = writeln!(text, "violations:");
        for violation in &self.violations {
            let _ = writeln!(text, "  {violation}");
        }
        let _ = writeln!(
            text,
            "final states (branch, applied, digest): {:?}",
            self.final_states
        );
        let _ = writeln!(text, "{:?}", self.stats);
        let _ = writeln!(text, "history ({} events):", self.history.len());
        for event in &self.history {
            let _ = writeln!(text, "  {}", event_line(event));
        }
        text
    }
}

/// A 64-bit mix (splitmix64), to derive independent seeds from one.
pub fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn branch_host(id: BranchId) -> String {
    format!("branch{id}")
}

fn branch_addr(id: BranchId) -> String {
    format!("{}:{PORT}", branch_host(id))
}

/// What lives outside a branch host and so survives its crash: its log and its snapshot (the
/// "disk"), what the simulator records of it, and a handle to its current incarnation.
#[derive(Clone)]
struct HostState {
    log: LogStore,
    /// The first incarnation's state machine; later ones are [`StateMachineStore::restarted`]
    /// from it and share its snapshot.
    disk: StateMachineStore,
    record: Arc<SimRecord>,
    current: Rc<RefCell<Option<Branch>>>,
    incarnations: Rc<Cell<u64>>,
    /// What the last crash does to the disk, applied at the restart.
    crash_fault: Rc<Cell<Option<disk::DiskFault>>>,
    /// Whether its synced data was damaged (it must then never start again in this run).
    damaged: Rc<Cell<bool>>,
    /// Whether it refused to start (it is then left out of the convergence).
    refused: Rc<Cell<bool>>,
    /// What its restarts found, with their simulated times, for the trace; and violations.
    restarts: Rc<RefCell<Vec<String>>>,
    mishandled: Rc<RefCell<Vec<String>>>,
}

impl HostState {
    fn new(broken: Broken, disk: &disk::DiskPlan) -> Self {
        let record = Arc::new(SimRecord {
            ignore_request_ids: broken == Broken::IgnoredRequestIds,
            ..SimRecord::default()
        });
        HostState {
            log: disk.log(),
            disk: StateMachineStore::observed(record.clone()),
            record,
            current: Rc::default(),
            incarnations: Rc::default(),
            crash_fault: Rc::default(),
            damaged: Rc::default(),
            refused: Rc::default(),
            restarts: Rc::default(),
            mishandled: Rc::default(),
        }
    }
}

/// A converged branch: its applied state and the index its log is purged up to.
type Converged = (BranchId, StateMachineData, Option<u64>);

/// Where the judge host leaves the converged states (or why they did not converge).
type Convergence = Rc<RefCell<Option<Result<Vec<Converged>, String>>>>;

/// The accounts a run opens before its customers start, with their opening balances.
#[derive(Debug, Clone)]
struct Accounts {
    /// The original API's account's opening balance.
    original: i64,
    /// The bank customers' accounts, `1..=n`.
    bank: BTreeMap<AccountId, i64>,
}

/// Runs one seed and judges it.
///
/// Reproducible: the run of a seed in a fresh process is the same every time (what the replay
/// command does), and so is a second run in the same process, on one thread: tokio's
/// process-wide task ids are aligned first ([`align_task_ids`]). Two things are not yet exact:
/// - seeds run in parallel threads (the `seeds` test) share that task-id counter, so a crash
///   can drop tasks in another order than in a replay: a failure found there may replay with a
///   millisecond's difference;
/// - a few seeds (seed 24: message loss and a held link) end one of two ways in fresh
///   processes (3 times in 10 for seed 24; no other of seeds 0..60 differed in 3 runs each).
///   Found with `BANK_SIM_LOG=debug` (see `tests/simulation.rs`): the first difference is a
///   branch's server connection that answers a customer's GOAWAY and closes at once in one run
///   and later in the other. h2 keeps a stream it reset locally for 1 s of *wall-clock* time
///   (`std::time::Instant`), and a connection with such a stream does not close yet; so how
///   fast the machine ran the seed decides. The simulated client channels remember reset
///   streams for an hour ([`transport`]), but tonic 0.14's `Server` builder offers neither
///   `http2_reset_stream_duration` nor `http2_max_concurrent_reset_streams` for the branches'
///   side. Fixing it needs that setting in tonic (or a `[patch]` of h2).
pub fn run(config: &SimConfig) -> Report {
    align_task_ids();
    seed_thread_rng(mix(config.seed, 1));
    let report = run_seeded(config);
    unseed_thread_rng();
    report
}

/// Brings tokio's process-wide task-id counter to where a fresh process starts it, modulo 4.
///
/// Why: a crash drops a host's runtime, which shuts its tasks down shard by shard, and a task's
/// shard is its id modulo 4 (tokio's `OwnedTasks` on a current-thread runtime). Task ids come
/// from one counter for the whole process, so without this a second run of a seed in the same
/// process drops the crashed host's tasks (and closes their simulated connections) in another
/// order, and the run differs by a millisecond here and there. Spawning throwaway tasks until
/// the next id is 1 modulo 4 (a fresh process's first id is 1) makes the order the same. It
/// cannot help when another thread spawns tasks at the same time (seeds run in parallel).
fn align_task_ids() {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    for _ in 0..4 {
        let id = runtime.spawn(async {}).id();
        if id.to_string().parse::<u64>().is_ok_and(|id| id % 4 == 0) {
            break;
        }
    }
}

/// What a seed draws before the run: the network, the faults, the customers, the accounts and
/// the snapshot policy.
struct Plan {
    seed: u64,
    broken: Broken,
    latency_max: Duration,
    schedule: faults::Schedule,
    /// One entry per customer: whether it uses the original API (one in four does).
    original: Vec<bool>,
    accounts: Accounts,
    snapshot_every: u64,
    logs_kept: u64,
    addresses: BTreeMap<BranchId, String>,
    disk: disk::DiskPlan,
}

impl Plan {
    fn draw(config: &SimConfig) -> Plan {
        let seed = config.seed;
        let mut rng = StdRng::seed_from_u64(mix(seed, 2));
        let latency_max = Duration::from_millis(rng.gen_range(2..=50));
        let schedule = faults::Schedule::draw(&mut rng, latency_max);
        let customer_count = rng.gen_range(1..=3usize);
        let original = (0..customer_count)
            .map(|_| rng.gen_range(0..4) == 0)
            .collect();
        let accounts = Accounts {
            original: rng.gen_range(0..=200),
            bank: (1..=rng.gen_range(2..=5u64))
                .map(|account| (account, rng.gen_range(0..=100)))
                .collect(),
        };
        let snapshot_every = rng.gen_range(10..=40u64);
        let logs_kept = rng.gen_range(0..=8u64);
        Plan {
            seed,
            broken: config.broken,
            latency_max,
            schedule,
            original,
            accounts,
            snapshot_every,
            logs_kept,
            addresses: (1..=BRANCHES).map(|id| (id, branch_addr(id))).collect(),
            disk: disk::DiskPlan::draw(seed, config.broken == Broken::IgnoredChecksums),
        }
    }

    /// Each incarnation of a branch and each customer gets its own `Peers`: a channel is bound
    /// to the host (runtime) that made it, and a restarted process starts with no channels.
    fn peers(&self) -> Peers {
        Peers::new(self.addresses.clone()).with_connector(Arc::new(transport::SimConnector))
    }

    fn simulation(&self) -> turmoil::Sim<'static> {
        turmoil::Builder::new()
            .simulation_duration(SIMULATION_MAX)
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(self.latency_max)
            .repair_rate(0.3)
            .rng_seed(mix(self.seed, 3))
            .build()
    }

    fn describe(&self) -> String {
        let kinds: Vec<&str> = self
            .original
            .iter()
            .map(|&o| if o { "original" } else { "bank" })
            .collect();
        let crashes: Vec<String> = self.disk.crashes.iter().map(|f| f.to_string()).collect();
        let full = self.disk.full.map_or("none".to_string(), |f| f.to_string());
        format!(
            "schedule: customers {kinds:?}, accounts {:?} (original {}), snapshot every {} keeping {}, latency 1..{}ms, sync {}ms\n{}  disk faults of the crashes, in turn: {crashes:?}\n  full disk: {full}\n",
            self.accounts.bank,
            self.accounts.original,
            self.snapshot_every,
            self.logs_kept,
            self.latency_max.as_millis(),
            self.disk.sync.as_millis(),
            self.schedule
        )
    }
}

fn run_seeded(config: &SimConfig) -> Report {
    let plan = Arc::new(Plan::draw(config));
    let mut sim = plan.simulation();
    let hosts = start_branches(&mut sim, &plan);
    let records = start_customers(&mut sim, &plan);
    let converged: Convergence = Rc::default();
    sim.client(
        "judge",
        wait_for_convergence(
            hosts.clone(),
            plan.original.len(),
            records.done.clone(),
            converged.clone(),
        ),
    );
    let (mut applied, mut violations, simulated) = drive(sim, &plan, &hosts);
    for state in hosts.values() {
        applied.extend(state.restarts.borrow().iter().cloned());
        violations.extend(state.mishandled.borrow().iter().cloned());
    }
    let judged = judge::judge(&plan, &hosts, &records, converged);
    violations.extend(judged.violations);
    Report {
        seed: plan.seed,
        schedule: plan.describe(),
        applied,
        history: judged.history,
        final_states: judged.final_states,
        stats: judged.stats,
        violations,
        simulated,
    }
}

/// Starts every branch's host: each (re)start of a host is a new incarnation of the branch,
/// built on the log and snapshot its host state kept.
fn start_branches(
    sim: &mut turmoil::Sim<'static>,
    plan: &Arc<Plan>,
) -> BTreeMap<BranchId, HostState> {
    let hosts: BTreeMap<BranchId, HostState> = (1..=BRANCHES)
        .map(|id| (id, HostState::new(plan.broken, &plan.disk)))
        .collect();
    for (&id, state) in &hosts {
        let (state, plan) = (state.clone(), plan.clone());
        sim.host(branch_host(id), move || {
            let (state, plan) = (state.clone(), plan.clone());
            async move {
                let Some(branch) = start_incarnation(id, &state, &plan).await? else {
                    // It found its own data damaged and refuses to start: it stays down.
                    return Ok(());
                };
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
                server::serve_incoming(
                    branch,
                    transport::incoming(listener),
                    ServerConfig::default(),
                    std::future::pending(),
                )
                .await?;
                Ok(())
            }
        });
    }
    hosts
}

/// The next incarnation of branch `id` on what its host kept (`None`: it found its data
/// damaged and refuses to start); the first one of branch 1 also bootstraps the cluster.
async fn start_incarnation(
    id: BranchId,
    state: &HostState,
    plan: &Plan,
) -> Result<Option<Branch>, Box<dyn std::error::Error>> {
    let seed = plan.seed;
    let incarnation = state.incarnations.get();
    state.incarnations.set(incarnation + 1);
    if incarnation > 0 {
        let fault = state.crash_fault.take().unwrap_or(disk::DiskFault::Intact);
        let restart = disk::apply(fault, &state.log, &state.disk);
        state.damaged.set(state.damaged.get() || restart.damaged);
        state.restarts.borrow_mut().push(format!(
            "{:>6}ms branch {id} restarts: {}",
            turmoil::elapsed().as_millis(),
            restart.done
        ));
    }
    if plan.broken == Broken::UnsyncedAcks && incarnation > 0 {
        // What a crash takes from a disk that acknowledged before syncing.
        let lost = 1 + (mix(seed, (id << 32) | incarnation) % 8) as usize;
        state.log.forget_tail(lost);
    }
    // The applied state is memory: lost on a crash, rebuilt from the kept snapshot and log.
    let checked = state
        .log
        .recover()
        .map_err(|e| e.to_string())
        .and_then(|()| state.disk.restarted().map_err(|e| e.to_string()));
    let state_machine = match checked {
        Ok(state_machine) => state_machine,
        Err(why) => {
            state.refused.set(true);
            *state.current.borrow_mut() = None;
            state.restarts.borrow_mut().push(format!(
                "{:>6}ms branch {id} refuses to start: {why}",
                turmoil::elapsed().as_millis()
            ));
            if !state.damaged.get() {
                state.mishandled.borrow_mut().push(format!(
                    "branch {id} refused to start with nothing damaged: {why}"
                ));
            }
            return Ok(None);
        }
    };
    if state.damaged.get() {
        state.mishandled.borrow_mut().push(format!(
            "branch {id} started on damaged data (incarnation {incarnation})"
        ));
    }
    let mut builder = BranchBuilder::new(id, plan.peers())
        .cluster_name("bank-sim")
        .snapshots(plan.snapshot_every, plan.logs_kept)
        .storage(Storage::Kept {
            log: state.log.clone(),
            state_machine,
        })
        .origin(mix(seed, (id << 32) | incarnation));
    if plan.broken == Broken::LocalReads {
        builder = builder.unsafe_local_reads();
    }
    let branch = builder.build().await?;
    *state.current.borrow_mut() = Some(branch.clone());
    if id == 1 && incarnation == 0 {
        tokio::spawn(bootstrap(
            branch.clone(),
            plan.addresses.clone(),
            plan.accounts.clone(),
        ));
    }
    Ok(Some(branch))
}

/// Starts the customers: bank customers move money between the bank accounts and read every
/// account, the original one included (conservation is checked on reads of all accounts);
/// original customers use the course's API.
fn start_customers(sim: &mut turmoil::Sim<'static>, plan: &Plan) -> Records {
    let records = Records::default();
    let seed = plan.seed;
    let bank_accounts: Vec<AccountId> = std::iter::once(ORIGINAL_ACCOUNT)
        .chain(plan.accounts.bank.keys().copied())
        .collect();
    for (index, &original) in plan.original.iter().enumerate() {
        let customer = Customer {
            index,
            customers: plan.original.len(),
            rng: StdRng::seed_from_u64(mix(seed, 100 + index as u64)),
            records: records.clone(),
        };
        let name = format!("customer{index}");
        if original {
            sim.client(name, customers::original_customer(customer, plan.peers()));
        } else {
            let origin = mix(seed, 200 + index as u64);
            let movable: Vec<AccountId> = plan.accounts.bank.keys().copied().collect();
            sim.client(
                name,
                customers::bank_customer(
                    customer,
                    movable,
                    bank_accounts.clone(),
                    origin,
                    plan.peers(),
                ),
            );
        }
    }
    records
}

/// Steps the simulation to its end, applying the schedule's faults on time and healing
/// everything at [`FAULTS_END`]. Returns the faults as applied, any simulation error, and the
/// simulated time.
fn drive(
    mut sim: turmoil::Sim<'static>,
    plan: &Plan,
    hosts: &BTreeMap<BranchId, HostState>,
) -> (Vec<String>, Vec<String>, Duration) {
    let schedule = &plan.schedule;
    let mut applied = Vec::new();
    let mut violations = Vec::new();
    let mut pending = schedule.actions();
    let mut healed = false;
    let mut crashes = 0;
    let mut full_disk = disk::FullDiskState::default();
    loop {
        let elapsed = sim.elapsed();
        let full = full_disk.tick(
            plan.disk.full,
            elapsed,
            || current_leader(hosts, &running_branches(&mut sim)),
            |id| hosts.get(&id).map(|state| state.log.disk_space().clone()),
        );
        if let Some(done) = full {
            applied.push(format!("{:>6}ms {done}", elapsed.as_millis()));
        }
        while let Some(action) = pending.first() {
            if action.at > elapsed {
                break;
            }
            let action = pending.remove(0);
            let leader = current_leader(hosts, &running_branches(&mut sim));
            applied.push(format!(
                "{:>6}ms {}",
                elapsed.as_millis(),
                action.apply(&mut sim, leader)
            ));
            if let Some(crashed) = action.crashed().and_then(|id| hosts.get(&id)) {
                crashed.crash_fault.set(Some(plan.disk.crash(crashes)));
                crashes += 1;
            }
        }
        if !healed && elapsed >= FAULTS_END {
            healed = true;
            applied.push(format!(
                "{:>6}ms {}",
                elapsed.as_millis(),
                faults::heal(&mut sim, schedule)
            ));
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                violations.push(format!("simulation error: {e}"));
                break;
            }
        }
    }
    (applied, violations, sim.elapsed())
}

fn running_branches(sim: &mut turmoil::Sim<'static>) -> Vec<BranchId> {
    (1..=BRANCHES)
        .filter(|&id| sim.is_host_running(branch_host(id)))
        .collect()
}

/// The running branch that leads in the highest term, as the branches' own metrics say.
fn current_leader(hosts: &BTreeMap<BranchId, HostState>, running: &[BranchId]) -> Option<BranchId> {
    hosts
        .iter()
        .filter(|(id, _)| running.contains(id))
        .filter_map(|(_, state)| {
            let branch = state.current.borrow().clone()?;
            let view = branch.view();
            view.leads().then_some((view.vote_term, branch.id))
        })
        .max()
        .map(|(_, id)| id)
}

/// Initialises the cluster from branch 1 and opens the accounts: the shared account by the
/// bootstrap's own genesis entry, then the bank customers' accounts.
async fn bootstrap(branch: Branch, addresses: BTreeMap<BranchId, String>, accounts: Accounts) {
    if let Err(e) = branch.initialize(&addresses).await {
        tracing::warn!("simulated bootstrap: initialise: {e}");
        return;
    }
    let genesis = crate::bootstrap::genesis(u64::try_from(accounts.original).unwrap_or(0));
    let opens = std::iter::once(genesis).chain(accounts.bank.iter().map(|(&account, &balance)| {
        Command::Open {
            account,
            balance_minor_units: u64::try_from(balance).unwrap_or(0),
            overdraft_limit_minor_units: 0,
            balance_max_minor_units: i64::MAX as u64,
        }
    }));
    for open in opens {
        if let Err(e) = branch.submit(open).await {
            tracing::warn!("simulated bootstrap: open an account: {e}");
        }
    }
}

/// After the heal and the customers, waits until every branch has applied the same log and
/// holds the same ledger.
async fn wait_for_convergence(
    hosts: BTreeMap<BranchId, HostState>,
    customers: usize,
    customers_done: Rc<Cell<usize>>,
    converged: Convergence,
) -> turmoil::Result {
    while customers_done.get() < customers || turmoil::elapsed() < FAULTS_END {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = turmoil::elapsed() + CONVERGE_DEADLINE;
    loop {
        let states: Vec<Converged> = hosts
            .iter()
            .filter_map(|(&id, state)| {
                let branch = state.current.borrow().clone()?;
                let purged = branch.view().purged_index;
                Some((id, branch.applied_state().ok()?, purged))
            })
            .collect();
        // A branch that refused to start on damaged data is left out: the others go on, and
        // must have applied at least what it had (committed before it went down), lest two
        // survivors that agree on an older state pass for converged.
        let serving = hosts.values().filter(|state| !state.refused.get()).count();
        let applied_anywhere = hosts
            .values()
            .filter_map(|state| {
                let journal = state.record.journal.lock().ok()?;
                journal.last_key_value().map(|(&index, _)| index)
            })
            .max();
        let agree = states.len() == serving
            && states
                .iter()
                .all(|(_, s, _)| s.last_applied.map(|l| l.index) >= applied_anywhere)
            && states.windows(2).all(|pair| {
                pair[0].1.last_applied == pair[1].1.last_applied
                    && pair[0].1.ledger == pair[1].1.ledger
            });
        if agree {
            *converged.borrow_mut() = Some(Ok(states));
            return Ok(());
        }
        if turmoil::elapsed() >= deadline {
            let summary: Vec<_> = states
                .iter()
                .map(|(id, s, _)| {
                    (
                        *id,
                        s.last_applied.map(|l| l.index),
                        s.ledger.state_digest(),
                    )
                })
                .collect();
            *converged.borrow_mut() = Some(Err(format!(
                "branches did not converge within {CONVERGE_DEADLINE:?} of the heal: (branch, applied, digest) {summary:?}"
            )));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
