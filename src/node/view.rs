//! What a branch reports of its Raft state, in the bank's words: a [`RaftView`] taken from
//! openraft's metrics, and a [`RaftWatch`] that wakes on every change. Health, metrics, status
//! and the simulator read these, never openraft's own types.

use std::collections::BTreeMap;

use super::{Branch, BranchError};
use crate::raft::BasicNode;
use crate::BranchId;

/// A branch's role in Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl Role {
    /// The role as `bank status` prints it.
    pub fn label(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// One branch's Raft state at one moment. Plain numbers, no allocation: the health watcher
/// takes one on every change of the Raft state (every applied entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftView {
    pub id: BranchId,
    pub role: Role,
    /// The highest term this branch has seen.
    pub current_term: u64,
    /// The term of the vote this branch holds (what a rejoin's term floor compares with).
    pub vote_term: u64,
    pub leader: Option<BranchId>,
    /// Whether the branch is a member of the cluster (voter or learner).
    pub member: bool,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// On the leader, the last log index stored on a majority of voters; `None` elsewhere
    /// (openraft 0.9 does not report a follower's commit index).
    pub committed_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}

impl RaftView {
    /// Whether the branch is fit to serve: a member that knows a leader.
    pub fn is_serving(&self) -> bool {
        self.member && self.leader.is_some()
    }

    /// Whether the branch has Raft state: it has voted or holds a log (what it loaded from
    /// disk, for a durable branch).
    pub fn has_state(&self) -> bool {
        self.vote_term > 0 || self.last_log_index.is_some()
    }

    /// Whether this branch leads.
    pub fn leads(&self) -> bool {
        self.leader == Some(self.id)
    }
}

type Metrics = openraft::RaftMetrics<BranchId, BasicNode>;

/// The cluster's membership as a branch knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Membership {
    /// Every member (voters and learners) and its current address.
    pub members: BTreeMap<BranchId, String>,
    pub voters: Vec<BranchId>,
}

fn view_of(metrics: &Metrics) -> RaftView {
    let membership = metrics.membership_config.membership();
    RaftView {
        id: metrics.id,
        role: match metrics.state {
            openraft::ServerState::Leader => Role::Leader,
            openraft::ServerState::Follower => Role::Follower,
            openraft::ServerState::Candidate => Role::Candidate,
            openraft::ServerState::Learner => Role::Learner,
            openraft::ServerState::Shutdown => Role::Shutdown,
        },
        current_term: metrics.current_term,
        vote_term: metrics.vote.leader_id().term,
        leader: metrics.current_leader,
        member: membership.nodes().any(|(&id, _)| id == metrics.id),
        last_log_index: metrics.last_log_index,
        applied_index: metrics.last_applied.map(|id| id.index),
        committed_index: committed_index(metrics),
        snapshot_index: metrics.snapshot.map(|id| id.index),
        purged_index: metrics.purged.map(|id| id.index),
    }
}

/// On the leader, the highest log index a majority of voters hold: what openraft's
/// replication metrics say each voter has matched (the leader's own entry is its flushed log),
/// sorted, and the majority-th from the top. `None` on any other branch.
fn committed_index(raft: &Metrics) -> Option<u64> {
    let replication = raft.replication.as_ref()?;
    let mut matched: Vec<Option<u64>> = raft
        .membership_config
        .membership()
        .voter_ids()
        .map(|voter| {
            replication
                .get(&voter)
                .and_then(|m| m.map(|id| id.index))
                .or(if voter == raft.id {
                    raft.last_log_index
                } else {
                    None
                })
        })
        .collect();
    if matched.is_empty() {
        return None;
    }
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched[matched.len() / 2]
}

impl Membership {
    /// Every member, in id order: its id, its address, and whether it votes.
    pub fn each(&self) -> impl Iterator<Item = (BranchId, &str, bool)> {
        self.members
            .iter()
            .map(|(&id, address)| (id, address.as_str(), self.voters.contains(&id)))
    }
}

/// Follows a branch's Raft state: [`RaftWatch::changed`] wakes on every change.
pub struct RaftWatch {
    metrics: tokio::sync::watch::Receiver<Metrics>,
}

impl RaftWatch {
    /// The state now, marked as seen.
    pub fn current(&mut self) -> RaftView {
        view_of(&self.metrics.borrow_and_update())
    }

    /// Waits for the next change; `Err(ShuttingDown)` once the Raft node has stopped.
    pub async fn changed(&mut self) -> Result<(), BranchError> {
        self.metrics
            .changed()
            .await
            .map_err(|_| BranchError::ShuttingDown)
    }
}

impl Branch {
    /// This branch's Raft state now.
    pub fn view(&self) -> RaftView {
        view_of(&self.replica.raft.metrics().borrow())
    }

    /// The cluster's membership as this branch knows it now, with every member's current
    /// address.
    pub fn membership(&self) -> Membership {
        let metrics = self.replica.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        Membership {
            members: membership
                .nodes()
                .map(|(&id, node)| (id, self.peers().address(id, node)))
                .collect(),
            voters: membership.voter_ids().collect(),
        }
    }

    /// The address of the leader this branch knows now (its own when it leads), as its peers
    /// reach it: what it tells customers, who send their writes there first.
    pub fn leader_address(&self) -> Option<String> {
        let metrics = self.replica.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some(self.peers().address(leader, node))
    }

    /// On the leader, how many entries branch `id` lacks of the leader's log (its whole log
    /// if the leader has no record of it); 0 on any other branch.
    pub(super) fn entries_behind(&self, id: BranchId) -> u64 {
        let metrics = self.replica.raft.metrics();
        let metrics = metrics.borrow();
        let Some(replication) = &metrics.replication else {
            return 0;
        };
        let last = metrics.last_log_index.unwrap_or(0);
        let matched = replication
            .get(&id)
            .and_then(|matched| matched.map(|log_id| log_id.index))
            .unwrap_or(0);
        last.saturating_sub(matched)
    }

    /// A watch on this branch's Raft state.
    pub fn watch(&self) -> RaftWatch {
        RaftWatch {
            metrics: self.replica.raft.metrics(),
        }
    }
}
