//! In-process clusters on `127.0.0.1:0` ports, and what the tests ask a branch's Raft node.
//!
//! What the tests ask of a branch's Raft state goes through the branch's own facade
//! ([`Branch::view`], [`Branch::wait_for_leader`], [`Branch::wait_applied`]), here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bank::bootstrap::local::{bind_loopback, ClusterError, LocalCluster, Storage};
use bank::bootstrap::standalone::BranchConfig;
use bank::node::Branch;
use tokio::net::TcpListener;

/// How long [`leader_of`] waits for a leader.
pub const LEADER_DEADLINE: Duration = Duration::from_secs(10);

/// Starts a cluster of branches `1..=count`, in memory, whose shared account opens at
/// `initial_balance`. `LocalCluster::start` returns only once every branch has applied the
/// genesis entry, so no further waiting is needed.
pub async fn start_cluster(count: u64, initial_balance: u64) -> LocalCluster {
    let ids: Vec<u64> = (1..=count).collect();
    start_cluster_with(&ids, initial_balance, Storage::Memory)
        .await
        .expect("cluster starts")
}

/// Starts a cluster of branches `ids` on fresh loopback ports with `storage`, or says why it
/// did not start (a durable start can be refused).
pub async fn start_cluster_with(
    ids: &[u64],
    initial_balance: u64,
    storage: Storage,
) -> Result<LocalCluster, ClusterError> {
    let listeners = bind_loopback(ids, None).await?;
    LocalCluster::start(listeners, initial_balance, storage).await
}

/// One loopback listener on a free port per id in `ids`, by id, for branches started one by one
/// with `bank::bootstrap::standalone::start` (as `bank branch` runs them).
pub async fn loopback_listeners(ids: &[u64]) -> BTreeMap<u64, TcpListener> {
    bind_loopback(ids, None)
        .await
        .expect("bind loopback listeners")
        .into_iter()
        .collect()
}

/// The listeners' addresses, by id.
pub fn addresses_of(listeners: &BTreeMap<u64, TcpListener>) -> BTreeMap<u64, SocketAddr> {
    listeners
        .iter()
        .map(|(&id, l)| (id, l.local_addr().expect("address")))
        .collect()
}

/// The configuration of standalone branch `id` on `listener`: every other branch of
/// `addresses` is a peer, its data is in `dir/branch-{id}`, the shared account opens at
/// `initial_balance`; plaintext, no tokens, not rejoining (override fields as needed).
pub fn standalone_config(
    id: u64,
    listener: TcpListener,
    addresses: &BTreeMap<u64, SocketAddr>,
    dir: &Path,
    initial_balance: u64,
) -> BranchConfig {
    BranchConfig::new(
        id,
        listener,
        addresses
            .iter()
            .filter(|(&peer, _)| peer != id)
            .map(|(&peer, addr)| (peer, addr.to_string()))
            .collect(),
        dir.join(format!("branch-{id}")),
        initial_balance,
    )
}

/// The cluster's leader, once there is one (at most [`LEADER_DEADLINE`]).
pub async fn leader_of(cluster: &LocalCluster) -> u64 {
    let (_, any) = cluster.branches().next().expect("a branch");
    wait_for_leader(&any.branch, LEADER_DEADLINE).await
}

/// The leader `branch` knows of, once it knows one (at most `limit`).
pub async fn wait_for_leader(branch: &Branch, limit: Duration) -> u64 {
    branch
        .wait_for_leader(tokio::time::Instant::now() + limit)
        .await
        .unwrap_or_else(|e| panic!("branch {}: no leader within {limit:?}: {e}", branch.id))
}

/// The leader `branch` knows of now, if any.
pub async fn current_leader(branch: &Branch) -> Option<u64> {
    branch.view().leader
}

/// The index of the last log entry `branch` has applied (0 before any).
pub fn last_applied(branch: &Branch) -> u64 {
    branch.view().applied_index.unwrap_or_default()
}

/// Waits until `branch` has applied the log up to `index` (at most `limit`).
pub async fn wait_applied(branch: &Branch, index: u64, limit: Duration) {
    branch
        .wait_applied(Some(index), tokio::time::Instant::now() + limit)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "branch {} did not apply index {index} within {limit:?}: {e}",
                branch.id
            )
        });
}

/// `branch`'s current term and the index of its last log entry (`None` if its log is empty):
/// what a vote or an append in a new term would move.
pub fn term_and_last_log_index(branch: &Branch) -> (u64, Option<u64>) {
    let view = branch.view();
    (view.vote_term, view.last_log_index)
}

/// [`start_cluster`], each branch answering at most `requests_max` customer calls at once.
pub async fn start_cluster_with_requests_max(
    count: u64,
    initial_balance: u64,
    requests_max: usize,
) -> LocalCluster {
    let ids: Vec<u64> = (1..=count).collect();
    let listeners = bind_loopback(&ids, None)
        .await
        .expect("bind loopback listeners");
    let config = bank::server::ServerConfig {
        requests_max,
        ..Default::default()
    };
    LocalCluster::start_with(listeners, initial_balance, Storage::Memory, config)
        .await
        .expect("cluster starts")
}
