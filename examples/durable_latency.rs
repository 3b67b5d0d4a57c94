//! Measures durable writes on a local three-branch cluster (redb, fsync before acknowledging):
//! a sequential customer's latency per deposit, and deposits per second with 16 customers at
//! once. Until `bank bench` exists, this is the reproducible measurement:
//!
//! ```sh
//! cargo run --release --example durable_latency [-- DIR]   # DIR: where the data goes (default: a temp dir)
//! ```

use std::time::{Duration, Instant};

use bank::cluster::{bind_loopback, LocalCluster, Storage};
use bank::proto::customer::branch_client::BranchClient;
use bank::proto::customer::Request;
use tokio::task::JoinSet;

const SEQUENTIAL_DEPOSITS: usize = 300;
const CONCURRENT_CUSTOMERS: usize = 16;
const DEPOSITS_PER_CUSTOMER: usize = 100;

async fn deposit(client: &mut BranchClient<tonic::transport::Channel>) -> anyhow::Result<()> {
    let mut request = tonic::Request::new(Request {
        id: 0,
        interface: "deposit".to_string(),
        money: 1,
        writeset: vec![],
    });
    request.set_timeout(Duration::from_secs(15));
    let reply = client.msg_delivery(request).await?.into_inner();
    anyhow::ensure!(reply.result == "success", "deposit refused: {reply:?}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let temporary = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let listeners = bind_loopback(&[1, 2, 3], None).await?;
    let cluster = LocalCluster::start(listeners, 0, Storage::Durable(dir.join("bench"))).await?;
    let addresses = cluster.addresses();
    let leader = cluster
        .branch(1)
        .map(|b| b.branch.raft.clone())
        .ok_or_else(|| anyhow::anyhow!("no branch 1"))?
        .current_leader()
        .await
        .ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let follower = if leader == 1 { 2 } else { 1 };

    for (name, id) in [("leader", leader), ("follower", follower)] {
        let mut client = BranchClient::connect(format!("http://{}", addresses[&id])).await?;
        let mut latencies = Vec::with_capacity(SEQUENTIAL_DEPOSITS);
        for _ in 0..SEQUENTIAL_DEPOSITS {
            let started = Instant::now();
            deposit(&mut client).await?;
            latencies.push(started.elapsed());
        }
        latencies.sort();
        println!(
            "sequential deposits at the {name}: p50 {:.2?}, p99 {:.2?} ({SEQUENTIAL_DEPOSITS} deposits)",
            latencies[latencies.len() / 2],
            latencies[latencies.len() * 99 / 100]
        );
    }

    let started = Instant::now();
    let mut customers = JoinSet::new();
    for n in 0..CONCURRENT_CUSTOMERS {
        let addr = addresses[&((n % 3) as u64 + 1)];
        customers.spawn(async move {
            let mut client = BranchClient::connect(format!("http://{addr}")).await?;
            for _ in 0..DEPOSITS_PER_CUSTOMER {
                deposit(&mut client).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = customers.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    let total = CONCURRENT_CUSTOMERS * DEPOSITS_PER_CUSTOMER;
    println!(
        "{CONCURRENT_CUSTOMERS} concurrent customers: {total} deposits in {elapsed:.2?} = {:.0} deposits/s",
        total as f64 / elapsed.as_secs_f64()
    );
    cluster.shutdown().await;
    Ok(())
}
