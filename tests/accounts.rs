//! The `bank.v1.Accounts` API over real gRPC on a real 3-branch cluster: every operation and
//! outcome, exactly-once request ids (also across a leader change), and read levels.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bank::client::{Client, ClientConfig, ClientError, Outcome, ReadLevel, Write};
use bank::ledger::{RequestId, BATCH_ITEMS_MAX};
use bank::proto::v1 as pb;
use common::{accounts_client, bank_client, leader_of, start_cluster, timed};
use tokio::task::JoinSet;

async fn balances(client: &Client, accounts: &[u64], level: ReadLevel) -> Vec<Option<i64>> {
    client
        .get_balances(accounts, level)
        .await
        .expect("balances")
        .balances
        .iter()
        .map(|b| b.balance)
        .collect()
}

fn ok(written: &bank::client::Written) -> (Option<i64>, Option<i64>) {
    assert_eq!(written.outcome(), Outcome::Ok, "{written:?}");
    (written.result.balance, written.result.to_balance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_and_outcome_over_grpc() {
    let cluster = start_cluster(3, 0).await;
    let addresses: Vec<_> = cluster.addresses().into_values().collect();
    let client = bank_client(&addresses);

    assert_eq!(
        ok(&client.open_account(1, 100, 0, None).await.expect("open")),
        (Some(100), None)
    );
    assert_eq!(
        ok(&client
            .open_account(2, 0, 50, Some(1_000))
            .await
            .expect("open")),
        (Some(0), None)
    );
    let exists = client.open_account(1, 5, 0, None).await.expect("open");
    assert_eq!(
        (exists.outcome(), exists.result.balance),
        (Outcome::AccountExists, Some(100))
    );
    assert_eq!(
        ok(&client.deposit(1, 20).await.expect("deposit")),
        (Some(120), None)
    );
    let refused = client.withdraw(1, 200).await.expect("withdraw");
    assert_eq!(
        (refused.outcome(), refused.result.balance),
        (Outcome::InsufficientFunds, Some(120))
    );
    // Account 2 may go down to -50.
    assert_eq!(
        ok(&client.withdraw(2, 30).await.expect("withdraw")),
        (Some(-30), None)
    );
    let refused = client.withdraw(2, 30).await.expect("withdraw");
    assert_eq!(
        (refused.outcome(), refused.result.balance),
        (Outcome::InsufficientFunds, Some(-30))
    );
    let over = client.deposit(2, 1_031).await.expect("deposit");
    assert_eq!(
        (over.outcome(), over.result.balance),
        (Outcome::BalanceLimitExceeded, Some(-30))
    );
    assert_eq!(
        ok(&client.transfer(1, 2, 50).await.expect("transfer")),
        (Some(70), Some(20))
    );
    let unknown = client.transfer(1, 3, 5).await.expect("transfer");
    assert_eq!(
        (unknown.outcome(), unknown.result.unknown_account),
        (Outcome::UnknownAccount, Some(3))
    );
    for invalid in [
        Write::Deposit {
            account: 1,
            amount: 0,
        },
        Write::Transfer {
            from: 1,
            to: 1,
            amount: 5,
        },
        Write::Open {
            account: 4,
            opening_balance: 10,
            overdraft_limit: 0,
            balance_max: Some(5),
        },
    ] {
        let written = client.write(invalid.clone()).await.expect("write");
        assert_eq!(written.outcome(), Outcome::InvalidAmount, "{invalid:?}");
    }

    // A batch: each item on its own; a refused item does not stop the ones after it.
    let batch = client
        .submit_batch(&[
            Write::Deposit {
                account: 1,
                amount: 5,
            },
            Write::Withdraw {
                account: 2,
                amount: 1_000,
            },
            Write::Transfer {
                from: 2,
                to: 1,
                amount: 10,
            },
            Write::Open {
                account: 3,
                opening_balance: 7,
                overdraft_limit: 0,
                balance_max: None,
            },
        ])
        .await
        .expect("batch");
    assert_eq!(batch.reply.outcome(), Outcome::Ok);
    let outcomes: Vec<_> = batch.reply.results.iter().map(|r| r.outcome()).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Ok,
            Outcome::InsufficientFunds,
            Outcome::Ok,
            Outcome::Ok
        ]
    );
    assert_eq!(batch.reply.results[2].balance, Some(10));
    assert_eq!(batch.reply.results[2].to_balance, Some(85));

    for addr in &addresses {
        let at = bank_client(&[*addr]);
        assert_eq!(
            balances(&at, &[1, 2, 3, 9], ReadLevel::Linearizable).await,
            [Some(85), Some(10), Some(7), None],
            "linearizable read at {addr}"
        );
    }

    // Malformed input is INVALID_ARGUMENT, not a business outcome.
    let too_many: Vec<Write> = (0..=BATCH_ITEMS_MAX)
        .map(|_| Write::Deposit {
            account: 1,
            amount: 1,
        })
        .collect();
    match client.submit_batch(&too_many).await {
        Err(ClientError::Refused { cause, .. }) => {
            assert_eq!(cause.code, tonic::Code::InvalidArgument, "{cause}");
            assert!(cause.message.contains("8190"), "{cause}");
        }
        other => panic!("an oversized batch was not refused: {other:?}"),
    }
    let mut grpc = accounts_client(addresses[0]);
    let zero_origin = grpc
        .deposit(timed(pb::DepositRequest {
            request_id: Some(pb::RequestId {
                origin: 0,
                sequence: 1,
            }),
            account: 1,
            amount: 5,
        }))
        .await
        .expect_err("a zero origin is refused");
    assert_eq!(zero_origin.code(), tonic::Code::InvalidArgument);
    let no_accounts = grpc
        .get_balances(timed(pb::GetBalancesRequest::default()))
        .await
        .expect_err("an empty read is refused");
    assert_eq!(no_accounts.code(), tonic::Code::InvalidArgument);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_is_applied_once() {
    let cluster = start_cluster(3, 0).await;
    let addresses: Vec<_> = cluster.addresses().into_values().collect();
    let client = bank_client(&addresses);
    ok(&client.open_account(1, 100, 0, None).await.expect("open"));

    // The same id and body, sent twice at every branch: applied once, same answer each time.
    let id = client.next_request_id();
    let deposit = Write::Deposit {
        account: 1,
        amount: 25,
    };
    let first = client.write_with_id(id, &deposit).await.expect("deposit");
    assert_eq!(ok(&first), (Some(125), None));
    for addr in &addresses {
        let at = bank_client(&[*addr]);
        for _ in 0..2 {
            let again = at.write_with_id(id, &deposit).await.expect("resend");
            assert_eq!(again.result, first.result, "resent at {addr}");
        }
    }
    // The same id with another body: "exists with different fields", nothing applied.
    let reused = client
        .write_with_id(
            id,
            &Write::Deposit {
                account: 1,
                amount: 26,
            },
        )
        .await
        .expect("reused");
    assert_eq!(reused.outcome(), Outcome::RequestIdReused);
    assert_eq!(
        balances(&client, &[1], ReadLevel::Linearizable).await,
        [Some(125)]
    );

    // A batch resent under its ids answers each item's first result and applies nothing.
    let batch = pb::SubmitBatchRequest {
        request_id: Some(pb::RequestId {
            origin: client.origin(),
            sequence: 1_000,
        }),
        items: (1..=3)
            .map(|k| pb::BatchItem {
                write: Some(pb::batch_item::Write::Withdraw(pb::WithdrawRequest {
                    request_id: Some(pb::RequestId {
                        origin: client.origin(),
                        sequence: 1_000 + k,
                    }),
                    account: 1,
                    amount: 50,
                })),
            })
            .collect(),
    };
    let first = accounts_client(addresses[0])
        .submit_batch(timed(batch.clone()))
        .await
        .expect("batch")
        .into_inner();
    let outcomes: Vec<_> = first.results.iter().map(|r| r.outcome()).collect();
    assert_eq!(
        outcomes,
        [Outcome::Ok, Outcome::Ok, Outcome::InsufficientFunds]
    );
    let again = accounts_client(addresses[2])
        .submit_batch(timed(batch.clone()))
        .await
        .expect("batch resent")
        .into_inner();
    assert_eq!(again.results, first.results);
    assert!(again.log_index >= first.log_index);
    let mut changed = batch;
    if let Some(id) = changed.request_id.as_mut() {
        id.sequence = 2_000;
    }
    changed.items.truncate(2);
    let replayed_items = accounts_client(addresses[1])
        .submit_batch(timed(changed))
        .await
        .expect("new batch, old items")
        .into_inner();
    assert_eq!(replayed_items.results, first.results[..2]);
    assert_eq!(
        balances(&client, &[1], ReadLevel::Linearizable).await,
        [Some(25)]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_levels() {
    let cluster = start_cluster(3, 0).await;
    let leader = leader_of(&cluster).await;
    let addresses = cluster.addresses();
    let follower = *addresses
        .iter()
        .find(|(&id, _)| id != leader)
        .map(|(_, addr)| addr)
        .expect("a follower");
    let writer = bank_client(&[addresses[&leader]]);
    ok(&writer.open_account(1, 0, 0, None).await.expect("open"));
    let mut at_follower = accounts_client(follower);
    // Read-your-writes at a follower, right after each write at the leader, with the token.
    for round in 1..=100 {
        let written = writer.deposit(1, 1).await.expect("deposit");
        assert_eq!(written.result.balance, Some(round));
        let read = at_follower
            .get_balances(timed(pb::GetBalancesRequest {
                accounts: vec![1],
                read_level: pb::ReadLevel::ReadYourWrites.into(),
                min_log_index: written.log_index,
            }))
            .await
            .expect("read your writes")
            .into_inner();
        assert_eq!(read.balances[0].balance, Some(round), "round {round}");
        assert!(read.applied_index >= written.log_index);
    }
    // The client passes its own token.
    let follower_reader = bank_client(&[follower]);
    assert_eq!(
        balances(&follower_reader, &[1], ReadLevel::Linearizable).await,
        [Some(100)]
    );
    // LOCAL is always served, whatever this branch has applied.
    let local = at_follower
        .get_balances(timed(pb::GetBalancesRequest {
            accounts: vec![1, 2],
            read_level: pb::ReadLevel::Local.into(),
            min_log_index: 0,
        }))
        .await
        .expect("local read")
        .into_inner();
    assert_eq!(local.balances[1].balance, None);
    assert!(local.balances[0].balance.unwrap_or(0) <= 100);
    // A token far ahead of the log is never satisfied: the read gives up at its deadline.
    let mut request = tonic::Request::new(pb::GetBalancesRequest {
        accounts: vec![1],
        read_level: pb::ReadLevel::ReadYourWrites.into(),
        min_log_index: u64::MAX / 2,
    });
    request.set_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let status = at_follower
        .get_balances(request)
        .await
        .expect_err("a token from the future is not served");
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Unavailable | tonic::Code::Cancelled
        ),
        "{status}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    cluster.shutdown().await;
}

/// Writes are in flight at the leader when it stops. Every one of them is resent, under its
/// own request id, to the other branches: each is applied exactly once, whether the first
/// attempt committed, was lost with the leader, or never got an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_applied_once_across_a_leader_change() {
    const WRITES: u64 = 40;
    let mut cluster = start_cluster(3, 0).await;
    let leader = leader_of(&cluster).await;
    let addresses = cluster.addresses();
    let others: Vec<SocketAddr> = addresses
        .iter()
        .filter(|(&id, _)| id != leader)
        .map(|(_, &addr)| addr)
        .collect();
    let survivors = bank_client(&others);
    let opened = survivors.open_account(1, 0, 0, None).await.expect("open");
    ok(&opened);

    // Deposits of 1..=WRITES under fixed ids: the total tells exactly what was applied. Four
    // writers at the leader, each sending its deposits one after another.
    let origin = survivors.origin();
    let ids: Vec<RequestId> = (1..=WRITES)
        .map(|k| RequestId {
            origin,
            sequence: 10_000 + k,
        })
        .collect();
    let config = ClientConfig {
        deadline: Duration::from_millis(1_500),
        attempt_timeout: Duration::from_millis(1_500),
        ..ClientConfig::default()
    };
    let at_leader = std::sync::Arc::new(
        Client::new(&[addresses[&leader].to_string()], config).expect("client"),
    );
    const WRITERS: u64 = 4;
    let mut in_flight = JoinSet::new();
    for writer in 0..WRITERS {
        let at_leader = at_leader.clone();
        let ids = ids.clone();
        in_flight.spawn(async move {
            let mut results = Vec::new();
            for k in (1..=WRITES).filter(|k| k % WRITERS == writer) {
                let write = Write::Deposit {
                    account: 1,
                    amount: k,
                };
                let id = ids[(k - 1) as usize];
                let result = at_leader.write_with_id(id, &write).await;
                let failed = result.is_err();
                results.push((k, result));
                if failed {
                    // Its outcome is unknown: stop here; every id is resent below anyway.
                    break;
                }
            }
            results
        });
    }
    // Stop the leader once a few deposits are applied there: the rest are in flight or unsent.
    let leader_branch = cluster.branch(leader).expect("leader").branch.clone();
    common::wait_applied(
        &leader_branch,
        opened.log_index + WRITES / 4,
        Duration::from_secs(10),
    )
    .await;
    cluster.stop_branch(leader).await.expect("leader stops");

    let mut first_attempts = std::collections::BTreeMap::new();
    let mut unknown = 0;
    while let Some(joined) = in_flight.join_next().await {
        for (k, result) in joined.expect("writer task") {
            match result {
                Ok(written) => {
                    first_attempts.insert(k, written.result);
                }
                Err(ClientError::OutcomeUnknown { .. }) => unknown += 1,
                Err(other) => panic!("deposit {k}: unexpected error {other}"),
            }
        }
    }
    assert!(unknown > 0, "the leader stopped with no write in flight");
    assert!(
        !first_attempts.is_empty(),
        "the leader stopped before any write"
    );

    // Resend every id, twice, at the surviving branches.
    for _ in 0..2 {
        for (k, id) in (1..=WRITES).zip(ids.clone()) {
            let write = Write::Deposit {
                account: 1,
                amount: k,
            };
            let again = survivors.write_with_id(id, &write).await.expect("resent");
            assert_eq!(again.outcome(), Outcome::Ok, "deposit {k}: {again:?}");
            if let Some(first) = first_attempts.get(&k) {
                assert_eq!(&again.result, first, "deposit {k} answered differently");
            }
        }
    }
    let total = WRITES * (WRITES + 1) / 2;
    assert_eq!(
        balances(&survivors, &[1], ReadLevel::Linearizable).await,
        [Some(total as i64)],
        "{} first attempts answered, {unknown} unknown",
        first_attempts.len()
    );
    let states = cluster.settled_states().await.expect("survivors settle");
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].1.ledger, states[1].1.ledger);
    eprintln!(
        "leader {leader} stopped: {} first attempts answered, {unknown} unknown, the rest unsent; all {WRITES} applied once",
        first_attempts.len()
    );
    cluster.shutdown().await;
}
