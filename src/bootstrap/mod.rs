//! Starting branches: the one place a cluster is created, resumed, refused or rejoined.
//!
//! - [`local`]: a whole cluster in one process, on loopback (`bank run`, `bank server`, tests);
//!   [`partition`]: cutting its branches off from each other on purpose.
//! - [`standalone`]: one branch per process (`bank branch`), deciding from its own disk and
//!   its peers' answers (`survey`); [`rejoin`]: a branch that lost its data rebuilding from
//!   its peers (by hand, or by itself when it finds its data damaged: `repair`); `join`: a
//!   new branch added to a running cluster; [`restore`]: the data directory of a branch of a
//!   new cluster, from a backup.
//! - Here: what both share — the genesis entry that opens the shared account (written once,
//!   here), the identity a data directory is stamped with, and the errors of starting.

mod join;
pub mod local;
pub mod partition;
pub mod rejoin;
mod repair;
pub mod restore;
pub mod standalone;
mod survey;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use crate::ledger::{Command, Outcome, ORIGINAL_ACCOUNT, ORIGINAL_BALANCE_MAX};
use crate::node::{
    Branch, BranchError, BuildError, MemberChange, MemberRefused, MembersChanged, REQUEST_DEADLINE,
};
use crate::raft::durable::{ClusterIdentity, DurableError, DurableStore};
use crate::BranchId;

/// Why a branch or a cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no branches to start")]
    Empty,
    #[error("cannot listen on {addr}: {cause} (is another bank server running? try another --base-port)")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("branch {id}: {what}")]
    Branch { id: BranchId, what: String },
    #[error(transparent)]
    Request(#[from] BranchError),
    #[error(transparent)]
    Build(#[from] BuildError),
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
        with_state: Vec<BranchId>,
        without_state: Vec<BranchId>,
    },
    #[error("this branch has no state, but branches {with_state:?} do: its data was lost, or it never belonged to this cluster. It must not rejoin as if new (it could vote twice in a term); restore its data directory, or start it with --rejoin to rebuild it from its peers. A new branch joins a running cluster with --join ADDR")]
    LostState { with_state: Vec<BranchId> },
    #[error("{path} has Raft state: --rejoin is only for a branch that lost its data (an empty data directory); start it without --rejoin")]
    RejoinWithState { path: PathBuf },
    #[error("branches {missing:?} did not answer within {deadline:?}: a rejoining branch needs every other branch up, to learn the highest term any of them has seen")]
    RejoinPeersMissing {
        missing: Vec<BranchId>,
        deadline: Duration,
    },
    #[error("no other branch has state: there is no cluster to rejoin; start without --rejoin to create a new cluster")]
    NothingToRejoin,
    #[error("branches {missing:?} did not answer within {deadline:?}: start every branch of a new cluster, with the same --peer list")]
    PeersMissing {
        missing: Vec<BranchId>,
        deadline: Duration,
    },
    #[error("{path}: this branch was removed from its cluster (by the membership entry at log index {log_index}); it does not start again. To add it back, start it with an empty data directory and --join")]
    Removed { path: PathBuf, log_index: u64 },
    #[error("cannot join the cluster through {at}: {what}")]
    Join { at: String, what: String },
    #[error("--join and --rejoin do not go together: --join adds a new branch, --rejoin rebuilds a member that lost its data")]
    JoinAndRejoin,
    #[error("the initial balance {0} is above the original API's int32 limit")]
    BalanceTooLarge(u64),
}

/// The genesis command: opens the shared account of the course's API with the scenario's
/// initial balance. A log entry like any other, so every branch, learners included, applies it.
pub fn genesis(initial_balance: u64) -> Command {
    Command::Open {
        account: ORIGINAL_ACCOUNT,
        balance_minor_units: initial_balance,
        overdraft_limit_minor_units: 0,
        balance_max_minor_units: ORIGINAL_BALANCE_MAX,
    }
}

/// Proposes the genesis entry through `branch` (forwarded to the leader if needed) and returns
/// its log index. An account already open counts (a retried bootstrap) when `reopen_ok`.
pub async fn open_shared_account(
    branch: &Branch,
    initial_balance: u64,
    reopen_ok: bool,
) -> Result<u64, ClusterError> {
    let (outcome, index) = branch.submit(genesis(initial_balance)).await?;
    match outcome {
        Outcome::Opened { .. } => Ok(index),
        Outcome::AccountExists { .. } if reopen_ok => Ok(index),
        other => Err(ClusterError::Branch {
            id: branch.id,
            what: format!("opening the shared account gave {other:?}"),
        }),
    }
}

/// Pause before asking again for a membership change refused as in progress.
const IN_PROGRESS_PAUSE: Duration = Duration::from_millis(100);

/// Makes `change` through `branch`'s leader, asked again while another membership change is
/// in progress (a bootstrap's change waits its turn, where an operator's is refused at once),
/// for at most [`REQUEST_DEADLINE`].
pub(crate) async fn change_members_in_turn(
    branch: &Branch,
    change: &MemberChange,
) -> Result<MembersChanged, BranchError> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    loop {
        match branch.change_members(change).await {
            Err(BranchError::MemberRefused(MemberRefused::InProgress))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(crate::retry::jittered(IN_PROGRESS_PAUSE)).await
            }
            answer => return answer,
        }
    }
}

/// Adds `learners` (id -> address) through `branch`'s leader, one change each; the log index
/// of the last change (`None`: there were none).
pub(crate) async fn add_learners(
    branch: &Branch,
    learners: BTreeMap<BranchId, String>,
) -> Result<Option<u64>, BranchError> {
    let mut last = None;
    for (id, address) in learners {
        let added = change_members_in_turn(branch, &MemberChange::Add { id, address }).await?;
        last = Some(added.log_index);
    }
    Ok(last)
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

/// Refuses an initial balance the original API's int32 cannot carry.
pub(crate) fn check_initial_balance(initial_balance: u64) -> Result<(), ClusterError> {
    if initial_balance > ORIGINAL_BALANCE_MAX {
        return Err(ClusterError::BalanceTooLarge(initial_balance));
    }
    Ok(())
}
