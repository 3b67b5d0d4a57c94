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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use super::ClusterError;
use super::{check_identity, check_initial_balance, open_shared_account};
use crate::node::{voters_and_learners, Branch, BranchBuilder, MembershipChange, Storage as Store};
use crate::raft::durable::{ClusterIdentity, DurableStore};
use crate::raft::network::Peers;
use crate::raft::state_machine::StateMachineData;
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

/// Every branch of a scenario, running in this process.
pub struct LocalCluster {
    branches: BTreeMap<BranchId, LocalBranch>,
    shutdown: watch::Sender<bool>,
    servers: JoinSet<(BranchId, Result<(), tonic::transport::Error>)>,
    peers: Peers,
    server_config: ServerConfig,
}

/// Creates branch `id`, in memory or on `durable`.
async fn create_branch(
    id: BranchId,
    peers: Peers,
    durable: Option<DurableStore>,
) -> Result<Branch, ClusterError> {
    let storage = match durable {
        Some(store) => Store::Durable(store),
        None => Store::Memory,
    };
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
        let (shutdown, _) = watch::channel(false);
        let mut cluster = LocalCluster {
            branches: BTreeMap::new(),
            shutdown,
            servers: JoinSet::new(),
            peers: peers.clone(),
            server_config,
        };
        let mut stores = stores;
        for (id, listener) in listeners {
            let addr = addresses[&id];
            let durable = stores.as_mut().and_then(|s| s.remove(&id));
            let branch = match create_branch(id, peers.clone(), durable).await {
                Ok(branch) => branch,
                Err(e) => {
                    cluster.shutdown().await;
                    return Err(e);
                }
            };
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

    /// Serves `branch` on `listener` until the cluster shuts down.
    fn serve(&mut self, id: BranchId, addr: SocketAddr, branch: Branch, listener: TcpListener) {
        let mut stop = self.shutdown.subscribe();
        let server_branch = branch.clone();
        let config = self.server_config.clone();
        self.servers.spawn(async move {
            let signal = async move {
                // An error means the sender is gone: stop as well.
                let _ = stop.wait_for(|stop| *stop).await;
            };
            (
                id,
                server::serve(server_branch, listener, config, signal).await,
            )
        });
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
        let branch = create_branch(id, self.peers.clone(), durable).await?;
        self.serve(id, addr, branch, listener);
        let learner = BTreeMap::from([(id, addr.to_string())]);
        let index = self.add_learners(learner).await?;
        let deadline = Instant::now() + BOOTSTRAP_DEADLINE;
        if let Some(local) = self.branches.get(&id) {
            local.branch.wait_applied(Some(index), deadline).await?;
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
        let index = if learners.is_empty() {
            index
        } else {
            self.add_learners(learners).await?
        };
        let deadline = Instant::now() + BOOTSTRAP_DEADLINE;
        for local in self.branches.values() {
            local.branch.wait_applied(Some(index), deadline).await?;
        }
        tracing::info!(branches = self.branches.len(), "cluster ready");
        Ok(())
    }

    /// Adds `learners` (id -> address) in one membership change, through the leader.
    /// Returns the log index of the membership change.
    async fn add_learners(
        &self,
        learners: BTreeMap<BranchId, String>,
    ) -> Result<u64, ClusterError> {
        let change = MembershipChange::AddLearners(learners);
        Ok(self.first().branch.change_membership(&change, true).await?)
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

    /// Stops serving (in-flight calls drain, bounded) and shuts every Raft node down.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
            while let Some(joined) = self.servers.join_next().await {
                match joined {
                    Ok((_, Ok(()))) => {}
                    Ok((id, Err(e))) => {
                        tracing::warn!(branch = id, "server stopped with an error: {e}")
                    }
                    Err(e) => tracing::warn!("server task failed: {e}"),
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("servers did not drain within {SHUTDOWN_DEADLINE:?}; stopping them");
            self.servers.abort_all();
        }
        for (id, local) in &self.branches {
            if let Err(e) = local.branch.shutdown().await {
                tracing::warn!(branch = id, "raft shutdown: {e}");
            }
        }
    }
}
