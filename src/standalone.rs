//! One branch per process (`bank branch`): how the bank runs across several hosts.
//!
//! Every branch is started with its id, its listen address, every peer's id and address, a
//! data directory and the shared account's initial balance. The same rules as a local cluster
//! apply, decided by each branch from its own disk and its peers' answers:
//! - **Resume**: a branch with Raft state on disk just starts; Raft elects and catches it up.
//! - **Create**: a new cluster is created only when every branch is up and none has state
//!   (like etcd's `initial-cluster-state=new`): the branch with the lowest id then initialises
//!   the voters (the first five ids), and once a leader is elected opens the shared account
//!   (the genesis entry) and adds the other branches as learners.
//! - **Refuse**: a branch without state whose peers have state lost its data (or was never part
//!   of this cluster). It must not vote as if new — it might vote twice in a term — so it
//!   refuses to start. Rebuilding it from its peers is not implemented yet.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use openraft::ChangeMembers;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::branch::Branch;
use crate::cluster::{
    check_identity, create_branch, voters_and_learners, ClusterError, BOOTSTRAP_DEADLINE,
};
use crate::ledger::{Command, Outcome, ORIGINAL_ACCOUNT, ORIGINAL_BALANCE_MAX};
use crate::proto::peer::StatusRequest;
use crate::replication::durable::{ClusterIdentity, DurableStore};
use crate::replication::network::Peers;
use crate::replication::{raft_config, BasicNode, NodeId};
use crate::service;

/// How long the lowest-id branch of a new cluster waits for every peer to come up.
pub const PEERS_DEADLINE: Duration = Duration::from_secs(60);

/// Bound on one status call to a peer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause between rounds of asking peers (inside [`PEERS_DEADLINE`]).
const SURVEY_PAUSE: Duration = Duration::from_millis(200);

/// How to start one branch.
pub struct BranchConfig {
    pub id: NodeId,
    pub listener: TcpListener,
    /// Every other branch: id -> `host:port`.
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    pub initial_balance: u64,
}

/// A running branch; [`RunningBranch::shutdown`] stops it.
pub struct RunningBranch {
    pub branch: Branch,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    bootstrap: Option<JoinHandle<()>>,
}

/// Starts one branch: opens its data, decides resume / create / refuse, and serves.
pub async fn start(config: BranchConfig) -> Result<RunningBranch, ClusterError> {
    let BranchConfig {
        id,
        listener,
        peers,
        data_dir,
        initial_balance,
    } = config;
    if peers.contains_key(&id) {
        return Err(ClusterError::Branch {
            id,
            what: "--peer lists this branch's own id; list only the other branches".to_string(),
        });
    }
    if initial_balance > ORIGINAL_BALANCE_MAX {
        return Err(ClusterError::BalanceTooLarge(initial_balance));
    }
    let addr = listener.local_addr().map_err(|e| ClusterError::Branch {
        id,
        what: format!("listener has no address: {e}"),
    })?;
    let mut addresses = peers.clone();
    addresses.insert(id, addr.to_string());
    let ids: Vec<NodeId> = addresses.keys().copied().collect();

    let store = DurableStore::open(&data_dir)?;
    check_identity(
        &store,
        &ClusterIdentity {
            branch_id: id,
            branch_ids: ids.clone(),
            initial_balance_minor_units: initial_balance,
        },
    )?;
    let fresh = !store.is_initialized()?;
    let config = raft_config("bank").map_err(|e| ClusterError::Branch {
        id,
        what: e.to_string(),
    })?;
    let book = Peers::new(addresses.clone());
    let lowest = ids[0];
    let peer_ids: Vec<NodeId> = peers.keys().copied().collect();
    // A fresh branch other than the lowest asks its peers *before* it serves: the lowest
    // creates the cluster only once every other branch answers, so by then each has passed
    // this check, and a branch that finds state here really did lose its data.
    if fresh && id != lowest {
        survey_peers(&book, &peers, &peer_ids, false).await?;
    }
    let branch = create_branch(id, std::sync::Arc::new(config), book.clone(), Some(store)).await?;

    let (shutdown, mut stop) = watch::channel(false);
    let server_branch = branch.clone();
    let server = tokio::spawn(async move {
        let signal = async move {
            // An error means the sender is gone: stop as well.
            let _ = stop.wait_for(|stop| *stop).await;
        };
        service::serve(server_branch, listener, signal).await
    });
    let mut running = RunningBranch {
        branch,
        shutdown,
        server,
        bootstrap: None,
    };
    if !fresh {
        tracing::info!(branch = id, "resuming from {}", data_dir.display());
        return Ok(running);
    }
    if id == lowest {
        if let Err(e) = survey_peers(&book, &peers, &peer_ids, true).await {
            running.shutdown().await;
            return Err(e);
        }
        let (voters, learners) = voters_and_learners(addresses.clone());
        if let Err(e) = running.branch.raft.initialize(voters).await {
            running.shutdown().await;
            return Err(ClusterError::Branch {
                id,
                what: format!("initialise: {e}"),
            });
        }
        tracing::info!(branch = id, "created a new cluster of branches {ids:?}");
        let branch = running.branch.clone();
        running.bootstrap = Some(tokio::spawn(async move {
            if let Err(e) = open_and_add_learners(&branch, initial_balance, learners).await {
                tracing::error!(branch = branch.id, "bootstrap: {e}");
            }
        }));
    }
    Ok(running)
}

/// Asks every peer whether it has state. Any peer with state means this (fresh) branch lost
/// its data: refused. The lowest-id branch also waits until every peer has answered, so that a
/// new cluster is only created with all its branches up and fresh.
async fn survey_peers(
    book: &Peers,
    peers: &BTreeMap<NodeId, String>,
    peer_ids: &[NodeId],
    wait_for_all: bool,
) -> Result<(), ClusterError> {
    let deadline = Instant::now() + PEERS_DEADLINE;
    let mut answered = BTreeMap::new();
    loop {
        for &peer in peer_ids {
            if answered.contains_key(&peer) {
                continue;
            }
            let Some(addr) = peers.get(&peer) else {
                continue;
            };
            let Ok(mut client) = book.client(addr) else {
                continue;
            };
            let mut request = tonic::Request::new(StatusRequest {});
            request.set_timeout(STATUS_TIMEOUT);
            if let Ok(reply) = client.status(request).await {
                answered.insert(peer, reply.into_inner().has_state);
            }
        }
        let with_state: Vec<NodeId> = answered
            .iter()
            .filter(|(_, &has_state)| has_state)
            .map(|(&id, _)| id)
            .collect();
        if !with_state.is_empty() {
            return Err(ClusterError::LostState { with_state });
        }
        if !wait_for_all || answered.len() == peer_ids.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let missing: Vec<NodeId> = peer_ids
                .iter()
                .filter(|id| !answered.contains_key(id))
                .copied()
                .collect();
            return Err(ClusterError::PeersMissing {
                missing,
                deadline: PEERS_DEADLINE,
            });
        }
        tokio::time::sleep(SURVEY_PAUSE).await;
    }
}

/// After a new cluster's first election: opens the shared account, then adds the learners.
async fn open_and_add_learners(
    branch: &Branch,
    initial_balance: u64,
    learners: BTreeMap<NodeId, BasicNode>,
) -> Result<(), ClusterError> {
    let genesis = Command::Open {
        account: ORIGINAL_ACCOUNT,
        balance_minor_units: initial_balance,
        overdraft_limit_minor_units: 0,
        balance_max_minor_units: ORIGINAL_BALANCE_MAX,
    };
    let (outcome, _) = branch.submit(genesis).await?;
    if !matches!(
        outcome,
        Outcome::Opened { .. } | Outcome::AccountExists { .. }
    ) {
        return Err(ClusterError::Branch {
            id: branch.id,
            what: format!("opening the shared account gave {outcome:?}"),
        });
    }
    if learners.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + BOOTSTRAP_DEADLINE;
    while Instant::now() < deadline {
        match branch
            .raft
            .change_membership(ChangeMembers::AddNodes(learners.clone()), true)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => {
                tracing::warn!(branch = branch.id, "adding learners (retrying): {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Err(ClusterError::Timeout {
        step: "add its learners (only the leader can; this branch did not lead)",
        deadline: BOOTSTRAP_DEADLINE,
    })
}

impl RunningBranch {
    /// Stops serving (in-flight calls drain, bounded) and shuts the Raft node down.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Some(bootstrap) = self.bootstrap {
            bootstrap.abort();
        }
        match tokio::time::timeout(Duration::from_secs(5), self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("server stopped with an error: {e}"),
            Ok(Err(e)) => tracing::warn!("server task failed: {e}"),
            Err(_) => tracing::warn!("server did not drain within 5 s"),
        }
        if let Err(e) = self.branch.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}
