//! Durable clusters (`Storage::Durable`): a restart resumes from disk with every acknowledged
//! operation, snapshots purge the log, and data the branch cannot trust is refused.

mod common;

use std::path::Path;

use bank::bootstrap::local::{bind_loopback, ClusterError, LocalCluster, Storage};
use bank::ledger::ORIGINAL_ACCOUNT;
use bank::raft::durable::DurableStore;
use common::{call, client};
use openraft::storage::RaftLogStorage;
use tokio::task::JoinSet;

/// Starts (or resumes) branches `1..=count` with their state under `dir`.
async fn start(dir: &Path, count: u64, initial: u64) -> Result<LocalCluster, ClusterError> {
    let ids: Vec<u64> = (1..=count).collect();
    common::start_cluster_with(&ids, initial, Storage::Durable(dir.to_path_buf())).await
}

/// Deposits `per_client` × 1 from `clients` customers at once, spread over the branches;
/// returns how many were acknowledged.
async fn deposit_load(cluster: &LocalCluster, clients: usize, per_client: usize) -> i32 {
    let addresses: Vec<_> = cluster.addresses().into_values().collect();
    let mut tasks = JoinSet::new();
    for n in 0..clients {
        let addr = addresses[n % addresses.len()];
        tasks.spawn(async move {
            let mut client = client(addr).await;
            let mut acknowledged = 0;
            for _ in 0..per_client {
                if let Ok(reply) = call(&mut client, "deposit", 1).await {
                    assert_eq!(reply.result, "success");
                    acknowledged += 1;
                }
            }
            acknowledged
        });
    }
    let mut total = 0;
    while let Some(acknowledged) = tasks.join_next().await {
        total += acknowledged.expect("client task");
    }
    total
}

/// Deposits 1, `count` times, one after another from one customer: `count` log entries, as
/// nothing runs alongside to share them (concurrent writes are group-committed, so a load
/// like [`deposit_load`]'s takes however many entries the timing makes).
async fn sequential_deposits(cluster: &LocalCluster, count: usize) {
    let addr = cluster.addresses()[&1];
    let mut client = client(addr).await;
    for n in 0..count {
        let reply = call(&mut client, "deposit", 1)
            .await
            .unwrap_or_else(|e| panic!("deposit {n}: {e}"));
        assert_eq!(reply.result, "success");
    }
}

async fn balances(cluster: &LocalCluster) -> Vec<i32> {
    let mut balances = Vec::new();
    for addr in cluster.addresses().into_values() {
        balances.push(
            call(&mut client(addr).await, "query", 0)
                .await
                .expect("query")
                .balance,
        );
    }
    balances
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_disk_keeps_every_acknowledged_operation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = start(dir.path(), 3, 400).await.expect("first start");
    let acknowledged = deposit_load(&cluster, 8, 25).await;
    assert_eq!(
        acknowledged, 200,
        "no failures expected on a healthy cluster"
    );
    cluster.shutdown().await;

    // New ports, same data: the branches resume, no re-initialisation, nothing lost.
    let cluster = start(dir.path(), 3, 400).await.expect("restart");
    assert_eq!(balances(&cluster).await, vec![600; 3]);
    let reply = call(&mut client(cluster.addresses()[&3]).await, "withdraw", 100)
        .await
        .expect("withdraw after restart");
    assert_eq!((reply.result.as_str(), reply.balance), ("success", 500));
    let states = cluster.settled_states().await.expect("settle");
    for (id, state) in &states {
        assert_eq!(state.ledger, states[0].1.ledger, "branch {id} diverged");
    }
    cluster.shutdown().await;
}

/// Past a snapshot (every 1,000 entries) the log is purged on disk, and a restart starts from
/// the snapshot plus the log after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_purge_the_log_and_a_restart_starts_from_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = start(dir.path(), 3, 0).await.expect("first start");
    sequential_deposits(&cluster, 1_280).await;
    cluster.settled_states().await.expect("settle");
    cluster.shutdown().await;

    for id in 1..=3 {
        let store = DurableStore::open(&dir.path().join(format!("branch-{id}"))).expect("open");
        let state = store.log_store().get_log_state().await.expect("log state");
        let purged = state.last_purged_log_id.map(|id| id.index);
        assert!(
            purged.is_some_and(|p| p >= 500),
            "branch {id}: log not purged ({purged:?})"
        );
    }

    let cluster = start(dir.path(), 3, 0).await.expect("restart");
    assert_eq!(balances(&cluster).await, vec![1_280; 3]);
    let states = cluster.settled_states().await.expect("settle");
    assert_eq!(states[0].1.ledger.balance(ORIGINAL_ACCOUNT), Some(1_280));
    cluster.shutdown().await;
}

/// A brand-new branch joining after the log was purged cannot get the early entries: it is
/// caught up by snapshot install, then by log, and ends with every acknowledged deposit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_branch_catches_up_by_snapshot_after_the_log_was_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(dir.path(), 3, 0).await.expect("first start");
    sequential_deposits(&cluster, 1_280).await;
    cluster.settled_states().await.expect("settle");

    let listener = bind_loopback(&[4], None)
        .await
        .expect("bind")
        .pop()
        .expect("one listener")
        .1;
    let store = DurableStore::open(&dir.path().join("branch-4")).expect("open new store");
    cluster
        .add_learner(4, listener, Some(store.clone()))
        .await
        .expect("the new branch catches up");
    assert_eq!(deposit_load(&cluster, 4, 5).await, 20);
    let states = cluster.settled_states().await.expect("settle");
    for (id, state) in &states {
        assert_eq!(
            state.ledger.balance(ORIGINAL_ACCOUNT),
            Some(1_300),
            "branch {id}"
        );
    }
    cluster.shutdown().await;

    // It got the early history as a snapshot, not as log entries.
    let state = store.log_store().get_log_state().await.expect("log state");
    let purged = state.last_purged_log_id.map(|id| id.index);
    assert!(
        purged.is_some_and(|p| p >= 500),
        "branch 4 was not caught up by snapshot ({purged:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_made_for_another_scenario_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    start(dir.path(), 3, 400)
        .await
        .expect("first start")
        .shutdown()
        .await;
    match start(dir.path(), 3, 500).await {
        Ok(cluster) => {
            cluster.shutdown().await;
            panic!("started on data made for another initial balance");
        }
        Err(e) => assert!(matches!(e, ClusterError::Mismatch { .. }), "{e}"),
    }
}

/// A branch whose data directory was deleted must not come back as if new (it could vote
/// twice in a term): the start is refused and the other branches' data is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_branch_is_refused_not_silently_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = start(dir.path(), 3, 400).await.expect("first start");
    assert_eq!(deposit_load(&cluster, 1, 5).await, 5);
    cluster.shutdown().await;
    std::fs::remove_dir_all(dir.path().join("branch-2")).expect("wipe branch 2");
    match start(dir.path(), 3, 400).await {
        Ok(cluster) => {
            cluster.shutdown().await;
            panic!("started with a wiped branch");
        }
        Err(e) => {
            assert!(matches!(e, ClusterError::PartialState { .. }), "{e}");
            assert!(e.to_string().contains("[2]"), "{e}");
        }
    }
    let store = DurableStore::open(&dir.path().join("branch-1")).expect("branch 1 still opens");
    assert!(
        store.is_initialized().expect("read"),
        "branch 1's data was touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    start(dir.path(), 3, 400)
        .await
        .expect("first start")
        .shutdown()
        .await;
    let file = dir.path().join("branch-3").join("branch.redb");
    let mut bytes = std::fs::read(&file).expect("read");
    // Overwrite the header (magic number and commit slots): the file is no longer redb's.
    for byte in bytes.iter_mut().take(512) {
        *byte ^= 0xA5;
    }
    std::fs::write(&file, &bytes).expect("damage");
    match start(dir.path(), 3, 400).await {
        Ok(cluster) => {
            cluster.shutdown().await;
            panic!("started on a damaged file");
        }
        Err(e) => assert!(
            e.to_string()
                .contains("will not serve state it cannot trust"),
            "{e}"
        ),
    }
}
