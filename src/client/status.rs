//! `bank status`: what every branch of a cluster says about itself, as an operator sees it.
//!
//! One branch is asked (`bank.peer.v1.Peer/Status`); then every branch in the membership it
//! knows, at once, each call bounded by [`STATUS_DEADLINE`]. A branch that does not answer is
//! listed as unreachable; only the first branch must answer. Lag is how many entries a branch
//! has applied fewer than the leader (from the leader's own answer), and the digest is
//! `Ledger::state_digest` at the branch's applied index: branches at the same applied index
//! must show the same digest.
//!
//! Status is part of the peer service, so on a TLS cluster it needs the cluster's certificate
//! ([`cluster_status_with`] and a client TLS configuration with an identity): it shows the
//! membership and every branch's address, which is the operator's business, not a customer's.
//! A branch that cannot be reached because TLS is on at one end only says so, typed:
//! [`ClientError::tls_mismatch`].

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use tonic::transport::{Channel, ClientTlsConfig};

use super::{Asked, Cause, ClientError};
use crate::proto::peer::peer_client::PeerClient;
use crate::proto::peer::{StatusReply, StatusRequest};
use crate::rpc::{self as endpoint, EndpointConfig};
use crate::BranchId;

/// Bound on one status call, connection included.
pub const STATUS_DEADLINE: Duration = Duration::from_secs(3);

/// Bound on connecting to a branch (inside [`STATUS_DEADLINE`]).
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);

/// One branch, as `bank status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BranchStatus {
    /// Its node id (from its membership entry, or its own answer).
    pub id: BranchId,
    pub address: String,
    pub reachable: bool,
    /// Why it did not answer, if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub role: Option<String>,
    pub voter: Option<bool>,
    pub term: Option<u64>,
    pub leader: Option<BranchId>,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    /// On the leader, its commit index (the Raft library reports no other branch's).
    pub committed_index: Option<u64>,
    /// Entries the leader has applied that this branch has not.
    pub lag: Option<u64>,
    /// `Ledger::state_digest` at `applied_index`, as 16 hex digits.
    pub digest: Option<String>,
    /// How many accounts its ledger holds at `applied_index`.
    pub accounts: Option<u64>,
    /// The sum of every balance at `applied_index`, in minor units.
    pub balances_total: Option<i64>,
    /// The shared account's (account 0's) balance at `applied_index`.
    pub original_balance: Option<i64>,
}

/// The cluster as seen from one branch.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// The branch that was asked first.
    pub asked: String,
    /// The leader the asked branch knows.
    pub leader: Option<BranchId>,
    pub branches: Vec<BranchStatus>,
}

/// Connects to the branch at `addr` (bounded by the endpoint's connect timeout), for an
/// operator's call (`asked`): status here, membership in [`super::members`].
pub(crate) async fn connect(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
    asked: Asked,
) -> Result<Channel, ClientError> {
    let config = EndpointConfig {
        tls,
        connect_timeout: CONNECT_DEADLINE,
        keep_alive: None,
    };
    let endpoint = endpoint::endpoint(addr, &config).map_err(|e| ClientError::BadAddress {
        cause: Cause::bad_address(addr, e),
    })?;
    endpoint
        .connect()
        .await
        .map_err(|e| ClientError::Unreachable {
            asked,
            cause: Cause::no_connection(addr, &e, tls.is_some()),
            deadline: CONNECT_DEADLINE,
            attempts: 1,
        })
}

/// Asks the branch at `addr` for its status, within `deadline` (connection included).
async fn ask(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
    deadline: Duration,
) -> Result<StatusReply, ClientError> {
    let unreachable = |cause: Cause| ClientError::Unreachable {
        asked: Asked::Status,
        cause,
        deadline,
        attempts: 1,
    };
    let answered = tokio::time::timeout(deadline, async {
        let channel = connect(addr, tls, Asked::Status).await?;
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(deadline);
        PeerClient::new(channel)
            .status(request)
            .await
            .map(|reply| reply.into_inner())
            .map_err(|status| {
                let cause = Cause::status(addr, &status, Some(tls.is_some()));
                match status.code() {
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                        ClientError::Refused {
                            asked: Asked::Status,
                            cause,
                        }
                    }
                    _ => unreachable(cause),
                }
            })
    })
    .await;
    answered.unwrap_or_else(|_| Err(unreachable(Cause::no_answer(addr, deadline))))
}

fn from_reply(address: String, reply: &StatusReply) -> BranchStatus {
    BranchStatus {
        id: reply.id,
        address,
        reachable: true,
        error: None,
        role: Some(reply.role.clone()),
        voter: Some(reply.voters.contains(&reply.id)),
        term: Some(reply.term),
        leader: reply.leader,
        applied_index: reply.applied_index,
        last_log_index: reply.last_log_index,
        committed_index: reply.committed_index,
        lag: None,
        digest: Some(format!("{:016x}", reply.digest)),
        accounts: Some(reply.accounts),
        balances_total: Some(reply.balances_total),
        original_balance: reply.original_balance,
    }
}

/// Asks the branch at `addr`, then every branch in the membership it knows.
/// Fails only if the branch at `addr` cannot be reached.
pub async fn cluster_status(addr: &str) -> Result<ClusterStatus, ClientError> {
    cluster_status_with(addr, None).await
}

/// [`cluster_status`] over TLS when `tls` is given (with the cluster's certificate as identity
/// on a TLS cluster: the peer service refuses connections without it).
pub async fn cluster_status_with(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
) -> Result<ClusterStatus, ClientError> {
    cluster_status_within(addr, tls, STATUS_DEADLINE).await
}

/// [`cluster_status_with`], each call bounded by `deadline` rather than [`STATUS_DEADLINE`]:
/// a live view that must notice a silent branch sooner (the calls run at once, so the whole
/// answer takes at most twice `deadline`).
pub async fn cluster_status_within(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
    deadline: Duration,
) -> Result<ClusterStatus, ClientError> {
    let first = ask(addr, tls, deadline).await?;
    let others = first.members.iter().filter(|member| member.id != first.id);
    let answers = futures::future::join_all(others.map(|member| async move {
        match ask(&member.address, tls, deadline).await {
            Ok(reply) => {
                let mut status = from_reply(member.address.clone(), &reply);
                status.voter = Some(member.voter);
                status
            }
            Err(e) => BranchStatus {
                id: member.id,
                address: member.address.clone(),
                reachable: false,
                error: Some(e.to_string()),
                role: None,
                voter: Some(member.voter),
                term: None,
                leader: None,
                applied_index: None,
                last_log_index: None,
                committed_index: None,
                lag: None,
                digest: None,
                accounts: None,
                balances_total: None,
                original_balance: None,
            },
        }
    }))
    .await;
    let mut branches = vec![from_reply(addr.to_string(), &first)];
    branches.extend(answers);
    branches.sort_by_key(|branch| branch.id);
    let leader_applied = first.leader.and_then(|leader| {
        branches
            .iter()
            .find(|branch| branch.id == leader && branch.reachable)
            .and_then(|branch| branch.applied_index)
    });
    for branch in &mut branches {
        if let (Some(leader_applied), true) = (leader_applied, branch.reachable) {
            branch.lag = Some(leader_applied.saturating_sub(branch.applied_index.unwrap_or(0)));
        }
    }
    Ok(ClusterStatus {
        asked: addr.to_string(),
        leader: first.leader,
        branches,
    })
}

/// A table for people: one row per branch.
pub fn render_table(status: &ClusterStatus) -> String {
    let show = |value: Option<u64>| value.map_or("-".to_string(), |v| v.to_string());
    let mut rows = vec![[
        "ID",
        "ADDRESS",
        "ROLE",
        "TERM",
        "APPLIED",
        "LAG",
        "DIGEST",
        "REACHABLE",
    ]
    .map(String::from)];
    for branch in &status.branches {
        rows.push([
            branch.id.to_string(),
            branch.address.clone(),
            branch.role.clone().unwrap_or_else(|| "-".to_string()),
            show(branch.term),
            show(branch.applied_index),
            show(branch.lag),
            branch.digest.clone().unwrap_or_else(|| "-".to_string()),
            if branch.reachable { "yes" } else { "no" }.to_string(),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut table = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(table, "{}", line.join("  ").trim_end());
    }
    for branch in status.branches.iter().filter(|b| !b.reachable) {
        if let Some(error) = &branch.error {
            let _ = writeln!(table, "branch {}: {error}", branch.id);
        }
    }
    match status.leader {
        Some(leader) => {
            let _ = writeln!(table, "leader: branch {leader}");
        }
        None => {
            let _ = writeln!(table, "leader: none known to {}", status.asked);
        }
    }
    table
}
