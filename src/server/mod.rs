//! The gRPC services a branch serves, and the one place errors become gRPC statuses.
//!
//! - [`CustomerService`]: the original course API, `Branch.MsgDelivery` (`proto/banks.proto`).
//! - [`PeerService`]: branch-to-branch traffic (`bank.peer.v1.Peer`): openraft's RPCs, writes
//!   forwarded to the leader, and read indexes for follower reads.
//!
//! [`serve`] runs both on one listener until a shutdown signal, then drains in-flight calls;
//! with them `grpc.health.v1.Health` ([`crate::server::health`]) and server reflection (v1, v1alpha).
//! Every call is recorded in [`crate::server::metrics`] (refused ones too, under their status:
//! `unauthenticated`, `permission_denied`).
//!
//! [`serve_with`] adds [`Security`]: TLS on the listener ([`crate::tls`]), the peer service
//! closed to connections without a cluster certificate, and customer bearer tokens
//! ([`crate::server::auth`]).

pub mod accounts;
pub mod auth;
pub mod health;
pub mod metrics;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};
use tonic_reflection::server::v1alpha;

use crate::ledger::{Command, Outcome, Proposal, BATCH_ITEMS_MAX, ORIGINAL_ACCOUNT};
use crate::node::{Branch, BranchError, REQUEST_DEADLINE};
use crate::proto::customer::branch_server::BranchServer;
use crate::proto::customer::{Reply, Request as CustomerRequest};
use crate::proto::peer::peer_server::PeerServer;
use crate::proto::peer::{
    Member, RaftPayload, ReadIndexReply, ReadIndexRequest, StatusReply, StatusRequest,
};
use crate::proto::v1::accounts_server::AccountsServer;
use crate::raft::network::{decode, encode};
use crate::raft::{BasicNode, NodeId};
use crate::server::accounts::AccountsService;
use crate::server::auth::{PeerAuth, Tokens};

/// Server-side bound on any one call; inner waits are shorter ([`REQUEST_DEADLINE`]).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Bound on concurrent calls per connection.
const CONCURRENCY_PER_CONNECTION: usize = 256;

/// Largest message a branch accepts: Raft batches and snapshots are bounded well below it.
const MESSAGE_SIZE_MAX_BYTES: usize = 64 * 1024 * 1024;

impl From<BranchError> for Status {
    fn from(error: BranchError) -> Status {
        let message = error.to_string();
        match error {
            BranchError::NoLeader(_) | BranchError::CatchUpTimeout(_) => {
                Status::unavailable(message)
            }
            BranchError::OutcomeUnknown(_) => Status::unavailable(message),
            BranchError::ShuttingDown => Status::unavailable(message),
            BranchError::Membership(_) => Status::failed_precondition(message),
            BranchError::Internal(_) => Status::internal(message),
        }
    }
}

/// How a branch guards its port. The default: plaintext, no tokens (`bank run`, tests).
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// TLS on every connection; with it the peer service needs a cluster certificate.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// Bearer tokens the customer APIs require; none configured: open.
    pub tokens: Option<Arc<Tokens>>,
}

/// The original customer API.
pub struct CustomerService {
    branch: Branch,
    tokens: Option<Arc<Tokens>>,
    /// One permit per customer request in flight (see [`set_customer_requests_max`]).
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Default bound on customer requests in flight per branch: past it, a request is answered at
/// once with RESOURCE_EXHAUSTED instead of queueing behind the others (load shedding), so an
/// overloaded branch stays responsive and its memory bounded.
pub const CUSTOMER_REQUESTS_MAX_DEFAULT: usize = 1024;

static CUSTOMER_REQUESTS_MAX: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(CUSTOMER_REQUESTS_MAX_DEFAULT);

/// The bound in force: see [`set_customer_requests_max`].
pub fn customer_requests_max() -> usize {
    CUSTOMER_REQUESTS_MAX.load(std::sync::atomic::Ordering::Relaxed)
}

/// The answer to a customer call when branch `id` is at its bound of calls in flight.
pub(crate) fn overloaded(id: NodeId) -> Status {
    Status::resource_exhausted(format!(
        "branch {id} is at its limit of {} customer requests in flight; retry later",
        customer_requests_max()
    ))
}

/// Sets the bound on customer requests in flight for every branch this process serves from
/// now on (at least 1). A process-wide setting, like the metrics registry.
pub fn set_customer_requests_max(requests_max: usize) {
    CUSTOMER_REQUESTS_MAX.store(requests_max.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// What a customer asked for, validated.
enum CustomerOp {
    Deposit(u64),
    Withdraw(u64),
    Query,
}

fn parse_customer_request(request: &CustomerRequest) -> Result<CustomerOp, Status> {
    let interface = request.interface.to_ascii_lowercase();
    let amount = |verb: &str| {
        u64::try_from(request.money)
            .ok()
            .filter(|&money| money > 0)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{verb} needs money > 0, got {} (event id {})",
                    request.money, request.id
                ))
            })
    };
    match interface.as_str() {
        "deposit" => Ok(CustomerOp::Deposit(amount("deposit")?)),
        "withdraw" => Ok(CustomerOp::Withdraw(amount("withdraw")?)),
        "query" => Ok(CustomerOp::Query),
        "propagate_deposit" | "propagate_withdraw" => Err(Status::permission_denied(format!(
            "{:?} is branch-to-branch traffic and is not accepted on the customer API; \
             branches replicate through their own peer service",
            request.interface
        ))),
        _ => Err(Status::invalid_argument(format!(
            "unknown interface {:?} (event id {}); expected \"deposit\", \"withdraw\" or \"query\"",
            request.interface, request.id
        ))),
    }
}

/// A customer request's `interface` label in the metrics.
fn interface_label(request: &CustomerRequest) -> &'static str {
    match parse_customer_request(request) {
        Ok(CustomerOp::Deposit(_)) => "deposit",
        Ok(CustomerOp::Withdraw(_)) => "withdraw",
        Ok(CustomerOp::Query) => "query",
        Err(_) => "invalid",
    }
}

fn wire_balance(balance_minor_units: i64) -> Result<i32, Status> {
    i32::try_from(balance_minor_units).map_err(|_| {
        Status::out_of_range(format!(
            "balance {balance_minor_units} does not fit the int32 wire format"
        ))
    })
}

fn reply(
    interface: &str,
    success: bool,
    balance_minor_units: i64,
) -> Result<Response<Reply>, Status> {
    Ok(Response::new(Reply {
        interface: interface.to_string(),
        result: if success { "success" } else { "fail" }.to_string(),
        balance: wire_balance(balance_minor_units)?,
    }))
}

#[tonic::async_trait]
impl crate::proto::customer::branch_server::Branch for CustomerService {
    async fn msg_delivery(
        &self,
        request: Request<CustomerRequest>,
    ) -> Result<Response<Reply>, Status> {
        let started = std::time::Instant::now();
        // It acts on the one original account: a token must allow that account.
        if let Err(status) =
            crate::server::auth::authorize(self.tokens.as_deref(), &request, [ORIGINAL_ACCOUNT])
        {
            metrics::global().record_request(
                self.branch.id,
                interface_label(request.get_ref()),
                metrics::code_label(status.code()),
                started.elapsed(),
            );
            return Err(status);
        }
        let request = request.into_inner();
        // Held until the answer is ready; none left means the branch is at its bound.
        let permit = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| overloaded(self.branch.id));
        let answer = match permit {
            Ok(_permit) => self.deliver(&request).await,
            Err(status) => Err(status),
        };
        let interface = interface_label(&request);
        let outcome = match &answer {
            Ok(reply) if reply.get_ref().result == "success" => "success",
            Ok(_) => "fail",
            Err(status) => metrics::code_label(status.code()),
        };
        metrics::global().record_request(self.branch.id, interface, outcome, started.elapsed());
        answer
    }
}

impl CustomerService {
    async fn deliver(&self, request: &CustomerRequest) -> Result<Response<Reply>, Status> {
        let op = parse_customer_request(request)?;
        // Read-your-writes (the writeset) holds without waiting on it: every write was
        // acknowledged only once committed, and every query below is a read-index read, which
        // sees every write committed before it started.
        let (interface, command) = match op {
            CustomerOp::Query => {
                let balance = self
                    .branch
                    .read_balance(ORIGINAL_ACCOUNT)
                    .await?
                    .ok_or_else(not_ready)?;
                return reply("query", true, balance);
            }
            CustomerOp::Deposit(amount_minor_units) => (
                "deposit",
                Command::Deposit {
                    account: ORIGINAL_ACCOUNT,
                    amount_minor_units,
                },
            ),
            CustomerOp::Withdraw(amount_minor_units) => (
                "withdraw",
                Command::Withdraw {
                    account: ORIGINAL_ACCOUNT,
                    amount_minor_units,
                },
            ),
        };
        let (outcome, _log_index) = self.branch.submit(command).await?;
        match outcome {
            Outcome::Deposited {
                balance_minor_units,
            }
            | Outcome::Withdrawn {
                balance_minor_units,
            } => reply(interface, true, balance_minor_units),
            Outcome::InsufficientFunds {
                balance_minor_units,
            }
            | Outcome::BalanceLimitExceeded {
                balance_minor_units,
            } => reply(interface, false, balance_minor_units),
            Outcome::UnknownAccount { .. } => Err(not_ready()),
            // Like an unknown outcome: the ledger no longer knows whether it was applied.
            Outcome::RequestIdExpired => Err(Status::unavailable(
                "the outcome of this request is unknown: its id left the ledger's window",
            )),
            other => Err(Status::internal(format!(
                "unexpected ledger outcome {other:?}"
            ))),
        }
    }
}

fn not_ready() -> Status {
    Status::unavailable("the bank is still starting: its account is not open yet; try again")
}

/// Branch-to-branch traffic.
pub struct PeerService {
    branch: Branch,
}

impl PeerService {
    /// FAILED_PRECONDITION unless this branch leads: a forwarded write is proposed only by
    /// the leader, and otherwise not at all, so the sender may retry elsewhere.
    fn ensure_leading(&self) -> Result<(), Status> {
        if self.branch.leads() {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "branch {} is not the leader",
                self.branch.id
            )))
        }
    }
}

/// `submitted`'s answer, within [`REQUEST_DEADLINE`].
async fn within_deadline<T>(
    submitted: impl Future<Output = Result<T, BranchError>>,
) -> Result<T, Status> {
    match tokio::time::timeout(REQUEST_DEADLINE, submitted).await {
        Ok(answer) => answer.map_err(Status::from),
        Err(_) => Err(Status::unavailable(
            "write not committed before the deadline",
        )),
    }
}

fn bad_payload(e: serde_json::Error) -> Status {
    Status::invalid_argument(format!("payload does not decode: {e}"))
}

fn encoded<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    encode(value)
        .map(Response::new)
        .map_err(|e| Status::internal(format!("reply does not encode: {e}")))
}

#[tonic::async_trait]
impl crate::proto::peer::peer_server::Peer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request.get_ref()).map_err(bad_payload)?;
        encoded(&self.branch.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: openraft::raft::VoteRequest<NodeId> =
            decode(request.get_ref()).map_err(bad_payload)?;
        if let Some(why) = self.branch.vote_guard.refuses(rpc.vote.leader_id().term) {
            return Err(Status::failed_precondition(why));
        }
        encoded(&self.branch.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request.get_ref()).map_err(bad_payload)?;
        encoded(&self.branch.raft.install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let proposal: Proposal = decode(request.get_ref()).map_err(bad_payload)?;
        if !matches!(proposal.command, Command::Batch(_)) {
            // One proposal: into this leader's group committer, with everything else queued.
            self.ensure_leading()?;
            return encoded(&within_deadline(self.branch.submit_proposal(proposal)).await?);
        }
        let written =
            tokio::time::timeout(REQUEST_DEADLINE, self.branch.raft.client_write(proposal)).await;
        match written {
            Ok(Ok(response)) => encoded(&(response.data, response.log_id.index)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Err(
                Status::failed_precondition(format!("branch {} is not the leader", self.branch.id)),
            ),
            Ok(Err(e)) => Err(Status::unavailable(format!("write failed: {e}"))),
            Err(_) => Err(Status::unavailable(
                "write not committed before the deadline",
            )),
        }
    }

    async fn forward_group(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let items: Vec<Proposal> = decode(request.get_ref()).map_err(bad_payload)?;
        if items.is_empty() || items.len() > BATCH_ITEMS_MAX {
            return Err(Status::invalid_argument(format!(
                "a forwarded group holds 1 to {BATCH_ITEMS_MAX} proposals, not {}",
                items.len()
            )));
        }
        // A batch inside would make the ledger refuse the whole merged entry, everyone's.
        if items
            .iter()
            .any(|item| matches!(item.command, Command::Batch(_)))
        {
            return Err(Status::invalid_argument(
                "a forwarded group may not hold a batch",
            ));
        }
        self.ensure_leading()?;
        encoded(&within_deadline(self.branch.submit_group(items)).await?)
    }

    async fn read_index(
        &self,
        _request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        match tokio::time::timeout(REQUEST_DEADLINE, self.branch.raft.get_read_log_id()).await {
            Ok(Ok((read_log_id, _))) => Ok(Response::new(ReadIndexReply {
                index: read_log_id.map(|id| id.index),
            })),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => Err(
                Status::failed_precondition(format!("branch {} is not the leader", self.branch.id)),
            ),
            Ok(Err(e)) => Err(Status::unavailable(e.to_string())),
            Err(_) => Err(Status::unavailable("leadership not confirmed in time")),
        }
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let metrics = self.branch.raft.metrics().borrow().clone();
        let (applied_index, digest) = self
            .branch
            .state_machine
            .read(|state| {
                let applied = state.last_applied.map(|id| id.index);
                (applied, state.ledger.state_digest())
            })
            .ok_or_else(|| Status::internal("state machine lock poisoned"))?;
        let membership = metrics.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(&id, node)| Member {
                id,
                address: self.branch.peers.address(id, node),
                voter: voters.contains(&id),
            })
            .collect();
        Ok(Response::new(StatusReply {
            id: self.branch.id,
            has_state: has_state(&self.branch),
            leader: metrics.current_leader,
            term: metrics.vote.leader_id().term,
            voters,
            rejoining: self.branch.vote_guard.rejoining(),
            role: format!("{:?}", metrics.state).to_ascii_lowercase(),
            applied_index,
            last_log_index: metrics.last_log_index,
            digest,
            members,
        }))
    }

    async fn change_membership(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let (changes, retain): (ChangeMembers<NodeId, BasicNode>, bool) =
            decode(request.get_ref()).map_err(bad_payload)?;
        let changed = tokio::time::timeout(
            REQUEST_DEADLINE,
            self.branch.raft.change_membership(changes, retain),
        )
        .await;
        match changed {
            Ok(Ok(response)) => encoded(&response.log_id.index),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Err(
                Status::failed_precondition(format!("branch {} is not the leader", self.branch.id)),
            ),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(Status::failed_precondition(e.to_string()))
            }
            Ok(Err(e)) => Err(Status::unavailable(format!(
                "membership change failed: {e}"
            ))),
            Err(_) => Err(Status::unavailable(
                "membership change not committed before the deadline",
            )),
        }
    }
}

/// Whether a branch has Raft state: it has voted or holds a log. Read from openraft's metrics,
/// which reflect what it loaded from disk.
fn has_state(branch: &Branch) -> bool {
    let metrics = branch.raft.metrics();
    let metrics = metrics.borrow();
    metrics.vote.leader_id().term > 0 || metrics.last_log_index.is_some()
}

/// Serves the customer and peer services for `branch` on `listener` until `shutdown`
/// completes, then stops accepting and waits for in-flight calls to finish.
pub async fn serve(
    branch: Branch,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    serve_with(branch, listener, Security::default(), shutdown).await
}

/// [`serve`], guarded by `security`.
pub async fn serve_with(
    branch: Branch,
    listener: TcpListener,
    security: Security,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    use tokio_stream::StreamExt;
    // Small RPCs (votes, acknowledgements) must not wait for Nagle's algorithm.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY on an accepted connection: {e}");
            }
        })
    });
    serve_incoming_with(branch, incoming, security, shutdown).await
}

/// [`serve`] on connections from `incoming` rather than a TCP listener: the simulator
/// (`crate::sim`) serves turmoil's simulated TCP streams through it. The same services,
/// limits and drain on `shutdown`.
pub async fn serve_incoming<S, IO, IE>(
    branch: Branch,
    incoming: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    S: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_incoming_with(branch, incoming, Security::default(), shutdown).await
}

/// [`serve_incoming`], guarded by `security`. With TLS, every connection from `incoming` is
/// a TLS connection (tonic runs the handshake on the accepted streams), and the peer service
/// refuses calls whose connection presented no cluster certificate ([`PeerAuth`]).
pub async fn serve_incoming_with<S, IO, IE>(
    branch: Branch,
    incoming: S,
    security: Security,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    S: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Security { tls, tokens } = security;
    let mut builder = tonic::transport::Server::builder();
    let peer_auth = PeerAuth {
        required: tls.is_some(),
    };
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    // One bound for both customer APIs: a branch's calls in flight, whichever API they use.
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(customer_requests_max()));
    let customer = BranchServer::new(CustomerService {
        branch: branch.clone(),
        tokens: tokens.clone(),
        in_flight: in_flight.clone(),
    })
    .max_decoding_message_size(MESSAGE_SIZE_MAX_BYTES);
    let accounts = crate::server::accounts::AccountsService::new(branch.clone())
        .with_tokens(tokens)
        .with_in_flight(in_flight)
        .into_server();
    let id = branch.id;
    let (health, health_watch) = crate::server::health::start(
        &branch,
        &[
            <BranchServer<CustomerService> as NamedService>::NAME,
            <AccountsServer<AccountsService> as NamedService>::NAME,
            <PeerServer<PeerService> as NamedService>::NAME,
        ],
    )
    .await;
    // The one check of the peer service's callers, in front of every peer RPC.
    let peer = tonic::service::interceptor::InterceptedService::new(
        PeerServer::new(PeerService { branch })
            .max_decoding_message_size(MESSAGE_SIZE_MAX_BYTES)
            .max_encoding_message_size(MESSAGE_SIZE_MAX_BYTES),
        peer_auth,
    );
    let (reflection_v1, reflection_v1alpha) = reflection();
    let served = builder
        .timeout(CALL_TIMEOUT)
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .add_service(customer)
        .add_service(metrics::observed(id, accounts))
        .add_service(metrics::observed(id, peer))
        .add_service(health)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    health_watch.stop().await;
    served
}

/// gRPC server reflection (v1, and v1alpha for older tools) over every service a branch
/// serves, so `grpcurl -plaintext ADDR list` works. Not served if the descriptors do not
/// load, which would be a build bug: logged, and the branch serves without it.
fn reflection() -> (
    Option<ServerReflectionServer<impl ServerReflection>>,
    Option<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>>,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| tracing::error!("server reflection (v1) not served: {e}"))
        .ok();
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| tracing::error!("server reflection (v1alpha) not served: {e}"))
        .ok();
    (v1, v1alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(interface: &str, money: i32) -> CustomerRequest {
        CustomerRequest {
            id: 1,
            interface: interface.to_string(),
            money,
            writeset: vec![],
        }
    }

    #[test]
    fn malformed_requests_get_clear_statuses() {
        let code = |interface, money| {
            parse_customer_request(&request(interface, money))
                .err()
                .map(|s| s.code())
        };
        assert_eq!(code("deposit", 0), Some(tonic::Code::InvalidArgument));
        assert_eq!(code("withdraw", -5), Some(tonic::Code::InvalidArgument));
        assert_eq!(code("teleport", 5), Some(tonic::Code::InvalidArgument));
        assert_eq!(
            code("propagate_deposit", 5),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            code("propagate_withdraw", 5),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(code("deposit", 5), None);
        assert_eq!(code("QUERY", 0), None);
    }

    #[test]
    fn balances_beyond_int32_are_out_of_range_not_wrapped() {
        assert_eq!(wire_balance(i64::from(i32::MAX)).ok(), Some(i32::MAX));
        let refused = wire_balance(i64::from(i32::MAX) + 1)
            .err()
            .map(|s| s.code());
        assert_eq!(refused, Some(tonic::Code::OutOfRange));
    }
}
