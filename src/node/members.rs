//! The one membership API: every change to a running cluster's members is a [`MemberChange`],
//! checked and carried out by the leader, one at a time, and refused, if it is, with a typed
//! [`MemberRefused`] (which `crate::server::error` maps to a gRPC status). Operators
//! (`bank member`), joining branches (`bank branch --join`), rejoining ones (`--rejoin`) and
//! the bootstrap adding a new cluster's learners all ask for changes this way. (A new
//! cluster's first voters are not a change: `formation` sets them.)
//!
//! Any branch takes the request and hands it to the leader (over the peer service's
//! `ChangeMembers`): [`Branch::change_members`]. A branch that is not a member yet (a
//! rejoining one) asks its peers in turn instead: [`change_members_via_peers`]. The leader
//! holds its one membership lock while it checks and changes, so two requests can never both
//! pass a check that only one of them may pass (two promotions to a sixth voter, say); a
//! request that finds the lock taken, or openraft's own change still in progress, is refused
//! at once with [`MemberRefused::InProgress`] rather than queued.
//!
//! The checks: a voter is never added again as new (a branch that lost its data comes back
//! with `--rejoin`); at most [`crate::raft::VOTERS_MAX`] voters; a learner is promoted only
//! once it has nearly caught up; a voter is removed only if a majority of the voters that
//! remain answer now, so the cluster can still decide without it. A removed branch is told so
//! by the leader (`Retire`), since the log that removes it is no longer sent to it: it stops
//! serving customers and standing for election ([`Branch::removed`]). A branch forgotten to
//! rejoin ([`MemberChange::Forget`]) is neither checked nor told: it is the one asking.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{
    pause_before_retry, Branch, BranchError, Membership, Unavailable, WriteFailure, ATTEMPTS_MAX,
    REQUEST_DEADLINE,
};
use crate::proto::peer::{RetireRequest, StatusRequest};
use crate::raft::codec::{decode, encode};
use crate::raft::network::{within, PeerError, Peers};
use crate::raft::{BasicNode, NodeId, VOTERS_MAX};
use crate::BranchId;

/// Bound on asking one voter whether it is up, before removing another.
const UP_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Bound on telling a removed branch that it was removed.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// A learner this many entries or more behind the leader's log is not promoted: as a voter it
/// would hold up every commit until it caught up.
pub const PROMOTE_LAG_MAX: u64 = 1_000;

/// Pause between rounds of asking peers for a change ([`change_members_via_peers`]).
const PEERS_PAUSE: Duration = Duration::from_millis(200);

/// A change to the cluster's members, in an operator's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// Adds branch `id`, reached at `address`, as a learner; a learner already there at that
    /// address is left as it is.
    Add { id: BranchId, address: String },
    /// Makes learner `id` a voter.
    Promote { id: BranchId },
    /// Removes branch `id` (voter or learner) from the cluster for good: it is told so, and
    /// stops serving.
    Remove { id: BranchId },
    /// Drops branch `id`, which lost its data, from the membership so that it can be added
    /// back as a new learner (Raft refuses to see a member's log go backwards). Asked by that
    /// branch itself (`--rejoin`): it is not told it was removed, and nothing is checked; a
    /// branch that is not a member is left out all the same.
    Forget { id: BranchId },
}

impl std::fmt::Display for MemberChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemberChange::Add { id, address } => {
                write!(f, "add branch {id} at {address} as a learner")
            }
            MemberChange::Promote { id } => write!(f, "promote branch {id} to voter"),
            MemberChange::Remove { id } => write!(f, "remove branch {id}"),
            MemberChange::Forget { id } => write!(f, "forget branch {id} so that it can rejoin"),
        }
    }
}

/// Why the leader refused a [`MemberChange`]. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MemberRefused {
    #[error("branch {id} is already a voter")]
    AlreadyVoter { id: BranchId },
    #[error("branch {id} is already a member, at {recorded}, not {asked}; remove it first")]
    OtherAddress {
        id: BranchId,
        recorded: String,
        asked: String,
    },
    #[error("branch {id} is not a member of the cluster")]
    NotMember { id: BranchId },
    #[error(
        "the cluster already has {max} voters, the most it may have; branch {id} stays a learner"
    )]
    VotersFull { id: BranchId, max: usize },
    #[error("branch {id} is {behind} entries behind the leader; promote it once it has caught up (`bank status` shows its lag)")]
    Behind { id: BranchId, behind: u64 },
    #[error("branch {id} is the cluster's only voter; removing it would leave no branch to decide anything")]
    LastVoter { id: BranchId },
    #[error("removing branch {id} would leave voters {remaining:?}, of which only {up:?} answer now; a majority ({needed}) of them must be up. Bring the others back first")]
    Quorum {
        id: BranchId,
        remaining: Vec<BranchId>,
        up: Vec<BranchId>,
        needed: usize,
    },
    #[error("another membership change is in progress; try again once it has finished")]
    InProgress,
    /// openraft's own checks refused the change (they are the last word on what a membership
    /// may be).
    #[error("the Raft library refused the change: {why}")]
    Raft { why: String },
}

/// A branch's side of membership at runtime: the leader's one lock, and whether this branch
/// was removed.
#[derive(Debug, Default)]
pub(super) struct MemberState {
    /// Held by the leader while it checks and makes one change.
    lock: tokio::sync::Mutex<()>,
    /// 1 + the log index of the membership entry that removed this branch; 0: not removed.
    removed_at: AtomicU64,
    /// Woken when this branch learns it was removed.
    removal: tokio::sync::Notify,
}

/// A member change made: the log index of its membership entry, and the membership after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersChanged {
    pub log_index: u64,
    pub membership: Membership,
}

/// This branch was removed from the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// The log index of the membership entry that removed it.
    pub log_index: u64,
}

impl Branch {
    /// Carries out `change` through the leader (forwarded if this branch does not lead), and
    /// returns the log index of the membership entry that made it, with the membership after
    /// it as the leader knows it.
    pub async fn change_members(
        &self,
        change: &MemberChange,
    ) -> Result<MembersChanged, BranchError> {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let mut last_failure = WriteFailure::NoLeader;
        for attempt in 0..ATTEMPTS_MAX {
            if Instant::now() >= deadline {
                break;
            }
            if self.leads() {
                match self.change_members_here(change).await {
                    Err(BranchError::NotLeader(_)) => {
                        pause_before_retry(attempt, deadline).await;
                        continue;
                    }
                    done => return done,
                }
            }
            let leader = self.replica.wait_for_leader(deadline).await?;
            // This branch leads again (it did not a moment ago), or the leader's address is
            // not known yet: look again after a pause.
            let addr = (leader != self.id)
                .then(|| self.membership().members.get(&leader).cloned())
                .flatten();
            let Some(addr) = addr else {
                pause_before_retry(attempt, deadline).await;
                continue;
            };
            match self.forward_member_change(&addr, change, deadline).await {
                Ok(answer) => return answer.map_err(BranchError::MemberRefused),
                Err(why) => {
                    tracing::debug!(branch = self.id, attempt, "member change at {addr}: {why}");
                    last_failure = WriteFailure::Forward(Arc::new(why));
                    pause_before_retry(attempt, deadline).await;
                }
            }
        }
        Err(BranchError::OutcomeUnknown(last_failure))
    }

    /// Asks the leader at `addr` to make `change`.
    async fn forward_member_change(
        &self,
        addr: &str,
        change: &MemberChange,
        deadline: Instant,
    ) -> Result<Result<MembersChanged, MemberRefused>, PeerError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        ask_to_change(self.peers(), addr, change, remaining).await
    }

    /// A change another branch forwarded to this one, the leader: its log index, or why it
    /// was refused (a refusal is an answer, not a failure of the call).
    pub(super) async fn member_change_as_leader(
        &self,
        change: &MemberChange,
    ) -> Result<Result<MembersChanged, MemberRefused>, BranchError> {
        self.ensure_leading()?;
        match self.change_members_here(change).await {
            Ok(changed) => Ok(Ok(changed)),
            Err(BranchError::MemberRefused(why)) => Ok(Err(why)),
            Err(e) => Err(e),
        }
    }

    /// On the leader: checks `change` and makes it, one change at a time.
    async fn change_members_here(
        &self,
        change: &MemberChange,
    ) -> Result<MembersChanged, BranchError> {
        let Ok(_one_at_a_time) = self.members.lock.try_lock() else {
            return Err(BranchError::MemberRefused(MemberRefused::InProgress));
        };
        let membership = self.membership();
        let voter = |id: &BranchId| membership.voters.contains(id);
        let refused = |why| Err(BranchError::MemberRefused(why));
        let (raft_change, retire) = match change {
            MemberChange::Add { id, address } => {
                if voter(id) {
                    return refused(MemberRefused::AlreadyVoter { id: *id });
                }
                if let Some(recorded) = membership.members.get(id) {
                    if recorded != address {
                        return refused(MemberRefused::OtherAddress {
                            id: *id,
                            recorded: recorded.clone(),
                            asked: address.clone(),
                        });
                    }
                }
                let learner = BTreeMap::from([(*id, BasicNode::new(address))]);
                (ChangeMembers::AddNodes(learner), None)
            }
            MemberChange::Promote { id } => {
                if voter(id) {
                    return refused(MemberRefused::AlreadyVoter { id: *id });
                }
                if !membership.members.contains_key(id) {
                    return refused(MemberRefused::NotMember { id: *id });
                }
                if membership.voters.len() >= VOTERS_MAX {
                    return refused(MemberRefused::VotersFull {
                        id: *id,
                        max: VOTERS_MAX,
                    });
                }
                let behind = self.entries_behind(*id);
                if behind >= PROMOTE_LAG_MAX {
                    return refused(MemberRefused::Behind { id: *id, behind });
                }
                (ChangeMembers::AddVoterIds([*id].into()), None)
            }
            MemberChange::Remove { id } => {
                let Some(address) = membership.members.get(id).cloned() else {
                    return refused(MemberRefused::NotMember { id: *id });
                };
                if voter(id) {
                    let remaining: Vec<BranchId> = membership
                        .voters
                        .iter()
                        .copied()
                        .filter(|voter| voter != id)
                        .collect();
                    if remaining.is_empty() {
                        return refused(MemberRefused::LastVoter { id: *id });
                    }
                    let up = self.voters_up(&remaining, &membership.members).await;
                    let needed = remaining.len() / 2 + 1;
                    if up.len() < needed {
                        return refused(MemberRefused::Quorum {
                            id: *id,
                            remaining,
                            up,
                            needed,
                        });
                    }
                }
                (removal(voter(id), *id), Some((*id, address)))
            }
            MemberChange::Forget { id } => (removal(voter(id), *id), None),
        };
        let log_index = self.change_membership_here(raft_change).await?;
        if let Some((id, address)) = retire {
            self.retire(id, &address, log_index).await;
        }
        Ok(MembersChanged {
            log_index,
            membership: self.membership(),
        })
    }

    /// Makes one membership change now, on this branch if it leads: its log index. A voter
    /// the change removes is removed altogether, not kept as a learner.
    async fn change_membership_here(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
    ) -> Result<u64, BranchError> {
        let raft = &self.replica.raft;
        let changed =
            tokio::time::timeout(REQUEST_DEADLINE, raft.change_membership(change, false)).await;
        match changed {
            Ok(Ok(response)) => Ok(response.log_id.index),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(BranchError::NotLeader(self.id))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            )))) => Err(BranchError::MemberRefused(MemberRefused::InProgress)),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(BranchError::MemberRefused(MemberRefused::Raft {
                    why: e.to_string(),
                }))
            }
            Ok(Err(RaftError::Fatal(_))) => Err(BranchError::ShuttingDown),
            Err(_) => Err(BranchError::Unavailable(Unavailable::Deadline(
                "membership change not committed",
            ))),
        }
    }

    /// Which of `voters` answer a status call now (this branch always does).
    async fn voters_up(
        &self,
        voters: &[BranchId],
        members: &BTreeMap<BranchId, String>,
    ) -> Vec<BranchId> {
        let asked = voters.iter().map(|&voter| async move {
            if voter == self.id {
                return Some(voter);
            }
            let mut client = self.peers().client(members.get(&voter)?).ok()?;
            let mut request = tonic::Request::new(StatusRequest {});
            request.set_timeout(UP_CHECK_TIMEOUT);
            let answered = within(UP_CHECK_TIMEOUT, client.status(request)).await;
            answered.ok().map(|_| voter)
        });
        futures::future::join_all(asked)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Tells branch `id` at `address` that the entry at `log_index` removed it: best effort,
    /// bounded (a branch that is down is not told; see [`Branch::removed`]).
    async fn retire(&self, id: BranchId, address: &str, log_index: u64) {
        if id == self.id {
            self.mark_removed(log_index);
            return;
        }
        let told = async {
            let mut client = self.peers().client(address)?;
            let mut request = tonic::Request::new(RetireRequest { id, log_index });
            request.set_timeout(RETIRE_TIMEOUT);
            within(RETIRE_TIMEOUT, client.retire(request)).await?;
            Ok::<(), PeerError>(())
        };
        if let Err(e) = told.await {
            tracing::warn!(
                branch = self.id,
                "branch {id} was removed but could not be told so at {address}: {e}"
            );
        }
    }

    /// The leader's word that the entry at `log_index` removed this branch.
    pub fn answer_retire(&self, request: &RetireRequest) -> Result<(), BranchError> {
        if request.id != self.id {
            return Err(BranchError::MemberRefused(MemberRefused::NotMember {
                id: request.id,
            }));
        }
        self.mark_removed(request.log_index);
        Ok(())
    }

    /// Records that this branch was removed: it stops standing for election, and the servers
    /// stop serving its customers.
    fn mark_removed(&self, log_index: u64) {
        let first = self
            .members
            .removed_at
            .compare_exchange(
                0,
                log_index.saturating_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if first {
            self.members.removal.notify_waiters();
            self.set_elections(false);
            tracing::warn!(
                branch = self.id,
                "removed from the cluster by the membership entry at log index {log_index}: \
                 no longer serving customers. Stop this branch; to bring it back, start it \
                 with an empty data directory and --join"
            );
        }
    }

    /// Waits until this branch learns that it was removed from the cluster.
    pub async fn wait_removed(&self) -> Removed {
        loop {
            let removal = self.members.removal.notified();
            if let Some(removed) = self.removed() {
                return removed;
            }
            removal.await;
        }
    }

    /// Whether this branch was removed from the cluster (as the leader told it).
    pub fn removed(&self) -> Option<Removed> {
        match self.members.removed_at.load(Ordering::Acquire) {
            0 => None,
            marked => Some(Removed {
                log_index: marked - 1,
            }),
        }
    }
}

/// openraft's change that takes branch `id` out of the membership: as a voter (`voter`), or
/// as a learner.
fn removal(voter: bool, id: BranchId) -> ChangeMembers<NodeId, BasicNode> {
    if voter {
        ChangeMembers::RemoveVoters([id].into())
    } else {
        ChangeMembers::RemoveNodes([id].into())
    }
}

/// Asks the branch at `addr` (through `peers`), within `timeout`, to make `change` as the
/// leader: the change made, or the leader's refusal. A branch that does not lead answers
/// `NotLeader`, a failed call.
async fn ask_to_change(
    peers: &Peers,
    addr: &str,
    change: &MemberChange,
    timeout: Duration,
) -> Result<Result<MembersChanged, MemberRefused>, PeerError> {
    let mut client = peers.client(addr)?;
    let mut request = tonic::Request::new(encode(change)?);
    request.set_timeout(timeout);
    let reply = within(timeout, client.change_members(request)).await?;
    Ok(decode(reply.get_ref())?)
}

/// Asks the branches at `addresses`, in turn, to make `change` until the leader among them
/// makes it or refuses it (the others answer that they do not lead, and change nothing). For
/// a branch that is not a member yet, so knows no leader (a rejoining one). A change refused
/// as [`MemberRefused::InProgress`] is asked again; any other refusal is the answer. Bounded
/// by `deadline_after`.
pub async fn change_members_via_peers(
    peers: &Peers,
    addresses: &BTreeMap<BranchId, String>,
    change: &MemberChange,
    deadline_after: Duration,
) -> Result<MembersChanged, BranchError> {
    let deadline = Instant::now() + deadline_after;
    let mut answers = Vec::new();
    while Instant::now() < deadline {
        answers.clear();
        for addr in addresses.values() {
            let timeout = REQUEST_DEADLINE.min(deadline.saturating_duration_since(Instant::now()));
            match ask_to_change(peers, addr, change, timeout).await {
                Ok(Ok(changed)) => return Ok(changed),
                Ok(Err(why @ MemberRefused::InProgress)) => answers.push(format!("{addr}: {why}")),
                Ok(Err(why)) => return Err(BranchError::MemberRefused(why)),
                Err(PeerError::Call(status)) => {
                    answers.push(format!("{addr}: {}", status.message()))
                }
                Err(other) => answers.push(format!("{addr}: {other}")),
            }
        }
        tokio::time::sleep(crate::retry::jittered(PEERS_PAUSE)).await;
    }
    Err(BranchError::MemberChangeNotMade {
        change: change.clone(),
        answers: answers.join("; "),
    })
}
