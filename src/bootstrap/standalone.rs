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
//!   of this cluster). It must not vote as if new — it might vote twice in a term, or help elect
//!   a leader that lacks committed entries — so it refuses to start.
//! - **Rejoin** (`--rejoin`, only on an empty data directory): the branch rebuilds from its
//!   peers. It first asks *every* other branch for its term and takes the highest as its term
//!   floor (it may have voted in any term up to it before it lost its record), records that on
//!   disk, and starts with elections off. Raft catches it up (by snapshot install when the log
//!   was purged) while it refuses every vote. Once it has applied the leader's read index taken
//!   after it started, its log holds every committed entry and it votes again — but never in a
//!   term at or below the floor, and it stands for election only once its term has reached the
//!   floor (a candidate's term is one above its current term, so above the floor).
//!   A crash half-way resumes these rules from disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use openraft::ChangeMembers;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bootstrap::local::{check_identity, create_branch, voters_and_learners, ClusterError};
use crate::ledger::{Command, Outcome, ORIGINAL_ACCOUNT, ORIGINAL_BALANCE_MAX};
use crate::node::{Branch, BranchError, REQUEST_DEADLINE};
use crate::proto::peer::{StatusReply, StatusRequest};
use crate::raft::durable::{ClusterIdentity, DurableStore, RejoinState};
use crate::raft::network::{decode, encode, Peers};
use crate::raft::{raft_config, BasicNode, NodeId};
use crate::server;

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
    /// Rebuild a branch that lost its data from its peers (see the module documentation).
    pub rejoin: bool,
    /// TLS for customers and mutual TLS with the peers ([`crate::tls`]); `None`: plaintext.
    pub tls: Option<crate::tls::BranchTls>,
    /// Bearer tokens the customer APIs require ([`crate::server::auth`]); `None`: open.
    pub tokens: Option<std::sync::Arc<crate::server::auth::Tokens>>,
}

/// A running branch; [`RunningBranch::shutdown`] stops it.
pub struct RunningBranch {
    pub branch: Branch,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Creating the cluster, or finishing a rejoin: stopped with the branch.
    background: Option<JoinHandle<()>>,
}

/// Starts one branch: opens its data, decides resume / create / refuse, and serves.
pub async fn start(config: BranchConfig) -> Result<RunningBranch, ClusterError> {
    let BranchConfig {
        id,
        listener,
        peers,
        data_dir,
        initial_balance,
        rejoin,
        tls,
        tokens,
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
    let mut rejoin_state = store.rejoin_state()?;
    let rejoin_pending = rejoin_state.is_some_and(|state| !state.caught_up);
    if rejoin && !fresh && !rejoin_pending {
        return Err(ClusterError::RejoinWithState {
            path: store.path().to_path_buf(),
        });
    }
    let mut config = raft_config("bank").map_err(|e| ClusterError::Branch {
        id,
        what: e.to_string(),
    })?;
    let (book, server_tls) = match tls {
        Some(tls) => (
            Peers::new(addresses.clone()).with_tls(tls.peer_client),
            Some(tls.server),
        ),
        None => (Peers::new(addresses.clone()), None),
    };
    let security = server::Security {
        tls: server_tls,
        tokens,
    };
    let lowest = ids[0];
    let peer_ids: Vec<NodeId> = peers.keys().copied().collect();
    if fresh && (rejoin || rejoin_pending) {
        let survey = survey_for_rejoin(&book, &peers, id).await?;
        let state = RejoinState {
            term_floor: rejoin_state
                .map_or(survey.term_floor, |s| s.term_floor.max(survey.term_floor)),
            voter: survey.voter || rejoin_state.is_some_and(|s| s.voter),
            caught_up: false,
        };
        // Recorded before the cluster forgets this branch: a crash from here on resumes the
        // rejoin (and promotes it back to voter) instead of starting it as new.
        store.set_rejoin_state(&state)?;
        tracing::info!(branch = id, term_floor = state.term_floor, "rejoining");
        // The leader still counts this branch's old log as replicated; openraft refuses to
        // see a follower's log go backwards. Removing the branch from the membership first
        // drops that record, and it is added back below as a new learner.
        let removal = if survey.voter {
            ChangeMembers::RemoveVoters([id].into())
        } else {
            ChangeMembers::RemoveNodes([id].into())
        };
        change_membership_via_peers(&book, &peers, removal, false).await?;
        rejoin_state = Some(state);
    } else if fresh && id != lowest {
        // A fresh branch other than the lowest asks its peers *before* it serves: the lowest
        // creates the cluster only once every other branch answers, so by then each has
        // passed this check, and a branch that finds state here really did lose its data.
        survey_peers(&book, &peers, &peer_ids, false).await?;
    }
    // A branch that rejoined stands for election only once its term has reached its floor
    // (`Rejoining::finish` turns elections back on).
    config.enable_elect = rejoin_state.is_none();
    let branch = create_branch(
        id,
        std::sync::Arc::new(config),
        book.clone(),
        Some(store.clone()),
    )
    .await?;
    if let Some(state) = rejoin_state {
        branch.vote_guard.set(!state.caught_up, state.term_floor);
    }

    let (shutdown, mut stop) = watch::channel(false);
    let server_branch = branch.clone();
    let server = tokio::spawn(async move {
        let signal = async move {
            // An error means the sender is gone: stop as well.
            let _ = stop.wait_for(|stop| *stop).await;
        };
        server::serve_with(server_branch, listener, security, signal).await
    });
    let mut running = RunningBranch {
        branch,
        shutdown,
        server,
        background: None,
    };
    if let Some(state) = rejoin_state {
        let rejoining = Rejoining {
            branch: running.branch.clone(),
            store,
            book,
            peers,
            addr: addr.to_string(),
        };
        running.background = Some(tokio::spawn(rejoining.finish(state)));
        return Ok(running);
    }
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
        running.background = Some(tokio::spawn(async move {
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
        ask_statuses(book, peers, &mut answered).await;
        let with_state: Vec<NodeId> = answered
            .iter()
            .filter(|(_, status)| status.has_state)
            .map(|(&id, _)| id)
            .collect();
        if !with_state.is_empty() {
            return Err(ClusterError::LostState { with_state });
        }
        if !wait_for_all || answered.len() == peer_ids.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::PeersMissing {
                missing: unanswered(peers, &answered),
                deadline: PEERS_DEADLINE,
            });
        }
        tokio::time::sleep(SURVEY_PAUSE).await;
    }
}

/// Asks every peer that has not answered yet for its status, once each (bounded per call).
async fn ask_statuses(
    book: &Peers,
    peers: &BTreeMap<NodeId, String>,
    answered: &mut BTreeMap<NodeId, StatusReply>,
) {
    for (&peer, addr) in peers {
        if answered.contains_key(&peer) {
            continue;
        }
        let Ok(mut client) = book.client(addr) else {
            continue;
        };
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(STATUS_TIMEOUT);
        // Bounded here too: the gRPC deadline binds the server only, and a peer whose port is
        // bound but not served yet (it is surveying its own peers) never answers a TLS
        // handshake.
        if let Ok(Ok(reply)) = tokio::time::timeout(STATUS_TIMEOUT, client.status(request)).await {
            answered.insert(peer, reply.into_inner());
        }
    }
}

/// The peers that have not answered.
fn unanswered(
    peers: &BTreeMap<NodeId, String>,
    answered: &BTreeMap<NodeId, StatusReply>,
) -> Vec<NodeId> {
    peers
        .keys()
        .filter(|id| !answered.contains_key(id))
        .copied()
        .collect()
}

/// What a rejoining branch learns from its peers.
struct RejoinSurvey {
    /// The highest term any other branch has seen.
    term_floor: u64,
    /// Whether any other branch counts this one among the voters.
    voter: bool,
}

/// For a rejoining branch: asks every other branch for the highest term it has seen and the
/// voters it knows. Every branch must answer (an unreachable one might hold the highest term),
/// and at least one must have state (otherwise there is no cluster to rejoin).
async fn survey_for_rejoin(
    book: &Peers,
    peers: &BTreeMap<NodeId, String>,
    id: NodeId,
) -> Result<RejoinSurvey, ClusterError> {
    let deadline = Instant::now() + PEERS_DEADLINE;
    let mut answered: BTreeMap<NodeId, StatusReply> = BTreeMap::new();
    loop {
        ask_statuses(book, peers, &mut answered).await;
        if answered.len() == peers.len() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::RejoinPeersMissing {
                missing: unanswered(peers, &answered),
                deadline: PEERS_DEADLINE,
            });
        }
        tokio::time::sleep(SURVEY_PAUSE).await;
    }
    if !answered.values().any(|status| status.has_state) {
        return Err(ClusterError::NothingToRejoin);
    }
    Ok(RejoinSurvey {
        term_floor: answered.values().map(|s| s.term).max().unwrap_or(0),
        voter: answered.values().any(|s| s.voters.contains(&id)),
    })
}

/// Asks the other branches, in turn, for a membership change until the leader among them
/// makes it (the others refuse without changing anything). Bounded by [`PEERS_DEADLINE`].
async fn change_membership_via_peers(
    book: &Peers,
    peers: &BTreeMap<NodeId, String>,
    changes: ChangeMembers<NodeId, BasicNode>,
    retain: bool,
) -> Result<u64, ClusterError> {
    let payload = encode(&(&changes, retain)).map_err(|e| ClusterError::Branch {
        id: 0,
        what: format!("encode a membership change: {e}"),
    })?;
    let deadline = Instant::now() + PEERS_DEADLINE;
    let mut refusals = Vec::new();
    while Instant::now() < deadline {
        refusals.clear();
        for addr in peers.values() {
            let Ok(mut client) = book.client(addr) else {
                continue;
            };
            let mut request = tonic::Request::new(payload.clone());
            let timeout = REQUEST_DEADLINE.min(deadline.saturating_duration_since(Instant::now()));
            request.set_timeout(timeout);
            match crate::raft::network::within(timeout, client.change_membership(request)).await {
                Ok(reply) => {
                    return decode::<u64>(reply.get_ref()).map_err(|e| ClusterError::Branch {
                        id: 0,
                        what: format!("membership change reply from {addr}: {e}"),
                    })
                }
                Err(status) => refusals.push(format!("{addr}: {}", status.message())),
            }
        }
        tokio::time::sleep(SURVEY_PAUSE).await;
    }
    Err(ClusterError::MembershipChange {
        changes: format!("{changes:?}"),
        deadline: PEERS_DEADLINE,
        refusals: refusals.join("; "),
    })
}

/// How long a rejoining branch keeps trying to catch up before it gives up (it then stays safe:
/// it refuses votes and does not stand for election until restarted).
const REJOIN_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Bound on one wait for the branch to apply the leader's read index while rejoining.
const CATCH_UP_WAIT: Duration = Duration::from_secs(60);

/// A branch finishing its rejoin.
struct Rejoining {
    branch: Branch,
    store: DurableStore,
    book: Peers,
    peers: BTreeMap<NodeId, String>,
    /// This branch's own address, as the cluster records it.
    addr: String,
}

impl Rejoining {
    /// Adds this branch back as a learner, waits until it has applied the leader's read index
    /// (taken after it was added, so every entry committed before it lost its data is at or
    /// below it), records that, promotes it back to voter if it was one, and lets it vote;
    /// then turns elections on once its term has reached the floor, so that any term it stands
    /// in is above it.
    async fn finish(self, mut state: RejoinState) {
        let Self {
            branch,
            store,
            book,
            peers,
            addr,
        } = self;
        let id = branch.id;
        let deadline = Instant::now() + REJOIN_DEADLINE;
        while !state.caught_up {
            if Instant::now() >= deadline {
                tracing::error!(
                    branch = id,
                    "did not catch up within {REJOIN_DEADLINE:?}; it refuses votes until restarted"
                );
                return;
            }
            let caught_up = async {
                // Adding an existing member changes nothing: safe to repeat after a crash.
                let learner =
                    ChangeMembers::AddNodes([(id, BasicNode { addr: addr.clone() })].into());
                change_membership_via_peers(&book, &peers, learner, true).await?;
                let index = branch.read_index(Instant::now() + REQUEST_DEADLINE).await?;
                branch
                    .wait_applied(index, Instant::now() + CATCH_UP_WAIT)
                    .await?;
                if state.voter {
                    branch
                        .change_membership(ChangeMembers::AddVoterIds([id].into()), true)
                        .await?;
                }
                Ok::<(), ClusterError>(())
            };
            match caught_up.await {
                Ok(()) => {
                    let done = RejoinState {
                        caught_up: true,
                        ..state
                    };
                    match store.set_rejoin_state(&done) {
                        Ok(()) => state = done,
                        Err(e) => tracing::error!(branch = id, "recording the rejoin: {e}"),
                    }
                }
                Err(ClusterError::Request(BranchError::ShuttingDown)) => return,
                Err(e) => tracing::info!(branch = id, "rejoin: still catching up: {e}"),
            }
            if !state.caught_up {
                tokio::time::sleep(SURVEY_PAUSE).await;
            }
        }
        branch.vote_guard.set(false, state.term_floor);
        tracing::info!(branch = id, "rejoined: caught up, voting again");
        loop {
            let above_floor = branch
                .raft
                .wait(Some(CATCH_UP_WAIT))
                .metrics(
                    |m| m.vote.leader_id().term >= state.term_floor,
                    "term at the rejoin floor",
                )
                .await;
            match above_floor {
                Ok(_) => break,
                Err(openraft::metrics::WaitError::Timeout(..)) => continue,
                Err(openraft::metrics::WaitError::ShuttingDown) => return,
            }
        }
        branch.raft.runtime_config().elect(true);
        tracing::info!(branch = id, "rejoined: standing for election again");
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
    // Forwarded to the leader if this branch no longer leads.
    branch
        .change_membership(ChangeMembers::AddNodes(learners), true)
        .await?;
    Ok(())
}

impl RunningBranch {
    /// Stops serving (in-flight calls drain, bounded) and shuts the Raft node down.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Some(background) = self.background {
            background.abort();
        }
        match tokio::time::timeout(Duration::from_secs(5), self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("server stopped with an error: {e}"),
            Ok(Err(e)) => tracing::warn!("server task failed: {e}"),
            Err(_) => tracing::warn!("server did not drain within 5 s"),
        }
        if let Err(e) = self.branch.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}
