//! Overload: far more concurrent customer requests than a branch's bound get clean
//! RESOURCE_EXHAUSTED answers, nothing refused is applied, and the branch stays responsive.

mod common;

use common::{call, client};
use tokio::task::JoinSet;

/// The bound on customer requests in flight, per branch, in this test process.
const REQUESTS_MAX: usize = 4;

/// Concurrent deposits sent at once: a hundred times the bound.
const REQUESTS: usize = 400;

/// Separate connections, so the server sees the requests at once rather than queued on one.
const CONNECTIONS: usize = 8;

const AMOUNT: i32 = 5;

/// [`CONNECTIONS`] separate connections to `addr`.
async fn connections(addr: std::net::SocketAddr) -> Vec<tonic::transport::Channel> {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = common::endpoint(addr).connect().await.expect("connect");
        channels.push(channel);
    }
    channels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_requests_are_shed_cleanly_and_the_branch_stays_responsive() {
    let initial: i32 = 1_000;
    let cluster = common::start_cluster_with_requests_max(3, initial as u64, REQUESTS_MAX).await;
    let addr = cluster.addresses()[&2];

    let clients: Vec<_> = connections(addr)
        .await
        .into_iter()
        .map(bank::proto::customer::branch_client::BranchClient::new)
        .collect();
    let mut customers = JoinSet::new();
    for request in 0..REQUESTS {
        let mut customer = clients[request % CONNECTIONS].clone();
        customers.spawn(async move { call(&mut customer, "deposit", AMOUNT).await });
    }
    let (mut succeeded, mut shed) = (0, 0);
    while let Some(answer) = customers.join_next().await {
        match answer.expect("customer task") {
            Ok(reply) => {
                assert_eq!(reply.result, "success", "{reply:?}");
                succeeded += 1;
            }
            Err(status) => {
                assert_eq!(
                    status.code(),
                    tonic::Code::ResourceExhausted,
                    "only shedding is expected: {status:?}"
                );
                assert!(status.message().contains("retry later"), "{status:?}");
                shed += 1;
            }
        }
    }
    assert_eq!(succeeded + shed, REQUESTS);
    assert!(
        shed > 0,
        "{REQUESTS} concurrent requests never exceeded {REQUESTS_MAX}"
    );
    assert!(succeeded > 0);

    // Still responsive, and exactly the accepted deposits were applied.
    let reply = call(&mut client(addr).await, "query", 0)
        .await
        .expect("query after the burst");
    assert_eq!(reply.balance, initial + AMOUNT * succeeded as i32);
    cluster.shutdown().await;
}

/// The same bound covers the `bank.v1.Accounts` API: a burst of deposits far over it gets
/// RESOURCE_EXHAUSTED for the excess, exactly the accepted ones are applied, and the branch
/// answers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accounts_api_sheds_excess_requests_under_the_same_bound() {
    use bank::proto::v1 as pb;
    use pb::accounts_client::AccountsClient;

    let cluster = common::start_cluster_with_requests_max(3, 0, REQUESTS_MAX).await;
    let addr = cluster.addresses()[&2];
    let clients: Vec<_> = connections(addr)
        .await
        .into_iter()
        .map(AccountsClient::new)
        .collect();
    let id = |sequence: u64| {
        Some(pb::RequestId {
            origin: 0x0E0E,
            sequence,
        })
    };
    const ACCOUNT: u64 = 77;
    clients[0]
        .clone()
        .open_account(pb::OpenAccountRequest {
            request_id: id(1),
            account: ACCOUNT,
            opening_balance: 0,
            overdraft_limit: 0,
            balance_max: None,
        })
        .await
        .expect("open");

    let mut customers = JoinSet::new();
    for request in 0..REQUESTS {
        let mut customer = clients[request % CONNECTIONS].clone();
        customers.spawn(async move {
            customer
                .deposit(pb::DepositRequest {
                    request_id: id(2 + request as u64),
                    account: ACCOUNT,
                    amount: AMOUNT as u64,
                })
                .await
        });
    }
    let (mut succeeded, mut shed) = (0u64, 0);
    while let Some(answer) = customers.join_next().await {
        match answer.expect("customer task") {
            Ok(_) => succeeded += 1,
            Err(status) => {
                assert_eq!(
                    status.code(),
                    tonic::Code::ResourceExhausted,
                    "only shedding is expected: {status:?}"
                );
                shed += 1;
            }
        }
    }
    assert!(
        shed > 0,
        "{REQUESTS} concurrent requests never exceeded {REQUESTS_MAX}"
    );
    assert!(succeeded > 0);

    let reply = clients[0]
        .clone()
        .get_balances(pb::GetBalancesRequest {
            accounts: vec![ACCOUNT],
            read_level: pb::ReadLevel::Linearizable as i32,
            min_log_index: 0,
        })
        .await
        .expect("a read after the burst")
        .into_inner();
    assert_eq!(
        reply.balances.first().and_then(|b| b.balance),
        Some(i64::from(AMOUNT) * succeeded as i64)
    );
    cluster.shutdown().await;
}
