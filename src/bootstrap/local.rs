//! A whole cluster of branches in one process, on loopback: what `bank run`, `bank server` and
//! the tests start.
//!
//! Bootstrap, in order, each step bounded by [`BOOTSTRAP_DEADLINE`]:
//! 1. every branch gets its Raft node and starts serving on its (already bound) listener;
//! 2. the first [`VOTERS_MAX`] branch ids (ascending) are initialised as the voters;
//! 3. the genesis command opens the shared account with the scenario's initial balance — it is
//!    a log entry like any other, so every branch, learners included, applies it;
//! 4. every other branch joins as a learner, in one membership change;
//! 5. every branch has applied the genesis entry: the bank is ready.
//!
//! With [`Storage::Durable`], a start where every branch already has state skips all that: the
//! branches resume from disk, elect a leader and catch up. Data made for another scenario, or
//! a mix of branches with and without state, is refused (see [`open_stores`]).
//!
//! [`LocalCluster::shutdown`] stops the servers (draining in-flight calls) and the Raft nodes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::ledger::{Command, Outcome, ORIGINAL_ACCOUNT, ORIGINAL_BALANCE_MAX};
use crate::node::{Branch, BranchError};
use crate::raft::durable::{ClusterIdentity, DurableError, DurableStore};
use crate::raft::network::{PeerNetworkFactory, Peers};
use crate::raft::store::{LogStore, StateMachineData, StateMachineStore};
use crate::raft::{raft_config, BasicNode, NodeId, Raft, VOTERS_MAX};
use crate::server;

/// Bound on each bootstrap step and on waiting for branches to converge.
pub const BOOTSTRAP_DEADLINE: Duration = Duration::from_secs(30);

/// Bound on waiting for the servers to drain at shutdown.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no branches to start")]
    Empty,
    #[error("cannot listen on {addr}: {source} (is another bank server running? try another --base-port)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("branch {id}: {what}")]
    Branch { id: NodeId, what: String },
    #[error("the cluster did not {step} within {deadline:?}")]
    Timeout {
        step: &'static str,
        deadline: Duration,
    },
    #[error(transparent)]
    Request(#[from] BranchError),
    #[error(transparent)]
    Storage(#[from] DurableError),
    #[error(
        "{path} belongs to {found}, not to {expected}: use another --data-dir for this scenario"
    )]
    Mismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("in {dir}, branches {with_state:?} have Raft state but branches {without_state:?} have none. A branch that lost its data cannot safely vote again as if new; restore its data, or remove the whole directory to start a new cluster")]
    PartialState {
        dir: PathBuf,
        with_state: Vec<NodeId>,
        without_state: Vec<NodeId>,
    },
    #[error("this branch has no state, but branches {with_state:?} do: its data was lost, or it never belonged to this cluster. It must not rejoin as if new (it could vote twice in a term); restore its data directory, or start it with --rejoin to rebuild it from its peers")]
    LostState { with_state: Vec<NodeId> },
    #[error("{path} has Raft state: --rejoin is only for a branch that lost its data (an empty data directory); start it without --rejoin")]
    RejoinWithState { path: PathBuf },
    #[error("branches {missing:?} did not answer within {deadline:?}: a rejoining branch needs every other branch up, to learn the highest term any of them has seen")]
    RejoinPeersMissing {
        missing: Vec<NodeId>,
        deadline: Duration,
    },
    #[error("no other branch has state: there is no cluster to rejoin; start without --rejoin to create a new cluster")]
    NothingToRejoin,
    #[error("no branch made the membership change {changes} within {deadline:?} (is a majority of voters up?): {refusals}")]
    MembershipChange {
        changes: String,
        deadline: Duration,
        refusals: String,
    },
    #[error("branches {missing:?} did not answer within {deadline:?}: start every branch of a new cluster, with the same --peer list")]
    PeersMissing {
        missing: Vec<NodeId>,
        deadline: Duration,
    },
    #[error("the initial balance {0} is above the original API's int32 limit")]
    BalanceTooLarge(u64),
}

/// One running branch of a local cluster.
pub struct LocalBranch {
    pub addr: SocketAddr,
    pub branch: Branch,
}

/// Every branch of a scenario, running in this process.
pub struct LocalCluster {
    branches: BTreeMap<NodeId, LocalBranch>,
    shutdown: watch::Sender<bool>,
    servers: JoinSet<(NodeId, Result<(), tonic::transport::Error>)>,
    peers: Peers,
    config: std::sync::Arc<openraft::Config>,
}

/// Splits branches (id -> address) into the voters — the first [`VOTERS_MAX`] ids, ascending —
/// and the learners.
pub(crate) fn voters_and_learners(
    addresses: impl IntoIterator<Item = (NodeId, String)>,
) -> (BTreeMap<NodeId, BasicNode>, BTreeMap<NodeId, BasicNode>) {
    let mut nodes: BTreeMap<NodeId, BasicNode> = addresses
        .into_iter()
        .map(|(id, addr)| (id, BasicNode::new(addr)))
        .collect();
    let learner_ids: Vec<NodeId> = nodes.keys().skip(VOTERS_MAX).copied().collect();
    let learners = learner_ids
        .into_iter()
        .filter_map(|id| nodes.remove_entry(&id))
        .collect();
    (nodes, learners)
}

/// Creates branch `id`'s Raft node, in memory or on `durable`.
pub(crate) async fn create_branch(
    id: NodeId,
    config: std::sync::Arc<openraft::Config>,
    peers: Peers,
    durable: Option<DurableStore>,
) -> Result<Branch, ClusterError> {
    let network = PeerNetworkFactory {
        peers: peers.clone(),
    };
    let created = match durable {
        None => {
            let state_machine = StateMachineStore::default();
            Raft::new(
                id,
                config,
                network,
                LogStore::default(),
                state_machine.clone(),
            )
            .await
            .map(|raft| (raft, state_machine))
        }
        Some(store) => {
            let state_machine = StateMachineStore::restore(store.clone())?;
            Raft::new(
                id,
                config,
                network,
                store.log_store(),
                state_machine.clone(),
            )
            .await
            .map(|raft| (raft, state_machine))
        }
    };
    let (raft, state_machine) = created.map_err(|e| ClusterError::Branch {
        id,
        what: e.to_string(),
    })?;
    Ok(Branch::new(id, raft, state_machine, peers))
}

/// Records `expected` in a new store, or checks that the store was made for it.
pub(crate) fn check_identity(
    store: &DurableStore,
    expected: &ClusterIdentity,
) -> Result<(), ClusterError> {
    match store.identity()? {
        Some(found) if found != *expected => Err(ClusterError::Mismatch {
            path: store.path().to_path_buf(),
            found: format!(
                "branch {} of branches {:?} starting at {}",
                found.branch_id, found.branch_ids, found.initial_balance_minor_units
            ),
            expected: format!(
                "branch {} of branches {:?} starting at {}",
                expected.branch_id, expected.branch_ids, expected.initial_balance_minor_units
            ),
        }),
        Some(_) => Ok(()),
        None => Ok(store.set_identity(expected)?),
    }
}

/// Opens every branch's store under `dir` and decides whether this start creates the cluster
/// or resumes it. Refuses data made for another scenario, and a mix of branches with and
/// without state (a branch that lost its data must not vote as if it had never voted).
fn open_stores(
    dir: &Path,
    ids: &[NodeId],
    initial_balance: u64,
) -> Result<(BTreeMap<NodeId, DurableStore>, Start), ClusterError> {
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
    ids: &[NodeId],
    base_port: Option<u16>,
) -> Result<Vec<(NodeId, TcpListener)>, ClusterError> {
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
            .map_err(|source| ClusterError::Bind { addr, source })?;
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
        listeners: Vec<(NodeId, TcpListener)>,
        initial_balance: u64,
        storage: Storage,
    ) -> Result<LocalCluster, ClusterError> {
        if listeners.is_empty() {
            return Err(ClusterError::Empty);
        }
        if initial_balance > ORIGINAL_BALANCE_MAX {
            return Err(ClusterError::BalanceTooLarge(initial_balance));
        }
        let config = raft_config("bank").map_err(|e| ClusterError::Branch {
            id: 0,
            what: e.to_string(),
        })?;
        let config = std::sync::Arc::new(config);
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
        let ids: Vec<NodeId> = addresses.keys().copied().collect();
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
            config: config.clone(),
        };
        let mut stores = stores;
        for (id, listener) in listeners {
            let addr = addresses[&id];
            let durable = stores.as_mut().and_then(|s| s.remove(&id));
            let branch = match create_branch(id, config.clone(), peers.clone(), durable).await {
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
    fn serve(&mut self, id: NodeId, addr: SocketAddr, branch: Branch, listener: TcpListener) {
        let mut stop = self.shutdown.subscribe();
        let server_branch = branch.clone();
        self.servers.spawn(async move {
            let signal = async move {
                // An error means the sender is gone: stop as well.
                let _ = stop.wait_for(|stop| *stop).await;
            };
            (id, server::serve(server_branch, listener, signal).await)
        });
        self.branches.insert(id, LocalBranch { addr, branch });
    }

    /// Adds a new, empty branch `id` to the running cluster as a learner (in memory, or on a
    /// fresh `durable` store) and waits until it has caught up with the leader, by log or by
    /// snapshot when the leader's log was purged.
    pub async fn add_learner(
        &mut self,
        id: NodeId,
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
        let branch = create_branch(id, self.config.clone(), self.peers.clone(), durable).await?;
        self.serve(id, addr, branch, listener);
        let learner = BTreeMap::from([(id, BasicNode::new(addr.to_string()))]);
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
            .raft
            .initialize(voters)
            .await
            .map_err(|e| ClusterError::Branch {
                id: first.id,
                what: format!("initialise: {e}"),
            })?;

        let genesis = Command::Open {
            account: ORIGINAL_ACCOUNT,
            balance_minor_units: initial_balance,
            overdraft_limit_minor_units: 0,
            balance_max_minor_units: ORIGINAL_BALANCE_MAX,
        };
        let (outcome, index) = first.submit(genesis).await?;
        match outcome {
            Outcome::Opened { .. } => {}
            other => {
                return Err(ClusterError::Branch {
                    id: first.id,
                    what: format!("opening the shared account gave {other:?}"),
                })
            }
        }
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

    /// Adds `learners` in one membership change, on whichever branch leads.
    /// Returns the log index of the membership change.
    async fn add_learners(
        &self,
        learners: BTreeMap<NodeId, BasicNode>,
    ) -> Result<u64, ClusterError> {
        let deadline = Instant::now() + BOOTSTRAP_DEADLINE;
        const ATTEMPTS_MAX: u32 = 10;
        for _attempt in 0..ATTEMPTS_MAX {
            let leader = self.wait_for_leader(deadline).await?;
            match leader
                .raft
                .change_membership(ChangeMembers::AddNodes(learners.clone()), true)
                .await
            {
                Ok(response) => return Ok(response.log_id.index),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    tracing::info!("leader changed while adding learners; retrying");
                }
                Err(e) => {
                    return Err(ClusterError::Branch {
                        id: leader.id,
                        what: format!("adding learners: {e}"),
                    })
                }
            }
        }
        Err(ClusterError::Timeout {
            step: "add its learners",
            deadline: BOOTSTRAP_DEADLINE,
        })
    }

    /// Waits until the first branch knows a leader that is part of this cluster.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<&Branch, ClusterError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let metrics = self
            .first()
            .branch
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|_| ClusterError::Timeout {
                step: "elect a leader",
                deadline: BOOTSTRAP_DEADLINE,
            })?;
        metrics
            .current_leader
            .and_then(|id| self.branches.get(&id))
            .map(|local| &local.branch)
            .ok_or(ClusterError::Timeout {
                step: "elect a leader",
                deadline: BOOTSTRAP_DEADLINE,
            })
    }

    fn first(&self) -> &LocalBranch {
        // `start` refuses an empty cluster, so there is always a first branch.
        match self.branches.values().next() {
            Some(first) => first,
            None => unreachable!("a LocalCluster always has at least one branch"),
        }
    }

    pub fn branches(&self) -> impl Iterator<Item = (NodeId, &LocalBranch)> {
        self.branches.iter().map(|(&id, b)| (id, b))
    }

    pub fn branch(&self, id: NodeId) -> Option<&LocalBranch> {
        self.branches.get(&id)
    }

    /// Every branch's address, by id.
    pub fn addresses(&self) -> BTreeMap<NodeId, SocketAddr> {
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
    pub async fn settled_states(&self) -> Result<Vec<(NodeId, StateMachineData)>, ClusterError> {
        self.settle().await?;
        let mut states = Vec::with_capacity(self.branches.len());
        for (&id, local) in &self.branches {
            let state = local
                .branch
                .state_machine
                .read(|state| state.clone())
                .ok_or(ClusterError::Branch {
                    id,
                    what: "state machine lock poisoned".to_string(),
                })?;
            states.push((id, state));
        }
        Ok(states)
    }

    /// Stops branch `id`'s Raft node, as if it crashed, and forgets it: it no longer votes,
    /// leads or replicates, and [`LocalCluster::settled_states`] leaves it out. Its server
    /// keeps its port until [`LocalCluster::shutdown`] and answers every call `UNAVAILABLE`.
    /// For tests of failover.
    pub async fn stop_branch(&mut self, id: NodeId) -> Result<(), ClusterError> {
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
