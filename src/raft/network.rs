//! The peer network: openraft's RPCs over the `bank.peer.v1.Peer` gRPC service.
//!
//! Each Raft message is openraft's own serde type, carried in a `RaftPayload` ([`super::codec`]);
//! the reply carries the receiver's whole `Result`, so a Raft-level refusal (a higher vote, say)
//! comes back as openraft's `RemoteError` and a transport failure as `Unreachable`/`Network`.
//!
//! [`Peers`] caches one lazily-connected tonic `Channel` per peer (channels multiplex many
//! calls over one HTTP/2 connection and reconnect by themselves); every call has a deadline.
//! With TLS ([`Peers::with_tls`]) every channel is `https`, trusts only the cluster's CA and
//! presents the branch's certificate: mutual TLS (see [`crate::tls`]). How a channel reaches
//! its host is a [`Connector`]: real TCP, or whatever a caller injects (the simulator's
//! simulated network).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::EntryPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::codec::{decode, encode, encoded_len, CodecError};
use super::{BasicNode, NodeId, TypeConfig, PEER_RPC_TIMEOUT};
use crate::lamport::{to_wire, Hop, LamportClock};
use crate::proto::peer::peer_client::PeerClient;
use crate::proto::peer::RaftPayload;
use crate::rpc::{endpoint, EndpointConfig, InvalidAddress};
pub use crate::rpc::{within, CallError};

/// HTTP/2 pings on every peer connection, and how long an unanswered one may take.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// An `AppendEntries` carries at most this many bytes of encoded entries, unless a single
/// entry is larger (it then goes alone). openraft bounds a call by entries
/// (`max_payload_entries`) and gives it one heartbeat interval; a follower far behind would
/// otherwise be sent hundreds of full batch entries in one call that can never finish in time
/// (or pass the peer server's message limit), retried whole forever. Oversized, the call is
/// refused here with openraft's `PayloadTooLarge` and a hint of how many entries fit, and
/// openraft sends fewer.
pub const APPEND_ENTRIES_BYTES_MAX: usize = 1024 * 1024;

/// How long to wait for a TCP connection to a peer before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Turns an endpoint into a lazily connected channel: how a branch reaches its peers.
pub trait Connector: std::fmt::Debug + Send + Sync + 'static {
    fn connect_lazy(&self, endpoint: Endpoint) -> Channel;
}

/// Real TCP sockets: production and the process tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

impl Connector for Tcp {
    fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        endpoint.connect_lazy()
    }
}

/// An error reaching a peer: the address is malformed, or the call failed on the wire.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer address {addr:?} cannot be used: {cause}")]
    BadAddress { addr: String, cause: InvalidAddress },
    #[error("peer call failed: {0}")]
    Call(tonic::Status),
    #[error("peer call failed: no answer within {0:?}")]
    Timeout(Duration),
    #[error("peer sent a reply that does not decode: {0}")]
    Decode(CodecError),
    #[error("the leader answered {answered} outcomes for {proposals} proposals")]
    OutcomeCount { answered: usize, proposals: usize },
}

// By hand, not `#[from]`: the message already shows the cause, so it is not also the error's
// `source()` (an `{:#}` chain would print it twice).
impl From<tonic::Status> for PeerError {
    fn from(status: tonic::Status) -> Self {
        PeerError::Call(status)
    }
}

impl From<CodecError> for PeerError {
    fn from(error: CodecError) -> Self {
        PeerError::Decode(error)
    }
}

impl From<CallError> for PeerError {
    fn from(error: CallError) -> PeerError {
        match error {
            CallError::Status(status) => PeerError::Call(status),
            CallError::Timeout(timeout) => PeerError::Timeout(timeout),
        }
    }
}

impl PeerError {
    /// The gRPC status code the peer answered with, if it answered at all.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            PeerError::Call(status) => Some(status.code()),
            _ => None,
        }
    }
}

/// One cached gRPC channel per peer address, and the current address of each peer. Cheap to
/// clone.
///
/// Raft's membership records each node's address as it was when the node joined; the address
/// book overrides it, so a cluster restarted from disk on new ports (as `bank run` and the
/// tests do) still reaches its peers.
#[derive(Debug, Clone)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    addresses: Arc<BTreeMap<NodeId, String>>,
    connector: Arc<dyn Connector>,
    /// Mutual TLS to every peer; `None`: plaintext.
    tls: Option<ClientTlsConfig>,
}

impl Default for Peers {
    fn default() -> Self {
        Peers::new(BTreeMap::new())
    }
}

impl Peers {
    pub fn new(addresses: BTreeMap<NodeId, String>) -> Self {
        Peers {
            channels: Arc::default(),
            addresses: Arc::new(addresses),
            connector: Arc::new(Tcp),
            tls: None,
        }
    }

    /// The same address book, reached over mutual TLS with `tls` (the cluster's CA as the only
    /// root, the branch's certificate as client identity).
    pub fn with_tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self.channels = Arc::default();
        self
    }

    /// The same address book, reached through `connector`.
    pub fn with_connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = connector;
        self.channels = Arc::default();
        self
    }

    /// Where `id` listens now: the address book's entry, else what Raft's membership says.
    pub fn address(&self, id: NodeId, recorded: &BasicNode) -> String {
        self.addresses
            .get(&id)
            .cloned()
            .unwrap_or_else(|| recorded.addr.clone())
    }

    /// The cached channel to `addr` (`host:port`), created on first use. Connecting is lazy:
    /// this never blocks and never fails for an unreachable peer, only for a malformed address.
    pub fn channel(&self, addr: &str) -> Result<Channel, PeerError> {
        let mut channels = match self.channels.lock() {
            Ok(channels) => channels,
            // The map holds only channels, which stay valid whatever panicked; keep using it.
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let config = EndpointConfig {
            tls: self.tls.as_ref(),
            connect_timeout: CONNECT_TIMEOUT,
            // A peer that vanished without closing the connection (a pause, a cable) is
            // noticed within seconds, not when the OS gives up on it.
            keep_alive: Some(KEEP_ALIVE_INTERVAL),
        };
        let endpoint = endpoint(addr, &config)
            .map_err(|cause| PeerError::BadAddress {
                addr: addr.to_string(),
                cause,
            })?
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let channel = self.connector.connect_lazy(endpoint);
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn client(&self, addr: &str) -> Result<PeerClient<Channel>, PeerError> {
        Ok(PeerClient::new(self.channel(addr)?))
    }
}

/// Builds a [`PeerNetwork`] per target for openraft.
#[derive(Debug, Clone, Default)]
pub struct PeerNetworkFactory {
    /// The branch that sends.
    pub id: NodeId,
    pub peers: Peers,
    /// Stamps the course requests (Project 2) in the entries this branch replicates.
    pub lamport: Arc<LamportClock>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerNetwork {
            id: self.id,
            target,
            addr: self.peers.address(target, node),
            peers: self.peers.clone(),
            lamport: self.lamport.clone(),
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerNetwork {
    id: NodeId,
    target: NodeId,
    addr: String,
    peers: Peers,
    lamport: Arc<LamportClock>,
}

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl PeerNetwork {
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(rpc, payload, option).await
    }

    /// Sends an encoded request and decodes the peer's whole `Result`.
    async fn send<Resp, E>(
        &self,
        rpc: Rpc,
        payload: RaftPayload,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self
            .peers
            .client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut request = tonic::Request::new(payload);
        let timeout = option.hard_ttl().min(PEER_RPC_TIMEOUT * 5);
        request.set_timeout(timeout);
        let reply = match rpc {
            Rpc::AppendEntries => within(timeout, client.append_entries(request)).await,
            Rpc::Vote => within(timeout, client.vote(request)).await,
            Rpc::InstallSnapshot => within(timeout, client.install_snapshot(request)).await,
        };
        let reply = reply.map_err(|error| match error {
            // Unknown is how tonic reports a broken connection ("transport error"); as
            // Unreachable, openraft backs off before retrying instead of spinning.
            CallError::Status(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown
                ) =>
            {
                RPCError::Unreachable(Unreachable::new(&StatusError(status)))
            }
            CallError::Status(status) => RPCError::Network(NetworkError::new(&StatusError(status))),
            timeout @ CallError::Timeout(_) => RPCError::Network(NetworkError::new(&timeout)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(reply.get_ref()).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// How many of `entries`, from the first, encode within `bytes_max` (at least 1: a single
/// entry larger than the bound still goes, alone).
fn entries_that_fit(entries: &[openraft::Entry<TypeConfig>], bytes_max: usize) -> usize {
    if entries.len() <= 1 {
        return entries.len();
    }
    let mut total = 0usize;
    for (fit, entry) in entries.iter().enumerate() {
        // An entry that does not encode goes to the call, which reports it.
        total = total.saturating_add(encoded_len(entry).unwrap_or(0));
        if total > bytes_max {
            return fit.max(1);
        }
    }
    entries.len()
}

/// A `tonic::Status` as a plain `std::error::Error` for openraft's error constructors.
#[derive(Debug)]
struct StatusError(tonic::Status);

impl Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.code(), self.0.message())
    }
}

impl std::error::Error for StatusError {}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        // Measured before the whole call is encoded, stopping at the bound: a far-behind
        // follower's 512 full entries are never encoded at once.
        let fit = entries_that_fit(&rpc.entries, APPEND_ENTRIES_BYTES_MAX);
        if fit < rpc.entries.len() {
            tracing::debug!(
                target = self.target,
                entries = rpc.entries.len(),
                fit,
                "AppendEntries too large; openraft sends fewer entries"
            );
            let hint = u64::try_from(fit).unwrap_or(u64::MAX);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        let mut payload = encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // The course requests (Project 2) in these entries are sent now, with their clocks.
        let proposals = rpc.entries.iter().filter_map(|entry| match &entry.payload {
            EntryPayload::Normal(proposal) => Some(proposal),
            _ => None,
        });
        let stamps = self.lamport.send(self.target, Hop::Propagate, proposals);
        payload.lamport = to_wire(self.id, &stamps);
        self.send(Rpc::AppendEntries, payload, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
