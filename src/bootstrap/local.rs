//! A whole cluster of branches in one process, on loopback: what `bank run`, `bank server` and
//! the tests start.
//!
//! Bootstrap, in order, each step bounded by [`BOOTSTRAP_DEADLINE`]:
//! 1. every branch gets its Raft node and starts serving on its (already bound) listener;
//! 2. the first [`crate::raft::VOTERS_MAX`] branch ids (ascending) are initialised as the voters;
//! 3. the genesis command opens the shared account with the scenario's initial balance — it is
//!    a log entry like any other, so every branch, learners included, applies it;
//! 4. every other branch joins as a learner, in one membership change;
//! 5. every branch has applied the genesis entry: the bank is ready.
//!
//! With [`Storage::Durable`], a start where every branch already has state skips all that: the
//! branches resume from disk, elect a leader and catch up. Data made for another scenario, or
//! a mix of branches with and without state, is refused (see `open_stores`).
//!
//! [`LocalCluster::shutdown`] stops the servers (draining in-flight calls) and the Raft nodes.
//!
//! Breaking it on purpose (the live page's buttons, tests): [`LocalCluster::stop`] stops one
//! branch's server and Raft node as a crash would, keeping its storage;
//! [`LocalCluster::restart`] starts it again on the same address from that storage (durable:
//! its data directory; in memory: the log and snapshot it kept, as a disk would keep them,
//! the applied state rebuilt from them). [`LocalCluster::cut`] and [`LocalCluster::heal`]
//! cut a branch off from its peers and back ([`super::partition`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::partition::{Partition, PartitionConnector};
pub use super::ClusterError;
use super::{check_identity, check_initial_balance, open_shared_account};
use crate::node::{voters_and_learners, Branch, BranchBuilder, Storage as Store};
use crate::raft::durable::{ClusterIdentity, DurableStore};
use crate::raft::log_store::LogStore;
use crate::raft::network::Peers;
use crate::raft::state_machine::{StateMachineData, StateMachineStore};
use crate::server::{self, ServerConfig};
use crate::BranchId;

/// Bound on each bootstrap step and on waiting for branches to converge.
pub const BOOTSTRAP_DEADLINE: Duration = Duration::from_secs(30);

/// Bound on waiting for the servers to drain at shutdown.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// One running branch of a local cluster.
pub struct LocalBranch {
    pub addr: SocketAddr,
    pub branch: Branch,
}

/// One branch's server task, and how to stop it.
struct Server {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// What a branch keeps across [`LocalCluster::stop`] and [`LocalCluster::restart`].
#[derive(Clone)]
enum Kept {
    Memory {
        log: LogStore,
        state_machine: StateMachineStore,
    },
    Durable(DurableStore),
}

impl Kept {
    fn new(durable: Option<DurableStore>) -> Kept {
        match durable {
            Some(store) => Kept::Durable(store),
            None => Kept::Memory {
                log: LogStore::default(),
                state_machine: StateMachineStore::default(),
            },
        }
    }

    /// The storage of the branch's next incarnation: the same data directory, or the kept log
    /// with the applied state rebuilt from the kept snapshot (as after a crash).
    fn storage(&self, first: bool) -> Result<Store, String> {
        Ok(match self {
            Kept::Durable(store) => Store::Durable(store.clone()),
            Kept::Memory { log, state_machine } => Store::Kept {
                log: log.clone(),
                state_machine: if first {
                    state_machine.clone()
                } else {
                    state_machine.restarted().map_err(|e| e.to_string())?
                },
            },
        })
    }
}

/// Every branch of a scenario, running in this process.
pub struct LocalCluster {
    branches: BTreeMap<BranchId, LocalBranch>,
    servers: BTreeMap<BranchId, Server>,
    /// Branches stopped by [`LocalCluster::stop`], by id: their address.
    stopped: BTreeMap<BranchId, SocketAddr>,
    kept: BTreeMap<BranchId, Kept>,
    peers: Peers,
    partition: Arc<Partition>,
    /// `host:port` -> branch id, for the partition's connectors.
    by_address: Arc<BTreeMap<String, BranchId>>,
    server_config: ServerConfig,
}

/// Creates branch `id` on `storage`.
async fn create_branch(id: BranchId, peers: Peers, storage: Store) -> Result<Branch, ClusterError> {
    Ok(BranchBuilder::new(id, peers)
        .storage(storage)
        .build()
        .await?)
}

/// Opens every branch's store under `dir` and decides whether this start creates the cluster
/// or resumes it. Refuses data made for another scenario, and a mix of branches with and
/// without state (a branch that lost its data must not vote as if it had never voted).
fn open_stores(
    dir: &Path,
    ids: &[BranchId],
    initial_balance: u64,
) -> Result<(BTreeMap<BranchId, DurableStore>, Start), ClusterError> {
    let mut stores = BTreeMap::new();
    let mut with_state = Vec::new();
    let mut without_state = Vec::new();
    for &id in ids {
        let store = DurableStore::open(&dir.join(format!("branch-{id}")))?;
        check_identity(
            &store,
            &ClusterIdentity {
                branch_id: id,
                branch_ids: ids.to_vec(),
                initial_balance_minor_units: initial_balance,
            },
        )?;
        if store.is_initialized()? {
            with_state.push(id);
        } else {
            without_state.push(id);
        }
        stores.insert(id, store);
    }
    let start = match (with_state.is_empty(), without_state.is_empty()) {
        (true, _) => Start::Fresh,
        (false, true) => Start::Resume,
        (false, false) => {
            return Err(ClusterError::PartialState {
                dir: dir.to_path_buf(),
                with_state,
                without_state,
            })
        }
    };
    Ok((stores, start))
}

/// Binds one loopback listener per branch id: port `base_port + id`, or any free port if
/// `base_port` is `None` (tests and `bank run`).
pub async fn bind_loopback(
    ids: &[BranchId],
    base_port: Option<u16>,
) -> Result<Vec<(BranchId, TcpListener)>, ClusterError> {
    let mut listeners = Vec::with_capacity(ids.len());
    for &id in ids {
        let port = match base_port {
            None => 0,
            Some(base) => {
                u16::try_from(u64::from(base) + id).map_err(|_| ClusterError::Branch {
                    id,
                    what: format!("port {base} + {id} is beyond 65535; choose a lower --base-port"),
                })?
            }
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|cause| ClusterError::Bind { addr, cause })?;
        listeners.push((id, listener));
    }
    Ok(listeners)
}

/// Where a local cluster keeps its branches' state.
#[derive(Debug, Clone)]
pub enum Storage {
    /// In memory: fast, nothing left behind, lost on exit.
    Memory,
    /// On disk: branch *N* in `DIR/branch-N/`. A restart with the same directory resumes.
    Durable(PathBuf),
}

/// What the data directories say about this start.
enum Start {
    /// No branch has state: create the cluster.
    Fresh,
    /// Every branch has state: resume it.
    Resume,
}

impl LocalCluster {
    /// Starts a cluster whose shared account opens with `initial_balance`: bootstraps it when
    /// new, resumes it when every branch has durable state.
    pub async fn start(
        listeners: Vec<(BranchId, TcpListener)>,
        initial_balance: u64,
        storage: Storage,
    ) -> Result<LocalCluster, ClusterError> {
        Self::start_with(listeners, initial_balance, storage, ServerConfig::default()).await
    }

    /// [`LocalCluster::start`], every branch serving with `server_config`.
    pub async fn start_with(
        listeners: Vec<(BranchId, TcpListener)>,
        initial_balance: u64,
        storage: Storage,
        server_config: ServerConfig,
    ) -> Result<LocalCluster, ClusterError> {
        if listeners.is_empty() {
            return Err(ClusterError::Empty);
        }
        check_initial_balance(initial_balance)?;
        let mut addresses = BTreeMap::new();
        for (id, listener) in &listeners {
            let addr = listener.local_addr().map_err(|e| ClusterError::Branch {
                id: *id,
                what: format!("listener has no address: {e}"),
            })?;
            if addresses.insert(*id, addr).is_some() {
                return Err(ClusterError::Branch {
                    id: *id,
                    what: "duplicate branch id".to_string(),
                });
            }
        }
        let ids: Vec<BranchId> = addresses.keys().copied().collect();
        let (stores, start) = match &storage {
            Storage::Memory => (None, Start::Fresh),
            Storage::Durable(dir) => {
                let (stores, start) = open_stores(dir, &ids, initial_balance)?;
                (Some(stores), start)
            }
        };
        let peers = Peers::new(
            addresses
                .iter()
                .map(|(&id, a)| (id, a.to_string()))
                .collect(),
        );
        let mut cluster = LocalCluster {
            branches: BTreeMap::new(),
            servers: BTreeMap::new(),
            stopped: BTreeMap::new(),
            kept: BTreeMap::new(),
            peers,
            partition: Arc::default(),
            by_address: Arc::new(
                addresses
                    .iter()
                    .map(|(&id, a)| (a.to_string(), id))
                    .collect(),
            ),
            server_config,
        };
        let mut stores = stores;
        for (id, listener) in listeners {
            let addr = addresses[&id];
            let kept = Kept::new(stores.as_mut().and_then(|s| s.remove(&id)));
            let branch = match cluster.create(id, &kept, true).await {
                Ok(branch) => branch,
                Err(e) => {
                    cluster.shutdown().await;
                    return Err(e);
                }
            };
            cluster.kept.insert(id, kept);
            cluster.serve(id, addr, branch, listener);
        }
        let started = match start {
            Start::Fresh => cluster.bootstrap(initial_balance).await,
            Start::Resume => cluster.settle().await.map(|_| ()),
        };
        match started {
            Ok(()) => Ok(cluster),
            Err(e) => {
                cluster.shutdown().await;
                Err(e)
            }
        }
    }

    /// Branch `id`'s peers: the cluster's, through the partition.
    fn peers_of(&self, id: BranchId) -> Peers {
        self.peers
            .clone()
            .with_connector(Arc::new(PartitionConnector {
                from: id,
                partition: self.partition.clone(),
                branches: self.by_address.clone(),
            }))
    }

    /// Creates branch `id` on `kept` (its first incarnation, or a restart).
    async fn create(&self, id: BranchId, kept: &Kept, first: bool) -> Result<Branch, ClusterError> {
        let storage = kept
            .storage(first)
            .map_err(|what| ClusterError::Branch { id, what })?;
        create_branch(id, self.peers_of(id), storage).await
    }

    /// Serves `branch` on `listener` until the cluster shuts down or the branch is stopped.
    fn serve(&mut self, id: BranchId, addr: SocketAddr, branch: Branch, listener: TcpListener) {
        let (stop, mut stopped) = watch::channel(false);
        let server_branch = branch.clone();
        let config = self.server_config.clone();
        let task = tokio::spawn(async move {
            let signal = async move {
                // An error means the sender is gone: stop as well.
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            server::serve(server_branch, listener, config, signal).await
        });
        self.servers.insert(id, Server { stop, task });
        self.branches.insert(id, LocalBranch { addr, branch });
    }

    /// Adds a new, empty branch `id` to the running cluster as a learner (in memory, or on a
    /// fresh `durable` store) and waits until it has caught up with the leader, by log or by
    /// snapshot when the leader's log was purged.
    pub async fn add_learner(
        &mut self,
        id: BranchId,
        listener: TcpListener,
        durable: Option<DurableStore>,
    ) -> Result<(), ClusterError> {
        if self.branches.contains_key(&id) {
            return Err(ClusterError::Branch {
                id,
                what: "duplicate branch id".to_string(),
            });
        }
        let addr = listener.local_addr().map_err(|e| ClusterError::Branch {
            id,
            what: format!("listener has no address: {e}"),
        })?;
        let mut by_address = (*self.by_address).clone();
        by_address.insert(addr.to_string(), id);
        self.by_address = Arc::new(by_address);
        let kept = Kept::new(durable);
        let branch = self.create(id, &kept, true).await?;
        self.kept.insert(id, kept);
        self.serve(id, addr, branch, listener);
        let learner = BTreeMap::from([(id, addr.to_string())]);
        let index = self.add_learners(learner).await?;
        let deadline = Instant::now() + BOOTSTRAP_DEADLINE;
        if let Some(local) = self.branches.get(&id) {
            local.branch.wait_applied(index, deadline).await?;
        }
        Ok(())
    }

    async fn bootstrap(&self, initial_balance: u64) -> Result<(), ClusterError> {
        let (voters, learners) = voters_and_learners(
            self.branches
                .iter()
                .map(|(&id, b)| (id, b.addr.to_string())),
        );
        let first = self.first().branch.clone();
        first
            .initialize(&voters)
            .await
            .map_err(|e| ClusterError::Branch {
                id: first.id,
                what: format!("initialise: {e}"),
            })?;
        let index = open_shared_account(&first, initial_balance, false).await?;
        // Learners join after the genesis entry commits: a membership change is refused until
        // the initial one is committed, and the genesis commit implies it.
        let index = self.add_learners(learners).await?.unwrap_or(index);
        let deadline = Instant::now() + BOOTSTRAP_DEADLINE;
        for local in self.branches.values() {
            local.branch.wait_applied(Some(index), deadline).await?;
        }
        tracing::info!(branches = self.branches.len(), "cluster ready");
        Ok(())
    }

    /// Adds `learners` (id -> address), one membership change each, through the leader.
    /// Returns the log index of the last change (`None`: no learners).
    async fn add_learners(
        &self,
        learners: BTreeMap<BranchId, String>,
    ) -> Result<Option<u64>, ClusterError> {
        Ok(super::add_learners(&self.first().branch, learners).await?)
    }

    fn first(&self) -> &LocalBranch {
        // `start` refuses an empty cluster, so there is always a first branch.
        match self.branches.values().next() {
            Some(first) => first,
            None => unreachable!("a LocalCluster always has at least one branch"),
        }
    }

    pub fn branches(&self) -> impl Iterator<Item = (BranchId, &LocalBranch)> {
        self.branches.iter().map(|(&id, b)| (id, b))
    }

    pub fn branch(&self, id: BranchId) -> Option<&LocalBranch> {
        self.branches.get(&id)
    }

    /// Every branch's address, by id.
    pub fn addresses(&self) -> BTreeMap<BranchId, SocketAddr> {
        self.branches.iter().map(|(&id, b)| (id, b.addr)).collect()
    }

    /// Waits until there is a leader and every branch has applied everything committed so far.
    async fn settle(&self) -> Result<Option<u64>, ClusterError> {
        let deadline = Instant::now() + BOOTSTRAP_DEADLINE;
        let index = self.first().branch.read_index(deadline).await?;
        for local in self.branches.values() {
            local.branch.wait_applied(index, deadline).await?;
        }
        Ok(index)
    }

    /// Waits until every branch has applied everything committed so far, then returns each
    /// branch's ledger state. In a healthy cluster all of them are equal.
    pub async fn settled_states(&self) -> Result<Vec<(BranchId, StateMachineData)>, ClusterError> {
        self.settle().await?;
        let mut states = Vec::with_capacity(self.branches.len());
        for (&id, local) in &self.branches {
            states.push((id, local.branch.applied_state()?));
        }
        Ok(states)
    }

    /// Stops branch `id`'s Raft node, as if it crashed, and forgets it: it no longer votes,
    /// leads or replicates, and [`LocalCluster::settled_states`] leaves it out. Its server
    /// keeps its port until [`LocalCluster::shutdown`] and answers every call `UNAVAILABLE`.
    /// For tests of failover.
    pub async fn stop_branch(&mut self, id: BranchId) -> Result<(), ClusterError> {
        if self.branches.len() < 2 {
            return Err(ClusterError::Branch {
                id,
                what: "cannot stop the last branch".to_string(),
            });
        }
        let local = self.branches.remove(&id).ok_or(ClusterError::Branch {
            id,
            what: "no such branch".to_string(),
        })?;
        local
            .branch
            .shutdown()
            .await
            .map_err(|e| ClusterError::Branch {
                id,
                what: format!("raft shutdown: {e}"),
            })
    }

    /// Stops branch `id` as a crash would: its server stops (in-flight calls drain, bounded,
    /// and the port is released) and its Raft node shuts down; its storage is kept for
    /// [`LocalCluster::restart`]. The last running branch is not stopped.
    pub async fn stop(&mut self, id: BranchId) -> Result<(), ClusterError> {
        let refused = |what: &str| ClusterError::Branch {
            id,
            what: what.to_string(),
        };
        if self.stopped.contains_key(&id) {
            return Err(refused("already stopped"));
        }
        if self.branches.len() < 2 {
            return Err(refused("cannot stop the last running branch"));
        }
        let local = self
            .branches
            .remove(&id)
            .ok_or_else(|| refused("no such branch"))?;
        if let Some(server) = self.servers.remove(&id) {
            let _ = server.stop.send(true);
            join_server(id, server, Instant::now() + SHUTDOWN_DEADLINE).await;
        }
        self.stopped.insert(id, local.addr);
        local
            .branch
            .shutdown()
            .await
            .map_err(|e| refused(&format!("raft shutdown: {e}")))
    }

    /// Starts branch `id`, stopped by [`LocalCluster::stop`], again on its address from its
    /// kept storage. It rejoins as itself: it catches up from the leader and votes again.
    pub async fn restart(&mut self, id: BranchId) -> Result<(), ClusterError> {
        let addr = *self.stopped.get(&id).ok_or(ClusterError::Branch {
            id,
            what: "not stopped".to_string(),
        })?;
        let kept = self.kept.get(&id).cloned().ok_or(ClusterError::Branch {
            id,
            what: "no storage kept".to_string(),
        })?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|cause| ClusterError::Bind { addr, cause })?;
        let branch = self.create(id, &kept, false).await?;
        self.stopped.remove(&id);
        self.serve(id, addr, branch, listener);
        Ok(())
    }

    /// Cuts branch `id` off from the other branches, both ways, until [`LocalCluster::heal`].
    pub fn cut(&self, id: BranchId) -> Result<(), ClusterError> {
        self.known(id)?;
        self.partition.cut(id);
        Ok(())
    }

    /// Reconnects branch `id` to the others.
    pub fn heal(&self, id: BranchId) -> Result<(), ClusterError> {
        self.known(id)?;
        self.partition.heal(id);
        Ok(())
    }

    /// Whether branch `id` is cut off from the others.
    pub fn is_cut(&self, id: BranchId) -> bool {
        self.partition.is_cut(id)
    }

    /// The branches cut off now.
    pub fn cut_off(&self) -> Vec<BranchId> {
        self.partition.cut_off()
    }

    /// Branches stopped by [`LocalCluster::stop`] and not restarted, with their addresses.
    pub fn stopped(&self) -> &BTreeMap<BranchId, SocketAddr> {
        &self.stopped
    }

    fn known(&self, id: BranchId) -> Result<(), ClusterError> {
        if self.branches.contains_key(&id) || self.stopped.contains_key(&id) {
            Ok(())
        } else {
            Err(ClusterError::Branch {
                id,
                what: "no such branch".to_string(),
            })
        }
    }

    /// Stops serving (in-flight calls drain, bounded) and shuts every Raft node down.
    pub async fn shutdown(mut self) {
        let servers = std::mem::take(&mut self.servers);
        for server in servers.values() {
            let _ = server.stop.send(true);
        }
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        for (id, server) in servers {
            join_server(id, server, deadline).await;
        }
        for (id, local) in &self.branches {
            if let Err(e) = local.branch.shutdown().await {
                tracing::warn!(branch = id, "raft shutdown: {e}");
            }
        }
    }
}

/// Waits for branch `id`'s server to drain, until `deadline`; then stops it regardless.
async fn join_server(id: BranchId, server: Server, deadline: Instant) {
    let mut task = server.task;
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(branch = id, "server stopped with an error: {e}"),
        Ok(Err(e)) => tracing::warn!(branch = id, "server task failed: {e}"),
        Err(_) => {
            tracing::warn!(branch = id, "server did not drain in time; stopping it");
            task.abort();
        }
    }
}
