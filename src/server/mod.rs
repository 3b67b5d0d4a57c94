//! The server layer: the gRPC services a branch serves, on one listener, until a shutdown
//! signal, then drained.
//!
//! - [`course`]: the original course API, `Branch.MsgDelivery` (`proto/banks.proto`).
//! - [`accounts`]: the bank's own `bank.v1.Accounts`.
//! - [`peer`]: branch-to-branch traffic (`bank.peer.v1.Peer`).
//! - [`members`]: membership at runtime, for operators (`bank.admin.v1.Members`).
//! - [`backup`]: an operator's consistent backup of a live branch (`bank.admin.v1.Backup`),
//!   guarded like the peer service.
//! - [`health`]: `grpc.health.v1.Health`, from the branch's Raft state; server reflection.
//! - [`auth`]: who may call what (cluster certificates for peers, bearer tokens for customers).
//! - [`admission`]: the bound on customer calls in flight, shared by both customer APIs.
//! - [`metrics`]: every call counted and timed (served over HTTP by [`crate::web`]).
//! - [`error`]: the one place errors become gRPC statuses.
//!
//! [`serve`] takes a bound listener, [`serve_incoming`] any stream of connections (the
//! simulator's); both take a [`ServerConfig`] and a shutdown future, like mini-redis's server.

pub mod accounts;
pub mod admission;
pub mod auth;
pub mod backup;
pub mod course;
pub mod error;
pub mod health;
pub mod members;
pub mod metrics;
pub mod peer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};
use tonic_reflection::server::v1alpha;

use crate::node::Branch;
use crate::proto::admin::members_server::MembersServer;
use crate::proto::customer::branch_server::BranchServer;
use crate::proto::peer::peer_server::PeerServer;
use crate::proto::v1::accounts_server::AccountsServer;
use accounts::AccountsService;
pub use admission::{Admission, CUSTOMER_REQUESTS_MAX_DEFAULT};
use auth::{PeerAuth, Tokens};
use course::CustomerService;
use members::MembersService;
use peer::PeerService;

/// Server-side bound on any one call; inner waits are shorter
/// ([`crate::node::REQUEST_DEADLINE`]).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Bound on concurrent calls per connection.
const CONCURRENCY_PER_CONNECTION: usize = 256;

/// Largest message a branch accepts: Raft batches and snapshots are bounded well below it.
const MESSAGE_SIZE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// How a branch serves. The default: plaintext, no tokens, the default bound on calls in
/// flight (`bank run`, tests).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TLS on every connection; with it the peer service needs a cluster certificate.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// Bearer tokens the customer APIs require; none configured: open.
    pub tokens: Option<Arc<Tokens>>,
    /// Customer calls in flight at most, over both customer APIs (see [`admission`]).
    pub requests_max: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tls: None,
            tokens: None,
            requests_max: CUSTOMER_REQUESTS_MAX_DEFAULT,
        }
    }
}

/// Serves every service of `branch` on `listener` until `shutdown` completes, then stops
/// accepting and waits for in-flight calls to finish.
pub async fn serve(
    branch: Branch,
    listener: TcpListener,
    config: ServerConfig,
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
    serve_incoming(branch, incoming, config, shutdown).await
}

/// [`serve`] on connections from `incoming` rather than a TCP listener: the simulator serves
/// turmoil's simulated TCP streams through it. The same services, limits and drain. With
/// TLS, every connection from `incoming` is a TLS connection (tonic runs the handshake on the
/// accepted streams), and the peer service refuses calls whose connection presented no
/// cluster certificate ([`PeerAuth`]).
pub async fn serve_incoming<S, IO, IE>(
    branch: Branch,
    incoming: S,
    config: ServerConfig,
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
    let ServerConfig {
        tls,
        tokens,
        requests_max,
    } = config;
    let mut builder = tonic::transport::Server::builder();
    let peer_auth = PeerAuth {
        required: tls.is_some(),
    };
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    // One bound for both customer APIs: a branch's calls in flight, whichever API they use.
    let admission = Admission::new(branch.clone(), requests_max);
    let customer = BranchServer::new(CustomerService {
        branch: branch.clone(),
        tokens: tokens.clone(),
        admission: admission.clone(),
    })
    .max_decoding_message_size(MESSAGE_SIZE_MAX_BYTES);
    let accounts = AccountsService::new(branch.clone(), admission, tokens).into_server();
    let id = branch.id;
    // Operators only, checked like the peer service.
    let backup = tonic::service::interceptor::InterceptedService::new(
        backup::BackupService::new(branch.clone()).into_server(),
        peer_auth,
    );
    let (health, health_watch) = health::start(
        &branch,
        &[
            <BranchServer<CustomerService> as NamedService>::NAME,
            <AccountsServer<AccountsService> as NamedService>::NAME,
            <PeerServer<PeerService> as NamedService>::NAME,
        ],
    )
    .await;
    // Operators are checked as peers are: the cluster's certificate under TLS.
    let members = tonic::service::interceptor::InterceptedService::new(
        MembersServer::new(MembersService {
            branch: branch.clone(),
        }),
        peer_auth,
    );
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
        .add_service(metrics::observed(id, members))
        .add_service(metrics::observed(id, backup))
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
