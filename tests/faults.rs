//! Breaking a local cluster on purpose, as the live page's buttons do: a branch cut off from
//! the others loses the lead and catches up once healed; a stopped branch restarts on its
//! address from its kept (in-memory) storage and converges with the others.

mod common;

use std::time::Duration;

use common::{call, client, eventually, leader_of, start_cluster};

const ELECTION_DEADLINE: Duration = Duration::from_secs(15);

/// The leader the branches other than `except` agree on, if any.
fn leader_without(cluster: &bank::bootstrap::local::LocalCluster, except: u64) -> Option<u64> {
    let leaders: Vec<Option<u64>> = cluster
        .branches()
        .filter(|(id, _)| *id != except)
        .map(|(_, b)| b.branch.view().leader)
        .collect();
    let first = *leaders.first()?;
    (first.is_some() && first != Some(except) && leaders.iter().all(|l| *l == first))
        .then_some(first)
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_is_replaced_and_catches_up_once_healed() {
    let cluster = start_cluster(3, 100).await;
    let leader = leader_of(&cluster).await;
    cluster.cut(leader).expect("cut");
    assert!(cluster.is_cut(leader));
    assert_eq!(cluster.cut_off(), vec![leader]);
    let new_leader = eventually(
        "the others elect a new leader",
        ELECTION_DEADLINE,
        || async { leader_without(&cluster, leader) },
    )
    .await;
    // The majority takes writes meanwhile.
    let addr = cluster.branch(new_leader).expect("the new leader").addr;
    let reply = call(&mut client(addr).await, "deposit", 5)
        .await
        .expect("deposit");
    assert_eq!(reply.balance, 105);
    cluster.heal(leader).expect("heal");
    assert!(cluster.cut_off().is_empty());
    let states = cluster.settled_states().await.expect("branches settle");
    assert_eq!(states.len(), 3);
    assert!(states
        .windows(2)
        .all(|pair| pair[0].1.ledger == pair[1].1.ledger));
    assert!(cluster.cut(99).is_err(), "no such branch");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_branch_restarts_on_its_address_from_its_kept_state() {
    let mut cluster = start_cluster(3, 100).await;
    let leader = leader_of(&cluster).await;
    let stopped = cluster
        .branches()
        .map(|(id, _)| id)
        .find(|id| *id != leader)
        .expect("a follower");
    let addr = cluster.branch(stopped).expect("branch").addr;
    cluster.stop(stopped).await.expect("stop");
    assert!(cluster.stop(stopped).await.is_err(), "already stopped");
    assert_eq!(cluster.stopped().get(&stopped), Some(&addr));
    // Its port is free: nothing answers there.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let leader_addr = cluster.branch(leader).expect("leader").addr;
    let reply = call(&mut client(leader_addr).await, "deposit", 7)
        .await
        .expect("deposit without it");
    assert_eq!(reply.balance, 107);
    cluster.restart(stopped).await.expect("restart");
    assert!(cluster.stopped().is_empty());
    assert_eq!(cluster.branch(stopped).expect("back").addr, addr);
    let states = cluster.settled_states().await.expect("branches settle");
    assert_eq!(states.len(), 3);
    assert!(
        states.iter().all(|(_, s)| s.ledger.balance(0) == Some(107)),
        "the restarted branch has the deposit made while it was down"
    );
    // And it serves customers on its old address.
    let reply = call(&mut client(addr).await, "query", 0)
        .await
        .expect("query");
    assert_eq!(reply.balance, 107);
    cluster.shutdown().await;
}
