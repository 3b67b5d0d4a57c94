//! The client edge's one error, [`ClientError`], and its one cause, [`Cause`]: what every
//! client in [`crate::client`] (accounts, course, status, members, backup) fails with.
//!
//! A variant says what happened: no usable address, no answer in time, a refusal, a write
//! whose outcome is unknown, a broken stream, a full queue. Its [`Cause`] says where and how:
//! the branch's address, the last gRPC status (code and message), and whether the failure
//! points at TLS on one end only ([`Cause::tls_mismatch`], read by type from the failure when
//! the cause is made, see [`TlsMismatch::of`]). What was asked ([`Asked`]) words the message
//! and its advice: a `bank.v1` write is named by its request id, a course call by its branch,
//! an operator's status call says which certificate it needs.

use std::fmt;
use std::time::Duration;

use tonic::{Code, Status};

use crate::ledger::RequestId;
use crate::rpc::{CallError, InvalidAddress, TlsMismatch};
use crate::BranchId;

/// What a failed call asked of the cluster: it decides how the error is worded, and what it
/// advises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// A `bank.v1` call that changes nothing (balances, a listing), retried at branch after
    /// branch.
    Read,
    /// A `bank.v1` write or batch under this request id, retried under it.
    Write(RequestId),
    /// One branch's backup (`bank.admin.v1.Backup`).
    Backup,
    /// One branch's view of the cluster (`bank status`: the peer service).
    Status,
    /// The membership, or a change to it (`bank.admin.v1.Members`).
    Members,
    /// One course-API call to this branch (`Branch.MsgDelivery`), never retried.
    Course(BranchId),
    /// Whether this course branch serves: a query repeated until a deadline.
    Serving(BranchId),
}

impl Asked {
    /// The write's request id, if a `bank.v1` write was asked.
    pub fn request_id(self) -> Option<RequestId> {
        match self {
            Asked::Write(request_id) => Some(request_id),
            _ => None,
        }
    }
}

/// Where and how a call failed: the cause inside every [`ClientError`] that involves a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The branch's address, as the caller gave it; empty for a failure inside this client
    /// that no branch had a part in (a batched write whose sender gave up).
    pub addr: String,
    /// The last gRPC status's code; for a failure that ended with no status, the code gRPC
    /// gives it (`Unavailable`: no connection; `DeadlineExceeded`: no answer in time;
    /// `DataLoss`: an answer that made no sense).
    pub code: Code,
    /// The status's message, or what went wrong in words.
    pub message: String,
    /// Whether `code` and `message` are a status the call ended with (the branch's, or the
    /// transport's), rather than this client's words.
    from_status: bool,
    /// What the failure says about TLS on one end only.
    tls_mismatch: Option<TlsMismatch>,
}

impl Cause {
    /// The status a call to `addr` ended with. `tls`: whether the channel used TLS (`None`:
    /// unknown, so nothing is said about TLS).
    pub fn status(addr: &str, status: &Status, tls: Option<bool>) -> Cause {
        Cause {
            addr: addr.to_string(),
            code: status.code(),
            message: status.message().to_string(),
            from_status: true,
            tls_mismatch: tls.and_then(|tls| TlsMismatch::of(status, tls)),
        }
    }

    /// A connection to `addr` that could not be opened (with TLS if `tls`).
    pub fn no_connection(addr: &str, error: &tonic::transport::Error, tls: bool) -> Cause {
        let source = std::error::Error::source(error).map_or(String::new(), |s| format!(": {s}"));
        Cause {
            addr: addr.to_string(),
            code: Code::Unavailable,
            message: format!("{error}{source}"),
            from_status: false,
            tls_mismatch: TlsMismatch::of(error, tls),
        }
    }

    /// No answer from `addr` within `waited`.
    pub fn no_answer(addr: &str, waited: Duration) -> Cause {
        Cause::new(
            addr,
            Code::DeadlineExceeded,
            format!("no answer within {waited:?}"),
        )
    }

    /// A call bounded by [`crate::rpc::within`] that failed (over plaintext unless `tls`).
    pub fn call(addr: &str, failure: &CallError, tls: bool) -> Cause {
        match failure {
            CallError::Status(status) => Cause::status(addr, status, Some(tls)),
            CallError::Timeout(waited) => Cause::no_answer(addr, *waited),
        }
    }

    /// `addr`, which no endpoint can be built for.
    pub fn bad_address(addr: &str, invalid: InvalidAddress) -> Cause {
        Cause::new(addr, Code::InvalidArgument, invalid.reason)
    }

    /// A failure at `addr` in this client's words (`message` says what `addr` did, e.g. "sent
    /// no page"), with the code gRPC gives it.
    pub fn new(addr: &str, code: Code, message: String) -> Cause {
        Cause {
            addr: addr.to_string(),
            code,
            message,
            from_status: false,
            tls_mismatch: None,
        }
    }

    /// Whether the failure points at TLS on one end only: read from the failure's error types
    /// when this cause was made (see [`TlsMismatch::of`]).
    pub fn tls_mismatch(&self) -> Option<TlsMismatch> {
        self.tls_mismatch
    }

    /// The status as `code: message` in words (`The service is currently unavailable: ...`),
    /// or the message alone when the call ended with no status.
    fn reason(&self) -> String {
        if self.from_status {
            format!("{}: {}", self.code, self.message)
        } else {
            self.message.clone()
        }
    }
}

impl fmt::Display for Cause {
    /// `addr: message (Code)`; the code only when the call ended with a status.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.addr.is_empty() {
            write!(f, "{}: ", self.addr)?;
        }
        f.write_str(&self.message)?;
        if self.from_status {
            write!(f, " ({:?})", self.code)?;
        }
        Ok(())
    }
}

/// Why a call to the cluster failed, for every client of the client edge.
#[derive(Debug, Clone)]
pub enum ClientError {
    /// No branch address was given.
    NoBranches,
    /// A course scenario names a branch that has no address.
    UnknownBranch(BranchId),
    /// An address no endpoint can be built for; nothing was sent.
    BadAddress { cause: Cause },
    /// No branch answered in time: connections failed, answers said "unavailable", or none
    /// came, until the deadline (or, for a call never retried, at its one attempt).
    Unreachable {
        asked: Asked,
        cause: Cause,
        deadline: Duration,
        attempts: u32,
    },
    /// A branch answered with an error this client does not retry (not allowed, malformed,
    /// not possible now): nothing was done.
    Refused { asked: Asked, cause: Cause },
    /// A write was sent, and no branch confirmed it within the deadline: it may or may not
    /// have been applied. A `bank.v1` write can be resent under its request id.
    OutcomeUnknown {
        asked: Asked,
        cause: Cause,
        deadline: Duration,
        attempts: u32,
    },
    /// Client-side batching's queue stayed full: the write was not sent, and nothing applied.
    QueueFull {
        request_id: RequestId,
        queued: usize,
        waited: Duration,
    },
    /// A streamed answer (a listing, a backup) broke off or did not make sense.
    Stream { what: &'static str, cause: Cause },
    /// A course branch answered a balance below zero, which the bank never holds.
    NegativeBalance { branch: BranchId, balance: i32 },
}

impl ClientError {
    /// Where and how the call failed, if a branch was involved.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            ClientError::BadAddress { cause }
            | ClientError::Unreachable { cause, .. }
            | ClientError::Refused { cause, .. }
            | ClientError::OutcomeUnknown { cause, .. }
            | ClientError::Stream { cause, .. } => Some(cause),
            ClientError::NoBranches
            | ClientError::UnknownBranch(_)
            | ClientError::QueueFull { .. }
            | ClientError::NegativeBalance { .. } => None,
        }
    }

    /// Whether the failure points at TLS on one end only (see [`Cause::tls_mismatch`]).
    pub fn tls_mismatch(&self) -> Option<TlsMismatch> {
        self.cause().and_then(Cause::tls_mismatch)
    }

    /// The request id of the `bank.v1` write that failed, if one did.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            ClientError::Unreachable { asked, .. }
            | ClientError::Refused { asked, .. }
            | ClientError::OutcomeUnknown { asked, .. } => asked.request_id(),
            ClientError::QueueFull { request_id, .. } => Some(*request_id),
            ClientError::NoBranches
            | ClientError::UnknownBranch(_)
            | ClientError::BadAddress { .. }
            | ClientError::Stream { .. }
            | ClientError::NegativeBalance { .. } => None,
        }
    }

    /// This error of a whole batch as the error of its write `request_id`: an unknown
    /// outcome, a refusal or a full queue names the write's own id.
    pub(super) fn for_request(&self, request_id: RequestId) -> ClientError {
        let mut error = self.clone();
        match &mut error {
            ClientError::OutcomeUnknown { asked, .. } | ClientError::Refused { asked, .. } => {
                *asked = Asked::Write(request_id)
            }
            ClientError::QueueFull { request_id: id, .. } => *id = request_id,
            ClientError::NoBranches
            | ClientError::UnknownBranch(_)
            | ClientError::BadAddress { .. }
            | ClientError::Unreachable { .. }
            | ClientError::Stream { .. }
            | ClientError::NegativeBalance { .. } => {}
        }
        error
    }
}

impl std::error::Error for ClientError {}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoBranches => f.write_str("no branch address given"),
            ClientError::UnknownBranch(branch) => {
                write!(
                    f,
                    "the scenario names branch {branch}, which has no address"
                )
            }
            ClientError::BadAddress { cause } => write!(
                f,
                "{:?} is not a valid branch address (expected HOST:PORT): {}",
                cause.addr, cause.message
            ),
            ClientError::Unreachable {
                asked,
                cause,
                deadline,
                attempts,
            } => unreachable(f, *asked, cause, *deadline, *attempts),
            ClientError::Refused { asked, cause } => refused(f, *asked, cause),
            ClientError::OutcomeUnknown {
                asked,
                cause,
                deadline,
                attempts,
            } => outcome_unknown(f, *asked, cause, *deadline, *attempts),
            ClientError::QueueFull {
                request_id,
                queued,
                waited,
            } => write!(
                f,
                "request {}:{} was not sent: {queued} writes of this client were already \
                 waiting for the one in flight, and no room came within {waited:?}; send fewer \
                 writes at once, or use more clients",
                request_id.origin, request_id.sequence
            ),
            ClientError::Stream { what, cause } if cause.from_status => {
                write!(f, "{what}: {cause}")
            }
            ClientError::Stream { what, cause } => {
                write!(f, "{what}: {} {}", cause.addr, cause.message)
            }
            ClientError::NegativeBalance { balance, .. } => {
                write!(f, "negative balance {balance} on the wire")
            }
        }
    }
}

/// [`ClientError::Unreachable`]: one branch named (an operator's call, a course branch), or
/// the cluster's branches tried in turn.
fn unreachable(
    f: &mut fmt::Formatter<'_>,
    asked: Asked,
    cause: &Cause,
    deadline: Duration,
    attempts: u32,
) -> fmt::Result {
    match asked {
        Asked::Status | Asked::Members => write!(
            f,
            "cannot reach the branch at {}: {} (is it running, and is that its --listen address?)",
            cause.addr,
            cause.reason()
        ),
        Asked::Course(branch) => write!(f, "branch {branch}: {:?}: {}", cause.code, cause.message),
        Asked::Serving(branch) => write!(
            f,
            "branch {branch} at {} did not answer within {deadline:?}: {}",
            cause.addr, cause.message
        ),
        Asked::Read | Asked::Write(_) | Asked::Backup => write!(
            f,
            "no branch answered within {deadline:?} after {attempts} attempts (last: {cause})"
        ),
    }
}

/// [`ClientError::Refused`]: the refusal, and the request it refused.
fn refused(f: &mut fmt::Formatter<'_>, asked: Asked, cause: &Cause) -> fmt::Result {
    let Cause {
        addr,
        code,
        message,
        ..
    } = cause;
    match asked {
        // The peer service refuses a connection without the cluster's certificate.
        Asked::Status => write!(
            f,
            "the branch at {addr} refused: {message} (on a TLS cluster give --tls-ca, and the \
             cluster's certificate as --tls-cert and --tls-key)"
        ),
        // The leader's refusals say what to do themselves.
        Asked::Members => f.write_str(message),
        Asked::Course(branch) | Asked::Serving(branch) => {
            write!(f, "branch {branch}: {code:?}: {message}")
        }
        Asked::Write(id) => write!(
            f,
            "branch {addr} refused request {}:{}: {message} ({code:?})",
            id.origin, id.sequence
        ),
        Asked::Read | Asked::Backup => {
            write!(f, "branch {addr} refused the request: {message} ({code:?})")
        }
    }
}

/// [`ClientError::OutcomeUnknown`]: what may have been done, and how to find out.
fn outcome_unknown(
    f: &mut fmt::Formatter<'_>,
    asked: Asked,
    cause: &Cause,
    deadline: Duration,
    attempts: u32,
) -> fmt::Result {
    match asked {
        Asked::Write(id) => write!(
            f,
            "the outcome of request {}:{} is unknown: no branch confirmed it within {deadline:?} \
             after {attempts} attempts (last: {cause}). It may or may not have been applied: \
             read the balances, or resend it with the same request id",
            id.origin, id.sequence
        ),
        Asked::Members => write!(
            f,
            "no answer from {} within {deadline:?}; the change may or may not have been made: \
             check with `bank member list`",
            cause.addr
        ),
        Asked::Read | Asked::Backup | Asked::Status | Asked::Course(_) | Asked::Serving(_) => {
            write!(
                f,
                "no branch confirmed the call within {deadline:?} after {attempts} attempts \
                 (last: {cause}); it may or may not have been carried out"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> RequestId {
        RequestId {
            origin: 7,
            sequence: 3,
        }
    }

    /// The words each client's errors have always had, now from one type.
    #[test]
    fn each_call_keeps_its_words() {
        let refused = Cause::status(
            "127.0.0.1:1",
            &Status::new(Code::FailedPrecondition, "branch 2 is already a voter"),
            Some(false),
        );
        let write = ClientError::Refused {
            asked: Asked::Write(id()),
            cause: refused.clone(),
        };
        assert_eq!(
            write.to_string(),
            "branch 127.0.0.1:1 refused request 7:3: branch 2 is already a voter (FailedPrecondition)"
        );
        let members = ClientError::Refused {
            asked: Asked::Members,
            cause: refused.clone(),
        };
        assert_eq!(members.to_string(), "branch 2 is already a voter");
        let course = ClientError::Refused {
            asked: Asked::Course(4),
            cause: refused,
        };
        assert_eq!(
            course.to_string(),
            "branch 4: FailedPrecondition: branch 2 is already a voter"
        );
        let unknown = ClientError::OutcomeUnknown {
            asked: Asked::Write(id()),
            cause: Cause::no_answer("127.0.0.1:1", Duration::from_secs(4)),
            deadline: Duration::from_secs(10),
            attempts: 3,
        };
        assert!(unknown
            .to_string()
            .contains("no branch confirmed it within 10s after 3 attempts (last: 127.0.0.1:1: no answer within 4s)"));
        assert_eq!(unknown.request_id(), Some(id()));
        let status = ClientError::Unreachable {
            asked: Asked::Status,
            cause: Cause::status(
                "127.0.0.1:1",
                &Status::new(Code::Unavailable, "gone"),
                Some(false),
            ),
            deadline: Duration::from_secs(3),
            attempts: 1,
        };
        assert_eq!(
            status.to_string(),
            "cannot reach the branch at 127.0.0.1:1: The service is currently unavailable: gone \
             (is it running, and is that its --listen address?)"
        );
        let stream = ClientError::Stream {
            what: "the account listing",
            cause: Cause::new("127.0.0.1:1", Code::DataLoss, "sent no page".to_string()),
        };
        assert_eq!(
            stream.to_string(),
            "the account listing: 127.0.0.1:1 sent no page"
        );
    }

    /// A batch's error, given to one of its writes, names that write.
    #[test]
    fn a_batch_error_names_each_write() {
        let batch = ClientError::Refused {
            asked: Asked::Write(id()),
            cause: Cause::new("a", Code::InvalidArgument, "no".to_string()),
        };
        let own = RequestId {
            origin: 7,
            sequence: 9,
        };
        assert_eq!(batch.for_request(own).request_id(), Some(own));
        let status = Status::new(Code::Internal, "h2 protocol error: InvalidContentType");
        assert_eq!(
            Cause::status("a", &status, Some(false)).tls_mismatch(),
            None,
            "only error types, never text, point at TLS"
        );
    }
}
