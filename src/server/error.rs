//! The one place errors become gRPC statuses: every service answers with a [`ServiceError`],
//! and `From<ServiceError> for Status` below is the only code in the crate that builds a
//! `tonic::Status`: whatever the error (the node's [`BranchError`], an [`AuthError`], a
//! malformed request), one function decides its code and says why in its message.

use tonic::{Code, Status};

use crate::node::{BranchError, MemberRefused};
use crate::BranchId;

/// Why a service refused or failed a call.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The branch could not serve it (no leader, not committed in time, shutting down, ...).
    #[error(transparent)]
    Branch(#[from] BranchError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The branch is at its bound of customer calls in flight (load shedding).
    #[error("branch {branch} is at its limit of {limit} customer requests in flight; retry later")]
    Overloaded { branch: BranchId, limit: usize },
    /// The request is malformed; the text says what to fix.
    #[error("{0}")]
    InvalidRequest(String),
    /// The original's peer-only interfaces, refused on the customer API.
    #[error("{0:?} is branch-to-branch traffic and is not accepted on the customer API; branches replicate through their own peer service")]
    PeerTrafficRefused(String),
    /// A balance beyond what the original API's int32 can carry.
    #[error("balance {0} does not fit the int32 wire format")]
    BalanceOutOfRange(i64),
    #[error("the bank is still starting: its account is not open yet; try again")]
    NotReady,
    /// Like an unknown outcome: the ledger no longer knows whether it was applied.
    #[error("the outcome of this request is unknown: its id left the ledger's window")]
    RequestIdExpired,
    /// The cluster removed this branch: it serves no customers any more.
    #[error("branch {branch} was removed from the cluster (by the membership entry at log index {log_index}) and no longer serves customers; use another branch")]
    Removed { branch: BranchId, log_index: u64 },
    /// A backup could not be encoded.
    #[error("the backup could not be made: {0}")]
    Backup(String),
    /// A ledger outcome the call cannot have: a bug, said as such.
    #[error("unexpected ledger outcome {0}")]
    UnexpectedOutcome(String),
}

/// Who may not call what (see [`super::auth`]).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the peer service needs a client certificate signed by the cluster's CA (--tls-cert and --tls-key)")]
    NoCertificate,
    #[error("this branch needs a bearer token: send `authorization: Bearer <token>` (bank: --token or BANK_TOKEN)")]
    NoToken,
    #[error("the authorization metadata is not `Bearer <token>`")]
    MalformedToken,
    #[error("unknown bearer token")]
    UnknownToken,
    #[error("token {name:?} may not touch account {accounts}; nothing was done")]
    Forbidden { name: String, accounts: String },
}

impl ServiceError {
    /// The gRPC code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            ServiceError::Branch(error) => branch_code(error),
            ServiceError::Auth(AuthError::Forbidden { .. }) => Code::PermissionDenied,
            ServiceError::Auth(_) => Code::Unauthenticated,
            ServiceError::Overloaded { .. } => Code::ResourceExhausted,
            ServiceError::InvalidRequest(_) => Code::InvalidArgument,
            ServiceError::PeerTrafficRefused(_) => Code::PermissionDenied,
            ServiceError::BalanceOutOfRange(_) => Code::OutOfRange,
            ServiceError::NotReady | ServiceError::RequestIdExpired => Code::Unavailable,
            ServiceError::UnexpectedOutcome(_) | ServiceError::Backup(_) => Code::Internal,
            ServiceError::Removed { .. } => Code::FailedPrecondition,
        }
    }
}

fn branch_code(error: &BranchError) -> Code {
    match error {
        BranchError::NoLeader(_)
        | BranchError::CatchUpTimeout(_)
        | BranchError::OutcomeUnknown(_)
        | BranchError::ShuttingDown
        | BranchError::MemberChangeNotMade { .. }
        | BranchError::Unavailable(_) => Code::Unavailable,
        BranchError::NotLeader(_) | BranchError::VoteRefused(_) => Code::FailedPrecondition,
        // Two changes at once: the caller may try again once the other has finished.
        BranchError::MemberRefused(MemberRefused::InProgress) => Code::Aborted,
        BranchError::MemberRefused(_) => Code::FailedPrecondition,
        BranchError::BadPayload(_) | BranchError::BadGroup(_) => Code::InvalidArgument,
        // Like an overloaded branch: nothing was done, and another branch may take it.
        BranchError::DiskFull { .. } => Code::ResourceExhausted,
        BranchError::Internal(_) => Code::Internal,
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_error_keeps_its_code_and_text() {
        let status = Status::from(ServiceError::from(BranchError::NoLeader(
            Duration::from_secs(10),
        )));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().starts_with("no leader could be reached"));
        let status = Status::from(ServiceError::from(BranchError::NotLeader(3)));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "branch 3 is not the leader");
        let status = Status::from(ServiceError::from(AuthError::Forbidden {
            name: "alice".to_string(),
            accounts: "7".to_string(),
        }));
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = Status::from(ServiceError::Overloaded {
            branch: 2,
            limit: 5,
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "branch 2 is at its limit of 5 customer requests in flight; retry later"
        );
    }
}
