//! A client of the original course API, `Branch.MsgDelivery` (`proto/banks.proto`): what the
//! course's customers send, and what `bank client` reads the final balances with.
//!
//! [`Branches`] holds one lazily connected plaintext channel per branch, keyed by the
//! scenario's branch id, built by [`endpoint`](crate::rpc::endpoint). A call is never retried here:
//! the original API has no request ids, so a resent deposit could apply twice. Only
//! [`Branches::wait_until_serving`] repeats a query, which changes nothing. A failed call is a
//! [`ClientError::Refused`] (a status not worth retrying) or a [`ClientError::Unreachable`]
//! (unavailable, or no answer in time), asked as [`Asked::Course`]; one that points at TLS on
//! one end only says so, typed: [`ClientError::tls_mismatch`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::{retryable, Asked, Cause, ClientError};
use crate::lamport;
use crate::proto::customer::branch_client::BranchClient;
use crate::proto::customer::{Reply, Request};
use crate::rpc::{self as endpoint, within, CallError, EndpointConfig};
use crate::BranchId;

/// Deadline of one customer call.
pub const CALL_DEADLINE: Duration = Duration::from_secs(15);

/// Bound on connecting to a branch.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between two queries of [`Branches::wait_until_serving`], so a refused connection does
/// not spin.
const SERVING_POLL: Duration = Duration::from_millis(100);

/// One lazily connected channel per branch, by branch id. Cheap to clone.
#[derive(Clone)]
pub struct Branches {
    clients: BTreeMap<BranchId, (SocketAddr, BranchClient<Channel>)>,
}

impl Branches {
    /// Channels to the branches at `addresses`; nothing is connected until the first call.
    /// Call within a Tokio runtime.
    pub fn new(addresses: &BTreeMap<BranchId, SocketAddr>) -> Result<Self, ClientError> {
        let config = EndpointConfig::plaintext(CONNECT_TIMEOUT);
        let mut clients = BTreeMap::new();
        for (&branch, &addr) in addresses {
            let addr_text = addr.to_string();
            let channel = endpoint::endpoint(&addr_text, &config)
                .map_err(|e| ClientError::BadAddress {
                    cause: Cause::bad_address(&addr_text, e),
                })?
                .connect_lazy();
            clients.insert(branch, (addr, BranchClient::new(channel)));
        }
        Ok(Branches { clients })
    }

    /// Every branch's id and address, by id.
    pub fn addresses(&self) -> impl Iterator<Item = (BranchId, SocketAddr)> + '_ {
        self.clients
            .iter()
            .map(|(&branch, &(addr, _))| (branch, addr))
    }

    /// Sends `request` to `branch` once, bounded by `deadline`.
    pub async fn deliver(
        &self,
        branch: BranchId,
        request: Request,
        deadline: Duration,
    ) -> Result<Reply, ClientError> {
        self.deliver_clocked(branch, request, None, deadline).await
    }

    /// [`Branches::deliver`] for a Project 2 customer: `clock` is the customer's id and its
    /// Lamport clock at this send, carried in the call's metadata ([`crate::lamport`]).
    pub async fn deliver_clocked(
        &self,
        branch: BranchId,
        request: Request,
        clock: Option<(u32, u64)>,
        deadline: Duration,
    ) -> Result<Reply, ClientError> {
        let (addr, mut client) = self
            .clients
            .get(&branch)
            .cloned()
            .ok_or(ClientError::UnknownBranch(branch))?;
        let mut request = tonic::Request::new(request);
        request.set_timeout(deadline);
        if let Some((customer, clock)) = clock {
            let metadata = request.metadata_mut();
            metadata.insert(lamport::CUSTOMER_HEADER, MetadataValue::from(customer));
            metadata.insert(lamport::CLOCK_HEADER, MetadataValue::from(clock));
        }
        within(deadline, client.msg_delivery(request))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|failure| {
                let asked = Asked::Course(branch);
                let cause = Cause::call(&addr.to_string(), &failure, false);
                match failure {
                    CallError::Status(status) if !retryable(&status) => {
                        ClientError::Refused { asked, cause }
                    }
                    CallError::Status(_) | CallError::Timeout(_) => ClientError::Unreachable {
                        asked,
                        cause,
                        deadline,
                        attempts: 1,
                    },
                }
            })
    }

    /// `branch`'s balance of the shared account (a `query`, within [`CALL_DEADLINE`]).
    pub async fn query_balance(&self, branch: BranchId) -> Result<i64, ClientError> {
        let reply = self.deliver(branch, query(), CALL_DEADLINE).await?;
        if reply.balance < 0 {
            return Err(ClientError::NegativeBalance {
                branch,
                balance: reply.balance,
            });
        }
        Ok(i64::from(reply.balance))
    }

    /// Repeats a query at every branch until it answers, for at most `deadline` in all.
    pub async fn wait_until_serving(&self, deadline: Duration) -> Result<(), ClientError> {
        let until = Instant::now() + deadline;
        for &branch in self.clients.keys() {
            let mut attempts = 0;
            loop {
                let timeout = CALL_DEADLINE.min(until.saturating_duration_since(Instant::now()));
                attempts += 1;
                match self.deliver(branch, query(), timeout).await {
                    Ok(_) => break,
                    Err(
                        ClientError::Refused { cause, .. } | ClientError::Unreachable { cause, .. },
                    ) if Instant::now() >= until => {
                        return Err(ClientError::Unreachable {
                            asked: Asked::Serving(branch),
                            cause,
                            deadline,
                            attempts,
                        })
                    }
                    // Bounded by `until`.
                    Err(ClientError::Refused { .. } | ClientError::Unreachable { .. }) => {
                        tokio::time::sleep(crate::retry::jittered(SERVING_POLL)).await
                    }
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(())
    }
}

/// A query of the shared account, labelled 0.
fn query() -> Request {
    Request {
        id: 0,
        interface: "query".to_string(),
        money: 0,
        writeset: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_branch_is_an_error_not_a_panic() {
        let addresses = BTreeMap::from([(1, SocketAddr::from(([127, 0, 0, 1], 1)))]);
        let branches = Branches::new(&addresses).expect("valid addresses");
        let error = branches
            .deliver(2, query(), Duration::from_millis(10))
            .await
            .expect_err("branch 2 has no address");
        assert!(matches!(error, ClientError::UnknownBranch(2)), "{error}");
    }

    /// Nothing listens: the wait ends at its deadline with the branch named.
    #[tokio::test]
    async fn waiting_for_a_branch_that_never_serves_ends_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let branches = Branches::new(&BTreeMap::from([(3, addr)])).expect("valid addresses");
        let started = std::time::Instant::now();
        let error = branches
            .wait_until_serving(Duration::from_millis(300))
            .await
            .expect_err("nothing listens");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(
            matches!(
                error,
                ClientError::Unreachable {
                    asked: Asked::Serving(3),
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("branch 3 at {addr} did not answer within 300ms: ")),
            "{error}"
        );
        assert_eq!(error.tls_mismatch(), None);
    }
}
