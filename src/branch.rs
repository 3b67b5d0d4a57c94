//! A branch: one replica of the ledger, and the one place that turns customer operations into
//! Raft proposals and linearizable reads.
//!
//! - Writes: proposed to openraft. If this branch is not the leader, the command is forwarded
//!   to the leader over the peer service; customers never see leadership. A write is retried
//!   only when it is certain it was not proposed (the receiver said "not leader"); when the
//!   outcome is unknown (a timeout), the customer is told so rather than risk applying a
//!   deposit twice — the original API has no request ids to make a retry safe.
//! - Reads: read-index reads. The leader's read index (confirmed by a quorum heartbeat) is
//!   fetched, locally if this branch leads and over the peer service otherwise; then the read
//!   waits until this branch has applied up to it and is served from the local replica. So a
//!   query at any branch, learners included, is both local and linearizable.
//! - Every wait is bounded by [`REQUEST_DEADLINE`].

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use tokio::time::Instant;

use crate::ledger::{AccountId, Command, Outcome};
use crate::proto::peer::ReadIndexRequest;
use crate::replication::network::{decode, encode, PeerError, Peers};
use crate::replication::store::StateMachineStore;
use crate::replication::{BasicNode, NodeId, Raft};

/// How long one customer request may wait for a leader, replication and apply.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// At most this many forwarding attempts per write (leader changes while it is in flight).
const FORWARD_ATTEMPTS_MAX: u32 = 8;

/// Why a branch could not serve a request. Mapped to gRPC statuses in one place,
/// [`crate::service`].
#[derive(Debug, thiserror::Error)]
pub enum BranchError {
    #[error("no leader could be reached within {0:?}; the cluster may be electing or lack a quorum, try again")]
    NoLeader(Duration),
    #[error("the write may or may not have been applied ({0}); query the balance before retrying")]
    OutcomeUnknown(String),
    #[error("this branch could not catch up with the leader within {0:?}")]
    CatchUpTimeout(Duration),
    #[error("this branch is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

/// Handles to one branch's replica. Cheap to clone.
#[derive(Clone)]
pub struct Branch {
    pub id: NodeId,
    pub raft: Raft,
    pub state_machine: StateMachineStore,
    pub peers: Peers,
}

impl Branch {
    /// Proposes `command` through the leader and returns its replicated outcome and log index.
    pub async fn submit(&self, command: Command) -> Result<(Outcome, u64), BranchError> {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        for _attempt in 0..FORWARD_ATTEMPTS_MAX {
            let leader = match self.raft.client_write(command.clone()).await {
                Ok(response) => return Ok((response.data, response.log_id.index)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => forward,
                Err(RaftError::APIError(e)) => return Err(BranchError::Internal(e.to_string())),
                Err(RaftError::Fatal(_)) => return Err(BranchError::ShuttingDown),
            };
            if let Some(node) = leader_node(&leader) {
                match self.forward(&node.addr, &command, deadline).await {
                    Ok(result) => return Ok(result),
                    // Not the leader any more: nothing was proposed, so trying again is safe.
                    Err(ForwardFailure::NotProposed) => {}
                    Err(ForwardFailure::Unknown(why)) => {
                        return Err(BranchError::OutcomeUnknown(why))
                    }
                }
            }
            self.wait_for_leader_change(leader.leader_id, deadline)
                .await?;
        }
        Err(BranchError::NoLeader(REQUEST_DEADLINE))
    }

    /// Sends `command` to the leader at `addr`, which proposes it only if it still leads.
    async fn forward(
        &self,
        addr: &str,
        command: &Command,
        deadline: Instant,
    ) -> Result<(Outcome, u64), ForwardFailure> {
        let mut client = self
            .peers
            .client(addr)
            .map_err(|e| ForwardFailure::Unknown(e.to_string()))?;
        let payload = encode(command).map_err(|e| ForwardFailure::Unknown(e.to_string()))?;
        let mut request = tonic::Request::new(payload);
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        match client.forward(request).await {
            Ok(reply) => {
                decode(reply.get_ref()).map_err(|e| ForwardFailure::Unknown(e.to_string()))
            }
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                Err(ForwardFailure::NotProposed)
            }
            Err(status) => Err(ForwardFailure::Unknown(PeerError::Call(status).to_string())),
        }
    }

    /// Waits until this branch knows a leader other than `stale` (or any leader if `None`).
    async fn wait_for_leader_change(
        &self,
        stale: Option<NodeId>,
        deadline: Instant,
    ) -> Result<(), BranchError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let waited = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader.is_some() && m.current_leader != stale,
                "a new leader",
            )
            .await;
        match waited {
            Ok(_) => Ok(()),
            // The same leader may still be there (e.g. it was briefly unreachable): one more
            // attempt is allowed only while time remains.
            Err(openraft::metrics::WaitError::Timeout(..)) => {
                Err(BranchError::NoLeader(REQUEST_DEADLINE))
            }
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(BranchError::ShuttingDown),
        }
    }

    /// The leader's read index: a log index such that every write acknowledged before this
    /// call started is at or below it.
    pub async fn read_index(&self, deadline: Instant) -> Result<Option<u64>, BranchError> {
        for _attempt in 0..FORWARD_ATTEMPTS_MAX {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let leader = match tokio::time::timeout(timeout, self.raft.get_read_log_id()).await {
                Err(_) => return Err(BranchError::NoLeader(REQUEST_DEADLINE)),
                Ok(Ok((read_log_id, _applied))) => return Ok(read_log_id.map(|id| id.index)),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                    forward
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                    tracing::debug!(branch = self.id, "read index: {e}");
                    ForwardToLeader::empty()
                }
                Ok(Err(RaftError::Fatal(_))) => return Err(BranchError::ShuttingDown),
            };
            if let Some(node) = leader_node(&leader) {
                if let Ok(mut client) = self.peers.client(&node.addr) {
                    let mut request = tonic::Request::new(ReadIndexRequest {});
                    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
                    match client.read_index(request).await {
                        Ok(reply) => return Ok(reply.get_ref().index),
                        Err(status) => {
                            tracing::debug!(branch = self.id, "read index from leader: {status}")
                        }
                    }
                }
            }
            self.wait_for_leader_change(leader.leader_id, deadline)
                .await?;
        }
        Err(BranchError::NoLeader(REQUEST_DEADLINE))
    }

    /// A linearizable read of one account's balance, served from this branch's replica.
    pub async fn read_balance(&self, account: AccountId) -> Result<Option<u64>, BranchError> {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let read_index = self.read_index(deadline).await?;
        self.wait_applied(read_index, deadline).await?;
        self.state_machine
            .read(|state| state.ledger.balance(account))
            .ok_or_else(|| BranchError::Internal("state machine lock poisoned".to_string()))
    }

    /// Waits until this branch has applied the log up to `index`.
    pub async fn wait_applied(
        &self,
        index: Option<u64>,
        deadline: Instant,
    ) -> Result<(), BranchError> {
        let Some(index) = index else { return Ok(()) };
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "read index applied")
            .await
        {
            Ok(_) => Ok(()),
            Err(openraft::metrics::WaitError::Timeout(..)) => {
                Err(BranchError::CatchUpTimeout(REQUEST_DEADLINE))
            }
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(BranchError::ShuttingDown),
        }
    }
}

enum ForwardFailure {
    NotProposed,
    Unknown(String),
}

fn leader_node(forward: &ForwardToLeader<NodeId, BasicNode>) -> Option<BasicNode> {
    forward.leader_node.clone()
}
