//! Three `bank branch` processes with durable data under a deposit load: SIGKILL a follower
//! and restart it, then SIGKILL the leader and restart it. Every acknowledged deposit must be in
//! the final balance, on every branch, and the branches must agree.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bank::proto::peer::peer_client::PeerClient;
use bank::proto::peer::StatusRequest;
use common::{call, client};
use tokio::time::Instant;

const INITIAL: i64 = 1_000;
const READY_DEADLINE: Duration = Duration::from_secs(30);
const PROGRESS_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// Three free loopback ports (probed together; a lost race shows as "cannot listen").
fn free_ports() -> Vec<u16> {
    let listeners: Vec<_> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("probe address").port())
        .collect()
}

struct Cluster {
    ports: Vec<u16>,
    dirs: tempfile::TempDir,
    children: Vec<Option<Child>>,
}

impl Cluster {
    fn addr(&self, id: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[id - 1]))
    }

    fn spawn(&mut self, id: usize) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bank"));
        command
            .args(["branch", "--id", &id.to_string(), "--listen"])
            .arg(self.addr(id).to_string())
            .arg("--data-dir")
            .arg(self.dirs.path().join(format!("d{id}")))
            .args(["--balance", &INITIAL.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for peer in (1..=3).filter(|&p| p != id) {
            command
                .arg("--peer")
                .arg(format!("{peer}={}", self.addr(peer)));
        }
        self.children[id - 1] = Some(command.spawn().expect("spawn bank branch"));
    }

    fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children[id - 1].take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// Waits until branch `id` answers a query (a query changes nothing: safe to retry).
    async fn wait_serving(&mut self, id: usize) -> i64 {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(child) = self.children[id - 1].as_mut() {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    panic!("branch {id} exited with {status}");
                }
            }
            if let Ok(reply) = call(&mut client(self.addr(id)).await, "query", 0).await {
                return i64::from(reply.balance);
            }
            assert!(
                Instant::now() < deadline,
                "branch {id} not serving within {READY_DEADLINE:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn leader(&self) -> usize {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            for id in 1..=3 {
                if self.children[id - 1].is_none() {
                    continue;
                }
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr(id)))
                        .expect("address")
                        .connect_lazy();
                let mut request = tonic::Request::new(StatusRequest {});
                request.set_timeout(Duration::from_secs(1));
                if let Ok(reply) = PeerClient::new(channel).status(request).await {
                    if let Some(leader) = reply.into_inner().leader {
                        return leader as usize;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {READY_DEADLINE:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
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
        let target = self.acknowledged() + more;
        while self.acknowledged() < target {
            assert!(
                started.elapsed() < PROGRESS_DEADLINE,
                "no progress: {} acknowledged, waiting for {target}",
                self.acknowledged()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
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
        ports: free_ports(),
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
    check_data_dirs(cluster.dirs.path());
}

/// Every branch left its state in its own directory.
fn check_data_dirs(root: &Path) {
    for id in 1..=3 {
        let file = root.join(format!("d{id}")).join("branch.redb");
        assert!(file.exists(), "{} missing", file.display());
    }
}
