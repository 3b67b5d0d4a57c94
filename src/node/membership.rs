//! Membership: the first voters, learners added, voters promoted or removed, through the
//! leader (forwarded if this branch does not lead), or through the peers of a branch that
//! does not run yet (a rejoining one).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use tokio::time::Instant;

use super::{
    pause_before_retry, Branch, BranchError, WriteFailure, ATTEMPTS_MAX, REQUEST_DEADLINE,
};
use crate::raft::codec::{decode, encode_membership_change, MembershipChange};
use crate::raft::network::{within, PeerError, Peers};
use crate::raft::{BasicNode, NodeId};

/// Pause between rounds of asking peers for a membership change.
const PEERS_PAUSE: Duration = Duration::from_millis(200);

impl Branch {
    /// Makes this branch's Raft node the first of a new cluster whose voters are `voters`
    /// (id -> `host:port`). Only a branch with no Raft state may do this, and only one branch
    /// of a cluster.
    pub async fn initialize(&self, voters: &BTreeMap<NodeId, String>) -> Result<(), BranchError> {
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|(&id, addr)| (id, BasicNode::new(addr)))
            .collect();
        self.replica
            .raft
            .initialize(nodes)
            .await
            .map_err(BranchError::raft)
    }

    /// Waits until this branch knows a leader, at most until `deadline`; returns its id.
    pub async fn wait_for_leader(&self, deadline: Instant) -> Result<NodeId, BranchError> {
        self.replica.wait_for_leader(deadline).await
    }

    /// Waits until this branch's term has reached `term`, at most `timeout`. `Ok(false)`: not
    /// yet.
    pub async fn wait_for_term(&self, term: u64, timeout: Duration) -> Result<bool, BranchError> {
        let reached = self
            .replica
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.vote.leader_id().term >= term, "term reached")
            .await;
        match reached {
            Ok(_) => Ok(true),
            Err(openraft::metrics::WaitError::Timeout(..)) => Ok(false),
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(BranchError::ShuttingDown),
        }
    }

    /// Lets this branch stand for election (or stops it).
    pub fn set_elections(&self, enabled: bool) {
        self.replica.set_elections(enabled);
    }

    /// Applies a membership change through the leader (forwarded if this branch does not
    /// lead) and returns its log index. Retried while another change is in progress, bounded
    /// like a write. A change that is already in effect is harmless to repeat.
    pub async fn change_membership(
        &self,
        change: &MembershipChange,
        retain: bool,
    ) -> Result<u64, BranchError> {
        let replica = &self.replica;
        let changes = change.to_raft();
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let mut last_failure = WriteFailure::NoLeader;
        for attempt in 0..ATTEMPTS_MAX {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let changed = tokio::time::timeout(
                remaining,
                replica.raft.change_membership(changes.clone(), retain),
            )
            .await;
            let leader = match changed {
                Ok(Ok(response)) => return Ok(response.log_id.index),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => forward,
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(e),
                )))) => {
                    last_failure = WriteFailure::Refused(Arc::new(e));
                    pause_before_retry(attempt, deadline).await;
                    continue;
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                    return Err(BranchError::Membership(Arc::new(e)))
                }
                Ok(Err(RaftError::Fatal(_))) => return Err(BranchError::ShuttingDown),
                Err(_) => {
                    last_failure = WriteFailure::Deadline;
                    break;
                }
            };
            let Some(addr) = replica.leader_address(&leader) else {
                replica.wait_for_leader(deadline).await?;
                continue;
            };
            let forwarded = async {
                let mut client = replica.peers.client(&addr)?;
                let payload = encode_membership_change(change, retain)?;
                let mut request = tonic::Request::new(payload);
                let remaining = deadline.saturating_duration_since(Instant::now());
                request.set_timeout(remaining);
                let reply = within(remaining, client.change_membership(request)).await?;
                Ok::<u64, PeerError>(decode::<u64>(reply.get_ref())?)
            };
            match forwarded.await {
                Ok(index) => return Ok(index),
                Err(why) => {
                    tracing::debug!(
                        branch = replica.id,
                        attempt,
                        "membership change at {addr}: {why}"
                    );
                    last_failure = WriteFailure::Forward(Arc::new(why));
                    pause_before_retry(attempt, deadline).await;
                }
            }
        }
        Err(BranchError::OutcomeUnknown(last_failure))
    }
}

/// Asks the branches at `addresses`, in turn, for a membership change until the leader among
/// them makes it (the others refuse without changing anything). For a branch that is not
/// running yet (a rejoining one). Bounded by `deadline_after`; returns the change's log index,
/// or the refusals heard in the last round.
pub async fn change_membership_via_peers(
    peers: &Peers,
    addresses: &BTreeMap<NodeId, String>,
    change: &MembershipChange,
    retain: bool,
    deadline_after: Duration,
) -> Result<u64, MembershipRefused> {
    let payload = encode_membership_change(change, retain)
        .map_err(|e| MembershipRefused::Encode(Arc::new(e)))?;
    let deadline = Instant::now() + deadline_after;
    let mut refusals = Vec::new();
    while Instant::now() < deadline {
        refusals.clear();
        for addr in addresses.values() {
            let Ok(mut client) = peers.client(addr) else {
                continue;
            };
            let mut request = tonic::Request::new(payload.clone());
            let timeout = REQUEST_DEADLINE.min(deadline.saturating_duration_since(Instant::now()));
            request.set_timeout(timeout);
            match within(timeout, client.change_membership(request)).await {
                Ok(reply) => {
                    return decode::<u64>(reply.get_ref()).map_err(|e| MembershipRefused::Reply {
                        addr: addr.clone(),
                        error: Arc::new(e),
                    })
                }
                Err(error) => refusals.push(format!("{addr}: {}", error.message())),
            }
        }
        tokio::time::sleep(crate::retry::jittered(PEERS_PAUSE)).await;
    }
    Err(MembershipRefused::Refused {
        change: format!("{:?}", change.to_raft()),
        refusals: refusals.join("; "),
    })
}

/// Why no peer made a membership change.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MembershipRefused {
    #[error("encode a membership change: {0}")]
    Encode(Arc<crate::raft::codec::CodecError>),
    #[error("membership change reply from {addr}: {error}")]
    Reply {
        addr: String,
        error: Arc<crate::raft::codec::CodecError>,
    },
    #[error("no branch made the membership change {change}: {refusals}")]
    Refused { change: String, refusals: String },
}

/// The voters of a new cluster — the first [`crate::raft::VOTERS_MAX`] ids, ascending — and
/// the learners, from every branch (id -> address).
pub fn voters_and_learners(
    addresses: impl IntoIterator<Item = (NodeId, String)>,
) -> (BTreeMap<NodeId, String>, BTreeMap<NodeId, String>) {
    let mut voters: BTreeMap<NodeId, String> = addresses.into_iter().collect();
    let learner_ids: BTreeSet<NodeId> = voters
        .keys()
        .skip(crate::raft::VOTERS_MAX)
        .copied()
        .collect();
    let learners = learner_ids
        .into_iter()
        .filter_map(|id| voters.remove_entry(&id))
        .collect();
    (voters, learners)
}
