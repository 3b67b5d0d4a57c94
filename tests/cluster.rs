//! A real cluster in this process, talked to over gRPC: concurrency safety, error statuses,
//! and linearizable reads at every branch.

mod common;

use bank::ledger::ORIGINAL_ACCOUNT;
use common::{call, client, start_cluster};
use tokio::task::JoinSet;

const CUSTOMERS: usize = 16;
const WITHDRAWALS_PER_CUSTOMER: usize = 10;
const AMOUNT: i32 = 10;

/// 16 customers at once on 7 branches (5 voters, 2 learners) withdraw 1,600 in total from a
/// balance of 1,000: the balance never goes negative, exactly the successful withdrawals are
/// taken, and every branch ends with the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_withdrawals_never_overdraw() {
    let initial: i32 = 1_000;
    let cluster = start_cluster(7, initial as u64).await;
    let addresses: Vec<_> = cluster.addresses().into_values().collect();

    let mut customers = JoinSet::new();
    for customer in 0..CUSTOMERS {
        let addr = addresses[customer % addresses.len()];
        customers.spawn(async move {
            let mut client = client(addr).await;
            let mut replies = Vec::new();
            for _ in 0..WITHDRAWALS_PER_CUSTOMER {
                replies.push(
                    call(&mut client, "withdraw", AMOUNT)
                        .await
                        .expect("withdraw answered"),
                );
            }
            replies
        });
    }
    let mut succeeded = 0;
    let mut failed = 0;
    while let Some(replies) = customers.join_next().await {
        for reply in replies.expect("customer task") {
            assert!(reply.balance >= 0, "negative balance {}", reply.balance);
            match reply.result.as_str() {
                "success" => succeeded += 1,
                "fail" => {
                    assert!(
                        reply.balance < AMOUNT,
                        "refused with {} available",
                        reply.balance
                    );
                    failed += 1
                }
                other => panic!("unexpected result {other:?}"),
            }
        }
    }
    assert_eq!(succeeded + failed, CUSTOMERS * WITHDRAWALS_PER_CUSTOMER);
    // 1,600 asked for, 1,000 there: exactly 100 withdrawals of 10 can succeed.
    assert_eq!(succeeded as i32 * AMOUNT, initial);

    let states = cluster.settled_states().await.expect("branches settle");
    assert_eq!(states.len(), 7);
    for (id, state) in &states {
        assert_eq!(
            state.ledger.balance(ORIGINAL_ACCOUNT),
            Some(0),
            "branch {id}"
        );
        assert_eq!(state.ledger, states[0].1.ledger, "branch {id} diverged");
    }
    for addr in &addresses {
        let reply = call(&mut client(*addr).await, "query", 0)
            .await
            .expect("query");
        assert_eq!(reply.balance, 0, "query at {addr}");
    }
    cluster.shutdown().await;
}

/// A write acknowledged by one branch is seen by a query at every other branch right away:
/// follower and learner reads are read-index reads, not stale local reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_branch_sees_acknowledged_writes() {
    let cluster = start_cluster(6, 400).await;
    let addresses: Vec<_> = cluster.addresses().into_values().collect();
    let mut expected = 400;
    for (round, writer) in addresses.iter().enumerate() {
        let money = 10 * (round as i32 + 1);
        let reply = call(&mut client(*writer).await, "deposit", money)
            .await
            .expect("deposit");
        expected += money;
        assert_eq!(
            (reply.result.as_str(), reply.balance),
            ("success", expected)
        );
        for reader in &addresses {
            let reply = call(&mut client(*reader).await, "query", 0)
                .await
                .expect("query");
            assert_eq!(
                reply.balance, expected,
                "stale read at {reader} after write at {writer}"
            );
        }
    }
    cluster.shutdown().await;
}

/// Malformed requests get clear gRPC statuses; an overflowing deposit is refused, not wrapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_clear_statuses() {
    let cluster = start_cluster(3, 400).await;
    let addr = cluster.addresses()[&2];
    let mut client = client(addr).await;

    let code = |r: Result<_, tonic::Status>| r.err().map(|s| s.code());
    assert_eq!(
        code(call(&mut client, "deposit", 0).await),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        code(call(&mut client, "withdraw", -1).await),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        code(call(&mut client, "teleport", 5).await),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        code(call(&mut client, "propagate_deposit", 5).await),
        Some(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        code(call(&mut client, "propagate_withdraw", 5).await),
        Some(tonic::Code::PermissionDenied)
    );

    // 400 + i32::MAX does not fit the int32 wire: refused, balance unchanged.
    let reply = call(&mut client, "deposit", i32::MAX)
        .await
        .expect("answered");
    assert_eq!((reply.result.as_str(), reply.balance), ("fail", 400));
    let reply = call(&mut client, "withdraw", 401).await.expect("answered");
    assert_eq!((reply.result.as_str(), reply.balance), ("fail", 400));
    let reply = call(&mut client, "query", 0).await.expect("answered");
    assert_eq!(reply.balance, 400);
    cluster.shutdown().await;
}

/// A tight loop of "deposit at the leader, query at a learner at once": the learner's query
/// must see the deposit although the learner applies it a round trip after the leader
/// answers. Serving local reads without the read index fails this (tried: see the issue note).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_reads_are_not_stale_right_after_a_write() {
    let cluster = start_cluster(6, 0).await;
    let leader = common::current_leader(&cluster.branch(1).expect("branch 1").branch)
        .await
        .expect("a leader after start");
    let mut writer = client(cluster.addresses()[&leader]).await;
    let mut reader = client(cluster.addresses()[&6]).await;
    for round in 1..=200 {
        let reply = call(&mut writer, "deposit", 1).await.expect("deposit");
        assert_eq!(reply.balance, round);
        let seen = call(&mut reader, "query", 0).await.expect("query").balance;
        assert_eq!(seen, round, "stale read at the learner in round {round}");
    }
    cluster.shutdown().await;
}
