//! gRPC to branches over plaintext: channels, the course API (`Branch.MsgDelivery`), the
//! `bank.v1.Accounts` API (raw and through `bank::client::Client`) and the peer service.

use std::net::SocketAddr;
use std::time::Duration;

use bank::client::{Client, ClientConfig};
use bank::proto::customer::branch_client::BranchClient;
use bank::proto::customer::{Reply, Request};
use bank::proto::peer::peer_client::PeerClient;
use bank::proto::peer::{StatusReply, StatusRequest};
use bank::proto::v1::accounts_client::AccountsClient;
use tonic::transport::{Channel, Endpoint};

/// Bound on one call made with [`timed`] (and on each [`call`]).
pub const CALL_DEADLINE: Duration = Duration::from_secs(15);

/// Bound on connecting to a branch.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(2);

/// Bound on one peer `Status` call ([`status`]).
pub const STATUS_DEADLINE: Duration = Duration::from_secs(1);

/// An `http://addr` endpoint with a bounded connect; `.connect().await` it for an eager
/// connection.
pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid address")
        .connect_timeout(CONNECT_DEADLINE)
}

/// A lazy channel to `addr`: it connects on its first call.
pub fn channel(addr: SocketAddr) -> Channel {
    endpoint(addr).connect_lazy()
}

/// `message` as a request bounded by [`CALL_DEADLINE`].
pub fn timed<T>(message: T) -> tonic::Request<T> {
    timed_within(message, CALL_DEADLINE)
}

/// `message` as a request bounded by `limit`.
pub fn timed_within<T>(message: T, limit: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(limit);
    request
}

/// A client of the course's customer API (`Branch`) at `addr`.
pub async fn client(addr: SocketAddr) -> BranchClient<Channel> {
    BranchClient::new(channel(addr))
}

/// One course-API call (`MsgDelivery`) of `interface` with `money`, bounded by
/// [`CALL_DEADLINE`].
pub async fn call(
    client: &mut BranchClient<Channel>,
    interface: &str,
    money: i32,
) -> Result<Reply, tonic::Status> {
    let request = timed(Request {
        id: 1,
        interface: interface.to_string(),
        money,
        writeset: vec![],
    });
    client.msg_delivery(request).await.map(|r| r.into_inner())
}

/// A raw `bank.v1.Accounts` gRPC client at `addr` (for what `bank::client::Client` does not
/// send: malformed requests, hand-built batches, explicit read levels).
pub fn accounts_client(addr: SocketAddr) -> AccountsClient<Channel> {
    AccountsClient::new(channel(addr))
}

/// The library's `bank.v1` client over `addresses`, with its default configuration.
pub fn bank_client<A: ToString>(addresses: &[A]) -> Client {
    let addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    Client::new(&addresses, ClientConfig::default()).expect("client")
}

/// A client of the peer service (`bank.peer.v1.Peer`) at `addr`.
pub fn peer(addr: SocketAddr) -> PeerClient<Channel> {
    PeerClient::new(channel(addr))
}

/// The peer `Status` of the branch at `addr`, or `None` if it does not answer within
/// [`STATUS_DEADLINE`].
pub async fn status(addr: SocketAddr) -> Option<StatusReply> {
    let request = timed_within(StatusRequest {}, STATUS_DEADLINE);
    let reply = peer(addr).status(request).await.ok()?;
    Some(reply.into_inner())
}
