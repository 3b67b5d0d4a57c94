//! The leader's group committer, reached the way followers reach it (`ForwardGroup` on the
//! peer service): a forwarded group is applied once even when sent again, only by the leader,
//! refused whole when malformed, and merged with other submissions into shared log entries.

mod common;

use bank::bootstrap::local::LocalCluster;
use bank::ledger::{Command, Outcome, Proposal, RequestId, BATCH_ITEMS_MAX, ORIGINAL_ACCOUNT};
use bank::proto::peer::RaftPayload;
use bank::raft::codec::{decode, encode};
use common::{leader_of, peer, start_cluster};
use tokio::task::JoinSet;

/// `group` encoded as a `ForwardGroup` request, bounded like every call.
fn timed(group: &[Proposal]) -> tonic::Request<RaftPayload> {
    common::timed(encode(&group).expect("encode"))
}

fn item(sequence: u64, command: Command) -> Proposal {
    Proposal {
        request_id: RequestId {
            origin: 77,
            sequence,
        },
        command,
    }
}

fn deposit(sequence: u64, amount: u64) -> Proposal {
    item(
        sequence,
        Command::Deposit {
            account: ORIGINAL_ACCOUNT,
            amount_minor_units: amount,
        },
    )
}

fn withdraw(sequence: u64, amount: u64) -> Proposal {
    item(
        sequence,
        Command::Withdraw {
            account: ORIGINAL_ACCOUNT,
            amount_minor_units: amount,
        },
    )
}

fn applied_index(cluster: &LocalCluster, id: u64) -> u64 {
    common::last_applied(&cluster.branch(id).expect("branch").branch)
}

async fn balance(cluster: &LocalCluster, id: u64) -> Option<i64> {
    let branch = cluster.branch(id).expect("branch");
    branch
        .branch
        .read_balance(ORIGINAL_ACCOUNT)
        .await
        .expect("linearizable read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_group_is_applied_once_and_only_by_the_leader() {
    let cluster = start_cluster(3, 100).await;
    let leader = leader_of(&cluster).await;
    let addresses = cluster.addresses();
    let follower = addresses
        .keys()
        .copied()
        .find(|&id| id != leader)
        .expect("a follower");
    let group = [deposit(1, 10), withdraw(2, 1_000), deposit(3, 5)];

    // A branch that does not lead proposes nothing.
    let refused = peer(addresses[&follower])
        .forward_group(timed(&group))
        .await
        .expect_err("a follower refuses");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    assert_eq!(balance(&cluster, leader).await, Some(100));

    // The leader answers each item's outcome, in order.
    let answer = |reply: tonic::Response<RaftPayload>| -> (Vec<Outcome>, u64) {
        decode(reply.get_ref()).expect("reply decodes")
    };
    let (outcomes, index) = answer(
        peer(addresses[&leader])
            .forward_group(timed(&group))
            .await
            .expect("the leader proposes"),
    );
    assert_eq!(
        outcomes,
        [
            Outcome::Deposited {
                balance_minor_units: 110
            },
            Outcome::InsufficientFunds {
                balance_minor_units: 110
            },
            Outcome::Deposited {
                balance_minor_units: 115
            },
        ]
    );
    // Sent again, as a follower retries after a lost reply: the same answers, applied once.
    let (again, later) = answer(
        peer(addresses[&leader])
            .forward_group(timed(&group))
            .await
            .expect("the leader answers a resent group"),
    );
    assert_eq!(again, outcomes);
    assert!(later > index, "{later} > {index}");
    assert_eq!(balance(&cluster, leader).await, Some(115));

    // Malformed groups are refused whole, before anything is proposed: one batch inside
    // would make the ledger refuse the whole merged entry, other customers' items with it.
    let oversized: Vec<Proposal> = (0..=BATCH_ITEMS_MAX as u64)
        .map(|k| deposit(1_000 + k, 1))
        .collect();
    let nested = [
        deposit(20, 1),
        item(21, Command::Batch(vec![deposit(22, 1)])),
    ];
    for (what, bad) in [
        ("empty", &[][..]),
        ("oversized", &oversized[..]),
        ("nested", &nested[..]),
    ] {
        let refused = peer(addresses[&leader])
            .forward_group(timed(bad))
            .await
            .expect_err(what);
        assert_eq!(
            refused.code(),
            tonic::Code::InvalidArgument,
            "{what}: {refused}"
        );
    }
    assert_eq!(balance(&cluster, leader).await, Some(115));
    cluster.shutdown().await;
}

/// 100 groups sent at once share log entries: the leader's committer merges what it is sent
/// while an entry is in flight. Proposed one entry each, they would take 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_forwarded_groups_share_log_entries() {
    const GROUPS: u64 = 100;
    let cluster = start_cluster(3, 0).await;
    let leader = leader_of(&cluster).await;
    let client = peer(cluster.addresses()[&leader]);
    let before = applied_index(&cluster, leader);
    let mut calls = JoinSet::new();
    for k in 0..GROUPS {
        let mut client = client.clone();
        calls.spawn(async move { client.forward_group(timed(&[deposit(k, 1)])).await });
    }
    while let Some(call) = calls.join_next().await {
        let reply = call.expect("join").expect("the leader proposes");
        let (outcomes, _): (Vec<Outcome>, u64) = decode(reply.get_ref()).expect("decodes");
        assert!(
            matches!(outcomes[..], [Outcome::Deposited { .. }]),
            "{outcomes:?}"
        );
    }
    let entries = applied_index(&cluster, leader) - before;
    assert!(
        entries < GROUPS,
        "{GROUPS} concurrent groups took {entries} log entries: nothing was merged"
    );
    assert_eq!(balance(&cluster, leader).await, Some(GROUPS as i64));
    cluster.shutdown().await;
}
