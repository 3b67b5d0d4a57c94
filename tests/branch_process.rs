//! Three `bank branch` processes with durable data under a deposit load: SIGKILL a follower
//! and restart it, then SIGKILL the leader and restart it. Every acknowledged deposit must be in
//! the final balance, on every branch, and the branches must agree.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bank::proto::peer::StatusReply;
use bank::proto::v1 as pb;
use bank::raft::durable::DurableStore;
use common::{bank_command, call, client, ChildGuard, Deadline};
use openraft::storage::RaftLogStorage;

const INITIAL: i64 = 1_000;
const READY_DEADLINE: Duration = Duration::from_secs(30);
const PROGRESS_DEADLINE: Duration = Duration::from_secs(30);

/// Where a branch's log goes: nowhere, or with `BANK_TEST_LOG_DIR=DIR` (and `RUST_LOG`) to a
/// new file in DIR, for debugging a failure.
fn log_file(id: usize) -> Stdio {
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Some(dir) = std::env::var_os("BANK_TEST_LOG_DIR") else {
        return Stdio::null();
    };
    let n = STARTS.fetch_add(1, Ordering::SeqCst);
    let path = Path::new(&dir).join(format!("{}-{n}-branch-{id}.log", std::process::id()));
    match std::fs::File::create(&path) {
        Ok(file) => file.into(),
        Err(e) => panic!("cannot create {}: {e}", path.display()),
    }
}

/// Three `bank branch` processes, each killed when the cluster is dropped.
struct Cluster {
    ports: Vec<u16>,
    dirs: tempfile::TempDir,
    children: Vec<Option<ChildGuard>>,
}

impl Cluster {
    fn addr(&self, id: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[id - 1]))
    }

    fn spawn(&mut self, id: usize) {
        let child = ChildGuard::spawn(self.command(id).stderr(log_file(id)));
        self.children[id - 1] = Some(child);
    }

    /// The file whose existence makes branch `id`'s disk count as full (`--simulate-disk-full`).
    fn disk_full_flag(&self, id: usize) -> std::path::PathBuf {
        self.dirs.path().join(format!("disk-full-{id}"))
    }

    /// The command line of branch `id` (stdin and stdout closed).
    fn command(&self, id: usize) -> Command {
        let mut command = bank_command();
        command
            .args(["branch", "--id", &id.to_string(), "--listen"])
            .arg(self.addr(id).to_string())
            .arg("--data-dir")
            .arg(self.dirs.path().join(format!("d{id}")))
            .arg("--simulate-disk-full")
            .arg(self.disk_full_flag(id))
            .args(["--balance", &INITIAL.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for peer in (1..=3).filter(|&p| p != id) {
            command
                .arg("--peer")
                .arg(format!("{peer}={}", self.addr(peer)));
        }
        command
    }

    /// SIGKILLs branch `id` (if running) and reaps it.
    fn kill(&mut self, id: usize) {
        if let Some(child) = self.children[id - 1].take() {
            child.kill();
        }
    }

    /// Waits until branch `id` answers a query (a query changes nothing: safe to retry).
    async fn wait_serving(&mut self, id: usize) -> i64 {
        let deadline = Deadline::after(READY_DEADLINE);
        loop {
            if let Some(child) = self.children[id - 1].as_mut() {
                if let Some(status) = child.try_wait() {
                    panic!("branch {id} exited with {status}");
                }
            }
            if let Ok(reply) = call(&mut client(self.addr(id)).await, "query", 0).await {
                return i64::from(reply.balance);
            }
            deadline.pause(format!("branch {id} not serving")).await;
        }
    }

    /// Branch `id`'s peer status, if it answers.
    async fn status(&self, id: usize) -> Option<StatusReply> {
        common::status(self.addr(id)).await
    }

    /// The leader some running branch knows of (waits for one).
    async fn leader(&self) -> usize {
        let deadline = Deadline::after(READY_DEADLINE);
        loop {
            for id in 1..=3 {
                if self.children[id - 1].is_none() {
                    continue;
                }
                if let Some(leader) = self.status(id).await.and_then(|s| s.leader) {
                    return leader as usize;
                }
            }
            deadline.pause("no leader").await;
        }
    }
}

/// Deposit load: one customer per branch, deposits of 1 until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicI64>,
    unknown: Arc<AtomicI64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addresses: Vec<SocketAddr>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicI64::new(0));
        let unknown = Arc::new(AtomicI64::new(0));
        let tasks = addresses
            .into_iter()
            .map(|addr| {
                let (stop, acknowledged, unknown) =
                    (stop.clone(), acknowledged.clone(), unknown.clone());
                tokio::spawn(async move {
                    let mut client = client(addr).await;
                    while !stop.load(Ordering::SeqCst) {
                        match call(&mut client, "deposit", 1).await {
                            Ok(reply) => {
                                assert_eq!(reply.result, "success");
                                acknowledged.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(_) => {
                                // Maybe applied, maybe not: counted apart, and paced so a dead
                                // branch does not spin.
                                unknown.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acknowledged,
            unknown,
            tasks,
        }
    }

    fn acknowledged(&self) -> i64 {
        self.acknowledged.load(Ordering::SeqCst)
    }

    /// Waits until `more` further deposits are acknowledged; returns how long that took.
    async fn progress(&self, more: i64) -> Duration {
        let started = Instant::now();
        let deadline = Deadline::after(PROGRESS_DEADLINE).polling(Duration::from_millis(5));
        let target = self.acknowledged() + more;
        while self.acknowledged() < target {
            deadline
                .pause(format!(
                    "no progress: {} acknowledged, waiting for {target}",
                    self.acknowledged()
                ))
                .await;
        }
        started.elapsed()
    }

    async fn stop(self) -> (i64, i64) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("load task");
        }
        (
            self.acknowledged.load(Ordering::SeqCst),
            self.unknown.load(Ordering::SeqCst),
        )
    }
}

fn start_cluster(dirs: tempfile::TempDir) -> Cluster {
    let mut cluster = Cluster {
        ports: common::free_ports(3),
        dirs,
        children: vec![None, None, None],
    };
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_a_follower_then_the_leader_loses_no_acknowledged_deposit() {
    let mut cluster = start_cluster(tempfile::tempdir().expect("tempdir"));
    for id in 1..=3 {
        assert_eq!(cluster.wait_serving(id).await, INITIAL);
    }
    let load = Load::start((1..=3).map(|id| cluster.addr(id)).collect());
    load.progress(50).await;

    let leader = cluster.leader().await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    cluster.kill(follower);
    load.progress(50).await;
    cluster.spawn(follower);
    cluster.wait_serving(follower).await;
    load.progress(50).await;

    let leader = cluster.leader().await;
    cluster.kill(leader);
    let failover = load.progress(1).await;
    eprintln!("leader {leader} killed: next deposit acknowledged after {failover:?}");
    load.progress(50).await;
    cluster.spawn(leader);
    cluster.wait_serving(leader).await;
    load.progress(20).await;

    assert_every_acknowledged_deposit_once(&mut cluster, load).await;
    check_data_dirs(cluster.dirs.path());
}

/// Stops the load, then: every branch shows the same balance, and it holds every acknowledged
/// deposit exactly once (plus some of those whose outcome was unknown).
async fn assert_every_acknowledged_deposit_once(cluster: &mut Cluster, load: Load) {
    let (acknowledged, unknown) = load.stop().await;
    let mut balances = Vec::new();
    for id in 1..=3 {
        balances.push(cluster.wait_serving(id).await);
    }
    assert!(
        balances.iter().all(|&b| b == balances[0]),
        "branches disagree: {balances:?}"
    );
    let applied = balances[0] - INITIAL;
    assert!(
        applied >= acknowledged && applied <= acknowledged + unknown,
        "balance {} holds {applied} deposits; {acknowledged} were acknowledged and {unknown} had an unknown outcome",
        balances[0]
    );
}

/// Every branch left its state in its own directory.
fn check_data_dirs(root: &Path) {
    for id in 1..=3 {
        let file = root.join(format!("d{id}")).join("branch.redb");
        assert!(file.exists(), "{} missing", file.display());
    }
}

/// Runs `command` to its exit (bounded) and returns its exit status and standard error.
async fn run_to_exit(command: Command) -> (std::process::ExitStatus, String) {
    let finished = common::run_bounded_async(command, READY_DEADLINE).await;
    (finished.status, finished.stderr)
}

/// A branch whose data directory was deleted refuses to start as if new; with `--rejoin` it is
/// rebuilt from its peers by snapshot (the log was purged), loses nothing, and votes again:
/// after it rejoined, the leader is killed and the cluster needs its vote to go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_branch_is_refused_then_rebuilt_with_rejoin() {
    let mut cluster = start_cluster(tempfile::tempdir().expect("tempdir"));
    for id in 1..=3 {
        assert_eq!(cluster.wait_serving(id).await, INITIAL);
    }
    let load = Load::start((1..=3).map(|id| cluster.addr(id)).collect());
    // More entries than a snapshot interval: the log is purged behind a snapshot.
    load.progress(1_300).await;

    let leader = cluster.leader().await;
    let wiped = (1..=3).find(|&id| id != leader).expect("a follower");
    let wiped_dir = cluster.dirs.path().join(format!("d{wiped}"));
    cluster.kill(wiped);
    std::fs::remove_dir_all(&wiped_dir).expect("wipe the data dir");
    load.progress(20).await;

    let (status, stderr) = run_to_exit(cluster.command(wiped)).await;
    assert!(!status.success(), "a wiped branch started as if new");
    assert!(stderr.contains("--rejoin"), "unhelpful refusal: {stderr}");

    let mut rejoin = cluster.command(wiped);
    rejoin.arg("--rejoin").stderr(log_file(wiped));
    cluster.children[wiped - 1] = Some(ChildGuard::spawn(&mut rejoin));
    cluster.wait_serving(wiped).await;
    load.progress(50).await;
    // Until it is a voter again the cluster has two voters and survives no failure.
    let voters = &cluster;
    common::eventually(
        &format!("branch {wiped} not a voter again"),
        READY_DEADLINE,
        || async move {
            let status = voters.status(wiped).await?;
            (!status.rejoining && status.voters == [1, 2, 3]).then_some(())
        },
    )
    .await;

    // The rejoined branch votes again: with the leader gone, no quorum forms without it.
    let leader = cluster.leader().await;
    if leader != wiped {
        cluster.kill(leader);
        load.progress(20).await;
        cluster.spawn(leader);
        cluster.wait_serving(leader).await;
    }
    load.progress(20).await;

    assert_every_acknowledged_deposit_once(&mut cluster, load).await;
    let status = cluster
        .status(wiped)
        .await
        .expect("status of the rejoined branch");
    assert_eq!(status.voters, vec![1, 2, 3]);

    // It was rebuilt by snapshot install: its log starts after a purge.
    cluster.kill(wiped);
    let store = DurableStore::open(&wiped_dir).expect("open the rebuilt store");
    let rejoined = store.rejoin_state().expect("rejoin state");
    assert!(
        rejoined.is_some_and(|state| state.caught_up),
        "rejoin not recorded as finished: {rejoined:?}"
    );
    let log = store.log_store().get_log_state().await.expect("log state");
    assert!(
        log.last_purged_log_id.is_some(),
        "branch {wiped} was not rebuilt from a snapshot"
    );
    drop(store);

    // --rejoin is only for a branch that lost its data.
    let mut again = cluster.command(wiped);
    again.arg("--rejoin");
    let (status, stderr) = run_to_exit(again).await;
    assert!(
        !status.success(),
        "--rejoin accepted on a branch with state"
    );
    assert!(
        stderr.contains("has Raft state"),
        "unhelpful refusal: {stderr}"
    );
}

/// Flips one bit in the last entry of the Raft log in `dir` (a stopped branch's data), as a
/// damaged disk would.
fn damage_last_log_entry(dir: &Path) -> u64 {
    use redb::{ReadableTable, TableDefinition};
    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
    let db =
        redb::Database::open(dir.join("branch.redb")).expect("open the stopped branch's database");
    let tx = db.begin_write().expect("write");
    let index = {
        let mut table = tx.open_table(LOG).expect("log table");
        let (index, mut bytes) = {
            let (index, bytes) = table.last().expect("read").expect("a log entry");
            (index.value(), bytes.value().to_vec())
        };
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x04;
        table.insert(index, bytes.as_slice()).expect("write back");
        index
    };
    tx.commit().expect("commit");
    index
}

/// A follower whose log is damaged while it is down (one flipped bit in a synced entry) does not
/// serve it: restarted as usual, it finds the damage, moves its data directory aside, rebuilds
/// itself from its peers as `--rejoin` does, and loses no acknowledged deposit. The same data
/// opened directly is refused, naming the entry: without the checksum, it would have been
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_with_a_damaged_log_rebuilds_itself_from_its_peers() {
    let mut cluster = start_cluster(tempfile::tempdir().expect("tempdir"));
    for id in 1..=3 {
        assert_eq!(cluster.wait_serving(id).await, INITIAL);
    }
    let load = Load::start((1..=3).map(|id| cluster.addr(id)).collect());
    load.progress(50).await;

    let leader = cluster.leader().await;
    let damaged = (1..=3).find(|&id| id != leader).expect("a follower");
    let dir = cluster.dirs.path().join(format!("d{damaged}"));
    cluster.kill(damaged);
    let index = damage_last_log_entry(&dir);
    match DurableStore::open(&dir) {
        Ok(_) => panic!("a damaged log entry was not noticed"),
        Err(e) => assert!(
            e.to_string()
                .contains(&format!("log entry {index} is damaged")),
            "{e}"
        ),
    }
    load.progress(20).await;

    cluster.spawn(damaged);
    cluster.wait_serving(damaged).await;
    let aside: Vec<String> = std::fs::read_dir(cluster.dirs.path())
        .expect("list")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("d{damaged}.damaged-")))
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the damaged data was not kept aside: {aside:?}"
    );
    let voters = &cluster;
    common::eventually(
        &format!("branch {damaged} not a voter again"),
        READY_DEADLINE,
        || async move {
            let status = voters.status(damaged).await?;
            (!status.rejoining && status.voters == [1, 2, 3]).then_some(())
        },
    )
    .await;
    load.progress(20).await;
    assert_every_acknowledged_deposit_once(&mut cluster, load).await;
}

/// Sends `signal` (e.g. "STOP", "CONT") to branch `id`'s process.
fn signal(cluster: &Cluster, id: usize, signal: &str) {
    if let Some(child) = cluster.children[id - 1].as_ref() {
        child.signal(signal);
    }
}

/// Chaos on real processes: Jepsen's bank workload (transfers with request ids and reads of
/// every balance) on three `bank branch` processes while a nemesis SIGKILLs and restarts
/// branches, and SIGSTOPs / SIGCONTs them, one at a time, for a bounded time. The recorded
/// history must pass the checker (per-account linearizability, conservation, no negative
/// balance, equal final states) — and `bank check` on the written file must agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_and_pause_branches_the_history_passes_the_checker() {
    const NEMESIS_STEPS: usize = 6;
    let seed: u64 = std::env::var("BANK_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00C0_FFEE);
    eprintln!("chaos seed {seed} (replay the nemesis's choices with BANK_CHAOS_SEED={seed})");
    let mut cluster = start_cluster(tempfile::tempdir().expect("tempdir"));
    for id in 1..=3 {
        assert_eq!(cluster.wait_serving(id).await, INITIAL);
    }
    let addresses: Vec<String> = (1..=3).map(|id| cluster.addr(id).to_string()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let workload = bank::load::jepsen::BankWorkload {
        operations_per_client: None,
        seed,
        ..Default::default()
    };
    let runner = {
        let (addresses, stop) = (addresses.clone(), stop.clone());
        tokio::spawn(async move {
            bank::load::jepsen::run_bank_workload(&addresses, &workload, stop).await
        })
    };

    let mut random = bank::load::jepsen::Random::new(seed);
    let mut actions = Vec::new();
    for _ in 0..NEMESIS_STEPS {
        tokio::time::sleep(bank::load::jepsen::pause(
            &mut random,
            Duration::from_millis(300),
            Duration::from_millis(900),
        ))
        .await;
        let victim = 1 + random.below(3) as usize;
        let outage = bank::load::jepsen::pause(
            &mut random,
            Duration::from_millis(200),
            Duration::from_millis(1_500),
        );
        if random.below(2) == 0 {
            actions.push(format!("kill -9 branch {victim}, restart after {outage:?}"));
            cluster.kill(victim);
            tokio::time::sleep(outage).await;
            cluster.spawn(victim);
        } else {
            actions.push(format!("pause branch {victim} for {outage:?}"));
            signal(&cluster, victim, "STOP");
            tokio::time::sleep(outage).await;
            signal(&cluster, victim, "CONT");
        }
        cluster.wait_serving(victim).await;
    }
    eprintln!("nemesis: {actions:?}");
    // Healed: let the workload run on a whole cluster a moment, then stop it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let report = runner
        .await
        .expect("workload task")
        .expect("workload (final reads need every branch)");
    eprintln!(
        "chaos: {} transfers applied, {} refused, {} unknown, {} reads ({} failed)",
        report.transfers_ok,
        report.transfers_refused,
        report.unknown,
        report.reads_ok,
        report.reads_failed
    );
    assert!(report.transfers_ok > 0, "no transfer got through");

    let path = cluster.dirs.path().join("history.jsonl");
    let mut writer = bank::check::HistoryWriter::new(std::io::BufWriter::new(
        std::fs::File::create(&path).expect("create history file"),
    ));
    for event in &report.history {
        writer.write(event).expect("write history");
    }
    writer.flush().expect("flush history");
    drop(writer);
    let history = bank::check::History::from_events(report.history);
    if let Err(violation) = bank::check::check(&history) {
        let kept =
            std::env::temp_dir().join(format!("bank-chaos-{seed}-{}.jsonl", std::process::id()));
        let _ = std::fs::copy(&path, &kept);
        panic!(
            "seed {seed}, nemesis {actions:?}: {violation}\n(history kept in {})",
            kept.display()
        );
    }
    let checked = common::output_of(bank_command().arg("check").arg(&path));
    assert!(
        checked.status.success(),
        "bank check disagrees: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// A deposit of 1 to `account` at the branch at `addr` alone, through the accounts API.
async fn deposit_at(
    addr: SocketAddr,
    account: u64,
    sequence: u64,
) -> Result<pb::WriteReply, tonic::Status> {
    let request = common::timed(pb::DepositRequest {
        request_id: Some(pb::RequestId {
            origin: 0xD15C,
            sequence,
        }),
        account,
        amount: 1,
    });
    let reply = common::accounts_client(addr).deposit(request).await;
    reply.map(|r| r.into_inner())
}

async fn read_at(addr: SocketAddr, level: pb::ReadLevel) -> Result<Option<i64>, tonic::Status> {
    let request = common::timed(pb::GetBalancesRequest {
        accounts: vec![bank::ledger::ORIGINAL_ACCOUNT],
        read_level: level as i32,
        min_log_index: 0,
    });
    let reply = common::accounts_client(addr).get_balances(request).await?;
    Ok(reply.into_inner().balances.first().and_then(|b| b.balance))
}

/// A branch whose disk fills (the `--simulate-disk-full` drill), while customers deposit at
/// every branch: it refuses writes with RESOURCE_EXHAUSTED saying why, hands leadership to a
/// branch with room (the others keep taking writes, and a client that lists it first moves
/// on), and keeps answering reads; once space returns it takes writes again. Low on space,
/// its log still follows the leader, so even its linearizable reads are served; full, its log
/// holds every append and its local reads are served. No acknowledged deposit is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_whose_disk_fills_refuses_writes_hands_over_and_recovers() {
    const ACCOUNT: u64 = 77;
    let mut cluster = start_cluster(tempfile::tempdir().expect("tempdir"));
    for id in 1..=3 {
        cluster.wait_serving(id).await;
    }
    let addresses: Vec<SocketAddr> = (1..=3).map(|id| cluster.addr(id)).collect();
    common::bank_client(&addresses)
        .open_account(ACCOUNT, 0, 0, None)
        .await
        .expect("open the account");
    let load = Load::start(addresses.clone());
    load.progress(20).await;
    let mut sequence = 0;
    for level in ["low", "full"] {
        let filled = cluster.leader().await;
        let addr = cluster.addr(filled);
        std::fs::write(cluster.disk_full_flag(filled), level).expect("write the flag file");

        let deadline = Deadline::after(READY_DEADLINE);
        let refused = loop {
            sequence += 1;
            match deposit_at(addr, ACCOUNT, sequence).await {
                Err(status) if status.code() == tonic::Code::ResourceExhausted => break status,
                _ => {
                    deadline
                        .pause(format!("branch {filled} still takes writes"))
                        .await
                }
            }
        };
        assert!(
            refused.message().contains("takes no writes")
                && refused.message().contains("--simulate-disk-full"),
            "{}",
            refused.message()
        );
        let deadline = Deadline::after(READY_DEADLINE);
        'handed_over: loop {
            for other in (1..=3).filter(|&id| id != filled) {
                let leader = cluster.status(other).await.and_then(|s| s.leader);
                if leader.is_some_and(|leader| leader as usize != filled) {
                    break 'handed_over;
                }
            }
            deadline.pause(format!("branch {filled} still leads")).await;
        }
        load.progress(20).await;
        let mut listed_first = addresses.clone();
        listed_first.swap(0, filled - 1);
        let written = common::bank_client(&listed_first)
            .deposit(ACCOUNT, 1)
            .await
            .expect("a client that lists the filled branch first writes elsewhere");
        assert_eq!(written.outcome(), pb::Outcome::Ok);
        read_at(addr, pb::ReadLevel::Local)
            .await
            .expect("a local read at the filled branch");
        if level == "low" {
            read_at(addr, pb::ReadLevel::Linearizable)
                .await
                .expect("a linearizable read at a branch low on space");
        }

        std::fs::remove_file(cluster.disk_full_flag(filled)).expect("free the disk");
        let deadline = Deadline::after(READY_DEADLINE);
        loop {
            sequence += 1;
            match deposit_at(addr, ACCOUNT, sequence).await {
                Ok(_) => break,
                Err(e) => {
                    deadline
                        .pause(format!("branch {filled} takes no writes again: {e}"))
                        .await
                }
            }
        }
    }
    assert_every_acknowledged_deposit_once(&mut cluster, load).await;
}
