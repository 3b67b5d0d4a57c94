//! The node's one error type: why a branch could not serve a request. The server maps it to
//! gRPC statuses in one place (`crate::server::error`).

use std::sync::Arc;
use std::time::Duration;

use crate::raft::network::PeerError;
use crate::raft::NodeId;

/// Why a branch could not serve a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BranchError {
    #[error("no leader could be reached within {0:?}; the cluster may be electing or lack a quorum, try again")]
    NoLeader(Duration),
    #[error("the write was not confirmed in time and may or may not have been applied ({0}); query the balance before retrying")]
    OutcomeUnknown(WriteFailure),
    #[error("this branch could not catch up with the leader within {0:?}")]
    CatchUpTimeout(Duration),
    /// The leader refused a member change (see [`super::MemberChange`]); nothing changed.
    #[error("{0}")]
    MemberRefused(#[from] super::MemberRefused),
    /// None of the branches asked made a member change: none of them led, or answered
    /// ([`super::change_members_via_peers`]).
    #[error("no branch made the membership change ({change}): {answers}")]
    MemberChangeNotMade {
        change: super::MemberChange,
        answers: String,
    },
    /// A call that only the leader serves (a forwarded write, a read index, a membership
    /// change) reached a branch that does not lead: the caller retries elsewhere.
    #[error("branch {0} is not the leader")]
    NotLeader(NodeId),
    /// A peer sent a payload that does not decode.
    #[error("payload does not decode: {0}")]
    BadPayload(Arc<crate::raft::codec::CodecError>),
    /// A forwarded group that breaks the rules of one (size, no batch inside).
    #[error("{0}")]
    BadGroup(BadGroup),
    /// The vote guard refused a vote (see [`super::VoteGuard`]).
    #[error(transparent)]
    VoteRefused(#[from] super::VoteRefused),
    /// The branch's disk is low on space: it takes no new writes until space is freed.
    #[error("branch {branch} takes no writes now: {why}. It still serves reads; write through another branch, or free space on its disk")]
    DiskFull { branch: NodeId, why: String },
    #[error("this branch is shutting down")]
    ShuttingDown,
    /// A call the leader could not complete now; the caller may retry.
    #[error("{0}")]
    Unavailable(Unavailable),
    #[error("internal error: {0}")]
    Internal(Internal),
}

/// Why the leader could not complete a peer's call now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("{0} before the deadline")]
    Deadline(&'static str),
    #[error("leadership not confirmed in time")]
    LeadershipUnconfirmed,
    #[error("write failed: {0}")]
    Write(Arc<dyn std::error::Error + Send + Sync>),
    #[error("{0}")]
    ReadIndex(Arc<dyn std::error::Error + Send + Sync>),
}

/// Why the last attempt of a write failed, when the write's outcome is unknown.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteFailure {
    #[error("no leader")]
    NoLeader,
    #[error("not committed before the deadline")]
    Deadline,
    #[error("{0}")]
    Forward(Arc<PeerError>),
    #[error("{0}")]
    Refused(Arc<dyn std::error::Error + Send + Sync>),
}

/// A forwarded group that breaks the rules.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BadGroup {
    #[error("a forwarded group holds 1 to {max} proposals, not {len}")]
    Size { len: usize, max: usize },
    #[error("a forwarded group may not hold a batch")]
    NestedBatch,
}

/// A bug or a broken local resource, said as such.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Internal {
    #[error("the group committer answered {0} outcomes for one proposal")]
    GroupAnswer(usize),
    #[error("group commit of {count} proposals answered {outcome}")]
    GroupOutcome { count: usize, outcome: String },
    #[error("the group-commit queue stayed full for the whole request deadline")]
    QueueFull,
    #[error("state machine lock poisoned")]
    Poisoned,
    #[error("{0}")]
    Raft(Arc<dyn std::error::Error + Send + Sync>),
    #[error("a reply does not encode: {0}")]
    Encode(Arc<crate::raft::codec::CodecError>),
}

impl BranchError {
    pub(crate) fn raft(error: impl std::error::Error + Send + Sync + 'static) -> BranchError {
        BranchError::Internal(Internal::Raft(Arc::new(error)))
    }
}
