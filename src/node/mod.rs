//! The node: one branch's replica of the ledger behind one facade, [`Branch`], the only code
//! that calls openraft for writes, reads and membership. The servers, bootstrap and the
//! simulator use it; [`BranchBuilder`] constructs it for a local cluster, a standalone
//! branch and the simulator alike.
//!
//! - Writes (`write`): proposed to openraft with a fresh [`crate::ledger::RequestId`]. If this branch is
//!   not the leader, the proposal is forwarded to the leader over the peer service; customers
//!   never see leadership. Any failure (not the leader any more, a timeout, an unreachable
//!   leader) is retried with the *same* request id, which the ledger applies at most once, so a
//!   retry can never apply a deposit twice. Retries are bounded in count and by the request
//!   deadline.
//! - Group commit (`group`): concurrent proposals share one log entry.
//! - Reads (`read`): read-index reads. The leader's read index (confirmed by a quorum
//!   heartbeat) is fetched, locally if this branch leads and over the peer service otherwise;
//!   then the read waits until this branch has applied up to it and is served from the local
//!   replica. So a query at any branch, learners included, is both local and linearizable.
//! - Membership: one API for every change to a running cluster's members (`members`: a
//!   [`MemberChange`], checked by the leader, refused with a [`MemberRefused`], and what a
//!   removed branch does), and a new cluster's first voters and elections (`formation`).
//! - The peer calls a branch answers (`peer`), what it reports of its Raft state (`view`),
//!   and the votes a rejoining branch refuses (`vote_guard`).
//! - Every wait is bounded by [`REQUEST_DEADLINE`]; every failure is a [`BranchError`].

mod builder;
mod disk;
mod error;
mod formation;
mod group;
mod members;
mod peer;
mod read;
mod view;
mod vote_guard;
mod write;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use builder::{BranchBuilder, BuildError, Storage};
pub use error::{BadGroup, BranchError, Internal, Unavailable, WriteFailure};
pub use formation::voters_and_learners;
pub use members::{
    change_members_via_peers, MemberChange, MemberRefused, MembersChanged, Removed, PROMOTE_LAG_MAX,
};
pub use view::{Membership, RaftView, RaftWatch, Role};
pub use vote_guard::{VoteGuard, VoteRefused};

use crate::lamport::{CourseRequest, LamportClock};
use crate::ledger::{AccountId, Command, Outcome, Proposal};
use crate::raft::disk_space::DiskSpace;
use crate::raft::network::Peers;
use crate::raft::state_machine::{StateMachineData, StateMachineStore};
use crate::raft::{NodeId, Raft};
use group::GroupCommitter;
use read::ReadRounds;

/// How long one customer request may wait for a leader, replication and apply.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// At most this many attempts per write or read index (leader changes while it is in flight).
const ATTEMPTS_MAX: u32 = 16;

/// Pause before retrying after a failed attempt: doubles from this, capped at
/// [`RETRY_PAUSE_MAX`], and never past the request deadline.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(20);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);

/// What a group commit answers: each item's outcome, in order, and the log index of the entry
/// that carried them.
pub type GroupReply = Result<(Vec<Outcome>, u64), BranchError>;

/// The replica itself: the Raft node, its state machine, the way to its peers. Proposes and
/// reads *now*; it never queues. The group committer holds one of these (never a [`Branch`]),
/// so there is no handle that looks like a branch but skips the queue.
#[derive(Clone)]
struct Replica {
    id: NodeId,
    raft: Raft,
    state_machine: StateMachineStore,
    peers: Peers,
    vote_guard: Arc<VoteGuard>,
    /// This incarnation's request-id origin: random, so ids never repeat across restarts.
    origin: u64,
    sequence: Arc<AtomicU64>,
    /// Deliberately broken reads for the simulator's self-test: serve the local replica
    /// without the read index (stale reads). Set only through
    /// [`BranchBuilder::unsafe_local_reads`].
    unsafe_local_reads: bool,
    read_rounds: Arc<ReadRounds>,
    /// The course's Project 2 clock: stamps the course requests this branch forwards.
    lamport: Arc<LamportClock>,
    /// The room on this branch's disk ([`disk`]).
    space: DiskSpace,
    /// Whether this branch is to stand for election, disk permitting.
    elections_wanted: Arc<AtomicBool>,
}

/// One branch's replica, behind its one facade. Cheap to clone.
#[derive(Clone)]
pub struct Branch {
    /// The branch's id (its Raft node id).
    pub id: NodeId,
    replica: Replica,
    committer: Arc<GroupCommitter>,
    members: Arc<members::MemberState>,
}

impl Branch {
    /// Stops the group committer (proposals still queued or in flight fail as "shutting
    /// down"), waits for it, and shuts the Raft node down. The branch's storage is released
    /// once the caller's handles are dropped.
    pub async fn shutdown(&self) -> Result<(), BranchError> {
        self.committer.stop(self.id).await;
        self.replica
            .raft
            .shutdown()
            .await
            .map_err(BranchError::raft)
    }

    /// Proposes `command` through the leader, under a request id of this branch's own, and
    /// returns its replicated outcome and log index.
    pub async fn submit(&self, command: Command) -> Result<(Outcome, u64), BranchError> {
        self.submit_course(command, None).await
    }

    /// [`Branch::submit`] for a Project 2 customer: the messages that carry the proposal to
    /// the other branches carry `course`'s Lamport clock (see [`crate::lamport`]).
    pub async fn submit_course(
        &self,
        command: Command,
        course: Option<CourseRequest>,
    ) -> Result<(Outcome, u64), BranchError> {
        let proposal = Proposal {
            request_id: self.replica.next_request_id(),
            command,
        };
        if let Some(course) = course {
            self.replica.lamport.label(proposal.request_id, course);
        }
        self.submit_proposal(proposal).await
    }

    /// This branch's Lamport clock and event log (the course's Project 2).
    pub fn lamport(&self) -> &LamportClock {
        &self.replica.lamport
    }

    /// Proposes `proposal` (its request id chosen by the caller, e.g. a customer) through the
    /// leader and returns its replicated outcome and log index. Retried inside the branch with
    /// the same request id, so it is applied at most once.
    ///
    /// Concurrent proposals are group-committed: queued, and sent together as one `Batch` log
    /// entry (each item keeps its own request id and gets its own outcome), so one replication
    /// round and one fsync serve many customers. A follower forwards its groups to the
    /// leader, whose committer merges them with its own (see [`Branch::submit_group`]).
    pub async fn submit_proposal(&self, proposal: Proposal) -> Result<(Outcome, u64), BranchError> {
        self.refuse_if_disk_low()?;
        if matches!(proposal.command, Command::Batch(_)) {
            // Batches do not nest: a customer's batch is already one entry.
            return self
                .replica
                .submit_now(proposal, write::Forwarding::Whole)
                .await;
        }
        let (mut outcomes, index) = self.submit_group(vec![proposal]).await?;
        match (outcomes.pop(), outcomes.is_empty()) {
            (Some(outcome), true) => Ok((outcome, index)),
            _ => Err(BranchError::Internal(Internal::GroupAnswer(
                outcomes.len() + 1,
            ))),
        }
    }

    /// Queues `items` (1 to [`crate::ledger::BATCH_ITEMS_MAX`] proposals, none of them a
    /// batch: the caller checks) for the group committer as one submission, and waits for
    /// their outcomes, in order. They share one log entry, possibly with other submissions.
    pub async fn submit_group(&self, items: Vec<Proposal>) -> GroupReply {
        self.refuse_if_disk_low()?;
        self.committer.submit(items).await
    }

    /// Whether this branch is the leader as far as it knows now.
    pub fn leads(&self) -> bool {
        self.replica.leads()
    }

    /// The leader's read index: a log index such that every write acknowledged before this
    /// call started is at or below it (concurrent callers share rounds).
    pub async fn read_index(&self, deadline: Instant) -> Result<Option<u64>, BranchError> {
        self.replica.read_index(deadline).await
    }

    /// A linearizable read of one account's balance, served from this branch's replica.
    pub async fn read_balance(&self, account: AccountId) -> Result<Option<i64>, BranchError> {
        self.replica.read_balance(account).await
    }

    /// Waits until this branch has applied the log up to `index`.
    pub async fn wait_applied(
        &self,
        index: Option<u64>,
        deadline: Instant,
    ) -> Result<(), BranchError> {
        self.replica.wait_applied(index, deadline).await
    }

    /// The balances of `accounts` (`None`: no such account) and the log index they reflect,
    /// read together from this branch's replica as it is now. No read index: the caller has
    /// already waited for whatever freshness it needs (see [`Branch::read_balance`]).
    pub fn local_balances(
        &self,
        accounts: &[AccountId],
    ) -> Result<(Vec<Option<i64>>, Option<u64>), BranchError> {
        self.replica.local_balances(accounts)
    }

    /// A copy of the applied state as it is now (the ledger and the last applied log id).
    pub fn applied_state(&self) -> Result<StateMachineData, BranchError> {
        self.read_state(|state| state.clone())
    }

    /// Reads the applied state as it is now.
    pub fn read_state<T>(&self, f: impl FnOnce(&StateMachineData) -> T) -> Result<T, BranchError> {
        self.replica
            .state_machine
            .read(f)
            .ok_or(BranchError::Internal(Internal::Poisoned))
    }

    /// How many commands this branch has applied to its ledger, each followed by the ledger's
    /// invariant assertions.
    pub fn applies_checked(&self) -> u64 {
        self.replica.state_machine.applies_checked()
    }

    /// The rules on which votes this branch refuses (see [`VoteGuard`]).
    pub fn vote_guard(&self) -> &VoteGuard {
        &self.replica.vote_guard
    }

    /// How this branch reaches its peers: their addresses and one cached channel each.
    pub fn peers(&self) -> &Peers {
        &self.replica.peers
    }
}

impl Replica {
    /// Whether this branch is the leader as far as it knows now.
    fn leads(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }
}

/// Sleeps before retry `attempt`: exponential from [`RETRY_PAUSE_MIN`], capped, jittered,
/// never past `deadline`.
async fn pause_before_retry(attempt: u32, deadline: Instant) {
    let pause = retry_pause(attempt);
    tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
}

/// The pause before retry `attempt`: exponential from [`RETRY_PAUSE_MIN`], capped at
/// [`RETRY_PAUSE_MAX`], jittered.
fn retry_pause(attempt: u32) -> Duration {
    crate::retry::backoff(attempt, RETRY_PAUSE_MIN, RETRY_PAUSE_MAX)
}
