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
//! - **Repair**: a branch that finds its own log or snapshot damaged (a failed checksum)
//!   moves its data directory aside and rejoins as above, by itself, when every peer answers
//!   and one has state; otherwise it refuses to start, naming what is damaged (`super::repair`).
//! - **Join** (`--join ADDR`, on an empty data directory): the branch is added to a running
//!   cluster as a learner through the branch at ADDR, caught up, and promoted to voter if the
//!   cluster has room (see `super::join`). On a branch with state, `--join` changes nothing.
//!
//! The data directory is stamped with the branch's id on first start, and a start under
//! another id is refused. The peers given on the command line are only where to find the
//! cluster: who belongs to it is Raft's membership, which changes at runtime
//! (`bank member`), so it is not pinned on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::join;
use super::rejoin::Rejoining;
use super::repair;
pub use super::survey::PEERS_DEADLINE;
use super::survey::{survey_for_rejoin, survey_peers};
use super::{check_initial_balance, open_shared_account, ClusterError};
use crate::node::{
    change_members_via_peers, voters_and_learners, Branch, BranchBuilder, MemberChange, Storage,
};
use crate::raft::disk_space::{DiskSpace, Space, DISK_RESERVE_DEFAULT_MIB};
use crate::raft::durable::{ClusterIdentity, DurableStore, RejoinState};
use crate::raft::network::Peers;
use crate::server::{self, ServerConfig, CUSTOMER_REQUESTS_MAX_DEFAULT};
use crate::BranchId;

/// How to start one branch.
pub struct BranchConfig {
    pub id: BranchId,
    pub listener: TcpListener,
    /// Every other branch: id -> `host:port`.
    pub peers: BTreeMap<BranchId, String>,
    pub data_dir: PathBuf,
    pub initial_balance: u64,
    /// Rebuild a branch that lost its data from its peers (see the module documentation).
    pub rejoin: bool,
    /// Join the running cluster through the branch at this address (`host:port`), if this
    /// branch has no state yet.
    pub join: Option<String>,
    /// TLS for customers and mutual TLS with the peers ([`crate::tls`]); `None`: plaintext.
    pub tls: Option<crate::tls::BranchTls>,
    /// Bearer tokens the customer APIs require ([`crate::server::auth`]); `None`: open.
    pub tokens: Option<std::sync::Arc<crate::server::auth::Tokens>>,
    /// Customer calls in flight at most ([`crate::server::admission`]).
    pub requests_max: usize,
    /// How long [`RunningBranch::shutdown`] lets in-flight calls finish before it stops
    /// serving regardless.
    pub drain_timeout: Duration,
    /// Free space kept on the data directory's disk ([`crate::raft::disk_space`]).
    pub disk_reserve_mib: u64,
    /// While this file exists, the disk counts as full (an injected fault, for drills).
    pub simulate_disk_full: Option<PathBuf>,
}

/// The default of [`BranchConfig::drain_timeout`].
pub const DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

impl BranchConfig {
    /// Branch `id` on `listener`, plaintext, open, with the default bound on calls in flight.
    pub fn new(
        id: BranchId,
        listener: TcpListener,
        peers: BTreeMap<BranchId, String>,
        data_dir: PathBuf,
        initial_balance: u64,
    ) -> BranchConfig {
        BranchConfig {
            id,
            listener,
            peers,
            data_dir,
            initial_balance,
            rejoin: false,
            join: None,
            tls: None,
            tokens: None,
            requests_max: CUSTOMER_REQUESTS_MAX_DEFAULT,
            drain_timeout: DRAIN_TIMEOUT_DEFAULT,
            disk_reserve_mib: DISK_RESERVE_DEFAULT_MIB,
            simulate_disk_full: None,
        }
    }
}

/// A running branch; [`RunningBranch::shutdown`] stops it.
pub struct RunningBranch {
    pub branch: Branch,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Creating the cluster, or finishing a rejoin or a join: stopped with the branch.
    background: Option<JoinHandle<()>>,
    /// Records on disk that the cluster removed this branch, once it is told.
    removal: Option<JoinHandle<()>>,
    /// [`BranchConfig::drain_timeout`].
    drain_timeout: Duration,
}

/// What this branch's disk says about this start.
struct Disk {
    store: DurableStore,
    /// No Raft state on disk.
    fresh: bool,
    /// A rejoin recorded on disk (pending or done).
    rejoin: Option<RejoinState>,
    /// This branch joined a running cluster (`--join`) rather than creating one.
    joined: bool,
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
        join,
        tls,
        tokens,
        requests_max,
        drain_timeout,
        disk_reserve_mib,
        simulate_disk_full,
    } = config;
    if rejoin && join.is_some() {
        return Err(ClusterError::JoinAndRejoin);
    }
    if peers.contains_key(&id) {
        return Err(ClusterError::Branch {
            id,
            what: "--peer lists this branch's own id; list only the other branches".to_string(),
        });
    }
    check_initial_balance(initial_balance)?;
    let addr = listener.local_addr().map_err(|e| ClusterError::Branch {
        id,
        what: format!("listener has no address: {e}"),
    })?;
    let mut addresses = peers.clone();
    addresses.insert(id, addr.to_string());
    let (book, server_tls) = match tls {
        Some(tls) => (
            Peers::new(addresses.clone()).with_tls(tls.peer_client),
            Some(tls.server),
        ),
        None => (Peers::new(addresses.clone()), None),
    };
    // Damaged data (a failed checksum) is moved aside and rebuilt from the peers, if they can.
    let rejoin = rejoin
        || (join.is_none() && repair::set_damage_aside(id, &data_dir, &book, &peers).await?);
    let space = disk_space(id, &data_dir, disk_reserve_mib, simulate_disk_full);
    let disk = open_disk(
        id,
        &data_dir,
        space,
        &addresses,
        initial_balance,
        rejoin,
        join.is_some(),
    )?;
    let server_config = ServerConfig {
        tls: server_tls,
        tokens,
        requests_max,
    };
    let joining = join.filter(|_| disk.fresh || disk.joined);
    let rejoin_state = if joining.is_some() {
        None
    } else {
        before_serving(id, &disk, rejoin, &book, &peers).await?
    };
    // A branch that rejoined stands for election only once its term has reached its floor
    // (`Rejoining::finish` turns elections back on).
    let branch = BranchBuilder::new(id, book.clone())
        .storage(Storage::Durable(disk.store.clone()))
        .elections(rejoin_state.is_none())
        .build()
        .await?;
    if let Some(state) = rejoin_state {
        branch.vote_guard().set(!state.caught_up, state.term_floor);
    }
    let mut running = RunningBranch::serve(branch, listener, server_config, drain_timeout);
    running.removal = Some(tokio::spawn(record_removal(
        running.branch.clone(),
        disk.store.clone(),
    )));
    if let Some(state) = rejoin_state {
        let rejoining = Rejoining {
            branch: running.branch.clone(),
            store: disk.store,
            book,
            peers,
            addr: addr.to_string(),
        };
        running.background = Some(tokio::spawn(rejoining.finish(state)));
        return Ok(running);
    }
    if let Some(join) = joining {
        if disk.fresh {
            match join::ask_to_join(&book, &join, id, &addr.to_string()).await {
                Ok(index) => tracing::info!(branch = id, "added as a learner at log index {index}"),
                Err(e) => {
                    running.shutdown().await;
                    return Err(e);
                }
            }
        }
        running.background = Some(tokio::spawn(join::promote_when_caught_up(
            running.branch.clone(),
        )));
        return Ok(running);
    }
    if !disk.fresh {
        tracing::info!(branch = id, "resuming from {}", data_dir.display());
        return Ok(running);
    }
    if addresses.keys().next() == Some(&id) {
        if let Err(e) =
            create_cluster(&mut running, &book, &peers, addresses, initial_balance).await
        {
            running.shutdown().await;
            return Err(e);
        }
    }
    Ok(running)
}

/// The room on the data directory's disk, said at start if it is already low.
fn disk_space(
    id: BranchId,
    data_dir: &std::path::Path,
    reserve_mib: u64,
    full_while: Option<PathBuf>,
) -> DiskSpace {
    let space = DiskSpace::for_dir(data_dir, reserve_mib, full_while);
    let room = space.check();
    if room.space > Space::Room {
        tracing::warn!(
            branch = id,
            "at start, {room}: this branch takes no writes and does not lead until space is freed"
        );
    }
    space
}

/// Opens the data directory, checks it was made for this branch, and reads what it says.
fn open_disk(
    id: BranchId,
    data_dir: &std::path::Path,
    space: DiskSpace,
    addresses: &BTreeMap<BranchId, String>,
    initial_balance: u64,
    rejoin: bool,
    join: bool,
) -> Result<Disk, ClusterError> {
    let store = DurableStore::open_with(data_dir, space)?;
    let identity = match store.identity()? {
        Some(found) if found.branch_id != id => {
            return Err(ClusterError::Mismatch {
                path: store.path().to_path_buf(),
                found: format!("branch {}", found.branch_id),
                expected: format!("branch {id}"),
            })
        }
        Some(found) => found,
        None => {
            // A joining branch learns the cluster from Raft: its stamp names no other branch.
            let identity = ClusterIdentity {
                branch_id: id,
                branch_ids: if join {
                    Vec::new()
                } else {
                    addresses.keys().copied().collect()
                },
                initial_balance_minor_units: if join { 0 } else { initial_balance },
            };
            store.set_identity(&identity)?;
            identity
        }
    };
    if let Some(log_index) = store.removed()? {
        return Err(ClusterError::Removed {
            path: store.path().to_path_buf(),
            log_index,
        });
    }
    let fresh = !store.is_initialized()?;
    let recorded = store.rejoin_state()?;
    let rejoin_pending = recorded.is_some_and(|state| !state.caught_up);
    if rejoin && !fresh && !rejoin_pending {
        return Err(ClusterError::RejoinWithState {
            path: store.path().to_path_buf(),
        });
    }
    Ok(Disk {
        store,
        fresh,
        rejoin: recorded,
        joined: identity.branch_ids.is_empty(),
    })
}

/// What a branch settles with its peers before it serves: a fresh branch asked to rejoin (or
/// resuming a rejoin) learns its term floor and leaves the membership; another fresh branch
/// (not the lowest id) checks that no peer has state. Returns the rejoin in force, if any.
async fn before_serving(
    id: BranchId,
    disk: &Disk,
    rejoin: bool,
    book: &Peers,
    peers: &BTreeMap<BranchId, String>,
) -> Result<Option<RejoinState>, ClusterError> {
    let rejoin_pending = disk.rejoin.is_some_and(|state| !state.caught_up);
    let lowest = peers.keys().next().is_none_or(|&peer| id < peer);
    if disk.fresh && (rejoin || rejoin_pending) {
        let survey = survey_for_rejoin(book, peers, id).await?;
        let state = RejoinState {
            term_floor: disk
                .rejoin
                .map_or(survey.term_floor, |s| s.term_floor.max(survey.term_floor)),
            voter: survey.voter || disk.rejoin.is_some_and(|s| s.voter),
            caught_up: false,
        };
        // Recorded before the cluster forgets this branch: a crash from here on resumes the
        // rejoin (and promotes it back to voter) instead of starting it as new.
        disk.store.set_rejoin_state(&state)?;
        tracing::info!(branch = id, term_floor = state.term_floor, "rejoining");
        // The leader still counts this branch's old log as replicated; Raft refuses to see a
        // follower's log go backwards. Forgetting the branch's membership first drops that
        // record, and it is added back as a new learner.
        let forget = MemberChange::Forget { id };
        change_members_via_peers(book, peers, &forget, PEERS_DEADLINE).await?;
        return Ok(Some(state));
    }
    if disk.fresh && !lowest {
        // A fresh branch other than the lowest asks its peers *before* it serves: the lowest
        // creates the cluster only once every other branch answers, so by then each has
        // passed this check, and a branch that finds state here really did lose its data.
        survey_peers(book, peers, false).await?;
    }
    Ok(disk.rejoin)
}

/// The lowest-id branch of a new cluster: waits for every peer, up and fresh, initialises the
/// voters, then (in the background, once a leader is elected) opens the shared account and
/// adds the learners.
async fn create_cluster(
    running: &mut RunningBranch,
    book: &Peers,
    peers: &BTreeMap<BranchId, String>,
    addresses: BTreeMap<BranchId, String>,
    initial_balance: u64,
) -> Result<(), ClusterError> {
    let id = running.branch.id;
    survey_peers(book, peers, true).await?;
    let ids: Vec<BranchId> = addresses.keys().copied().collect();
    let (voters, learners) = voters_and_learners(addresses);
    running
        .branch
        .initialize(&voters)
        .await
        .map_err(|e| ClusterError::Branch {
            id,
            what: format!("initialise: {e}"),
        })?;
    tracing::info!(branch = id, "created a new cluster of branches {ids:?}");
    let branch = running.branch.clone();
    running.background = Some(tokio::spawn(async move {
        if let Err(e) = open_and_add_learners(&branch, initial_balance, learners).await {
            tracing::error!(branch = branch.id, "bootstrap: {e}");
        }
    }));
    Ok(())
}

/// After a new cluster's first election: opens the shared account, then adds the learners.
async fn open_and_add_learners(
    branch: &Branch,
    initial_balance: u64,
    learners: BTreeMap<BranchId, String>,
) -> Result<(), ClusterError> {
    open_shared_account(branch, initial_balance, true).await?;
    // Forwarded to the leader if this branch no longer leads.
    super::add_learners(branch, learners).await?;
    Ok(())
}

/// Once the leader tells `branch` it was removed, records it in `store`, so the branch
/// refuses to start again rather than come back as a member it no longer is.
async fn record_removal(branch: Branch, store: DurableStore) {
    let removed = branch.wait_removed().await;
    if let Err(e) = store.set_removed(removed.log_index) {
        tracing::error!(branch = branch.id, "recording the removal: {e}");
    }
}

impl RunningBranch {
    /// Serves `branch` on `listener` until [`RunningBranch::shutdown`].
    fn serve(
        branch: Branch,
        listener: TcpListener,
        config: ServerConfig,
        drain_timeout: Duration,
    ) -> RunningBranch {
        let (shutdown, mut stop) = watch::channel(false);
        let server_branch = branch.clone();
        let server = tokio::spawn(async move {
            let signal = async move {
                // An error means the sender is gone: stop as well.
                let _ = stop.wait_for(|stop| *stop).await;
            };
            server::serve(server_branch, listener, config, signal).await
        });
        RunningBranch {
            branch,
            shutdown,
            server,
            background: None,
            removal: None,
            drain_timeout,
        }
    }

    /// Stops serving (in-flight calls drain, bounded) and shuts the Raft node down.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in [self.background, self.removal].into_iter().flatten() {
            task.abort();
        }
        match tokio::time::timeout(self.drain_timeout, self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("server stopped with an error: {e}"),
            Ok(Err(e)) => tracing::warn!("server task failed: {e}"),
            Err(_) => tracing::warn!(
                "server did not drain within {:?} (--drain-timeout)",
                self.drain_timeout
            ),
        }
        if let Err(e) = self.branch.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}
