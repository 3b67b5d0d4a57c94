//! Helpers shared by the integration tests: real clusters on `127.0.0.1:0` ports.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bank::bootstrap::local::{bind_loopback, LocalCluster, Storage};
use bank::proto::customer::branch_client::BranchClient;
use bank::proto::customer::{Reply, Request};
use tonic::transport::Channel;

/// Starts a cluster of branches `1..=count` whose shared account opens at `initial_balance`.
/// `LocalCluster::start` returns only once every branch has applied the genesis entry, so no
/// further waiting is needed.
pub async fn start_cluster(count: u64, initial_balance: u64) -> LocalCluster {
    let ids: Vec<u64> = (1..=count).collect();
    let listeners = bind_loopback(&ids, None)
        .await
        .expect("bind loopback listeners");
    LocalCluster::start(listeners, initial_balance, Storage::Memory)
        .await
        .expect("cluster starts")
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

/// The cluster's leader, once there is one (at most 10 s).
pub async fn leader_of(cluster: &LocalCluster) -> u64 {
    let (_, any) = cluster.branches().next().expect("a branch");
    any.branch
        .wait_for_leader(tokio::time::Instant::now() + Duration::from_secs(10))
        .await
        .expect("a leader within 10 s")
}

pub async fn client(addr: SocketAddr) -> BranchClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid address")
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    BranchClient::new(channel)
}

pub async fn call(
    client: &mut BranchClient<Channel>,
    interface: &str,
    money: i32,
) -> Result<Reply, tonic::Status> {
    let mut request = tonic::Request::new(Request {
        id: 1,
        interface: interface.to_string(),
        money,
        writeset: vec![],
    });
    request.set_timeout(Duration::from_secs(15));
    client.msg_delivery(request).await.map(|r| r.into_inner())
}

/// The reference data of the original project, read-only.
pub fn reference(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference")
        .join(path)
}
