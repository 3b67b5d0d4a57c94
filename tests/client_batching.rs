//! The `bank.v1` client's batching and leader hints, against real branches on `127.0.0.1:0`
//! (and, for batches whose RPC fails, a stub `Accounts` server that fails them on purpose):
//! concurrent writes on one client go out together in fewer RPCs than writes, each with its
//! own result or error; writes go to the hinted leader, and a stale hint costs nothing but a
//! retry.
//!
//! RPCs are counted with the branches' own metrics (`bank_requests_total`, one registry per
//! process, labelled by branch): each test's cluster has branch ids of its own, so tests that
//! run at once do not count each other's calls.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bank::bootstrap::local::{LocalCluster, Storage};
use bank::client::{Client, ClientConfig, ClientError, Outcome, Write};
use bank::ledger::RequestId;
use bank::proto::v1 as pb;
use bank::proto::v1::accounts_server::{Accounts, AccountsServer};
use common::{bank_client, leader_of, start_cluster_with, Deadline};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::{Code, Request, Response, Status};

/// Calls made at once on one client.
const CALLERS: u64 = 64;

/// Every answered call of `interface` at `branch` so far, whatever its outcome.
fn calls(branch: u64, interface: &str) -> u64 {
    let text = bank::server::metrics::global()
        .render()
        .expect("metrics render");
    let series = format!(r#"bank_requests_total{{branch="{branch}",interface="{interface}","#);
    text.lines()
        .filter(|line| line.starts_with(&series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Write RPCs (single writes and batches) the branches `ids` have answered so far.
fn write_calls(ids: &[u64]) -> u64 {
    ids.iter()
        .map(|&id| {
            [
                "deposit",
                "withdraw",
                "transfer",
                "open_account",
                "submit_batch",
            ]
            .iter()
            .map(|interface| calls(id, interface))
            .sum::<u64>()
        })
        .sum()
}

async fn cluster(ids: &[u64]) -> LocalCluster {
    start_cluster_with(ids, 0, Storage::Memory)
        .await
        .expect("cluster starts")
}

fn addresses(cluster: &LocalCluster, order: &[u64]) -> Vec<String> {
    let addresses = cluster.addresses();
    order.iter().map(|id| addresses[id].to_string()).collect()
}

/// 64 callers deposit at once through one client, each a different amount into an account of
/// its own: each gets its own result (its own request id, the balance its deposit made), and
/// the branches answered fewer write RPCs than there were writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_on_one_client_share_batches_each_with_its_own_result() {
    let ids = [101, 102, 103];
    let cluster = cluster(&ids).await;
    let client = Arc::new(bank_client(&addresses(&cluster, &ids)));
    let opened = client
        .submit_batch(
            &(0..CALLERS)
                .map(|k| Write::Open {
                    account: 1_000 + k,
                    opening_balance: 0,
                    overdraft_limit: 0,
                    balance_max: None,
                })
                .collect::<Vec<_>>(),
        )
        .await
        .expect("accounts open");
    assert_eq!(opened.reply.outcome(), Outcome::Ok);

    let before = write_calls(&ids);
    let mut callers = JoinSet::new();
    for k in 0..CALLERS {
        let client = client.clone();
        callers.spawn(async move { (k, client.deposit(1_000 + k, 7 * (k + 1)).await) });
    }
    let mut request_ids = BTreeSet::new();
    let mut log_indexes = BTreeSet::new();
    while let Some(joined) = callers.join_next().await {
        let (k, written) = joined.expect("caller runs");
        let written = written.unwrap_or_else(|e| panic!("caller {k}: {e}"));
        assert_eq!(written.outcome(), Outcome::Ok, "caller {k}");
        assert_eq!(
            written.result.balance,
            Some(7 * (k as i64 + 1)),
            "caller {k} sees its own deposit's balance"
        );
        assert_eq!(written.request_id.origin, client.origin());
        assert!(
            request_ids.insert(written.request_id),
            "ids are the callers' own"
        );
        log_indexes.insert(written.log_index);
    }
    let rpcs = write_calls(&ids) - before;
    assert!(
        rpcs < CALLERS,
        "{CALLERS} writes took {rpcs} write RPCs: nothing was batched"
    );
    assert!(
        log_indexes.len() < CALLERS as usize,
        "writes of one batch share its log index"
    );
    assert_eq!(client.writes_queued(), 0);
    // Every deposit applied once: the balances are the amounts.
    let read = client
        .get_balances(
            &(0..CALLERS).map(|k| 1_000 + k).collect::<Vec<_>>(),
            bank::client::ReadLevel::Linearizable,
        )
        .await
        .expect("read");
    for (k, balance) in read.balances.iter().enumerate() {
        assert_eq!(balance.balance, Some(7 * (k as i64 + 1)));
    }
    cluster.shutdown().await;
}

/// After one answer names the leader, a client whose first branch is a follower sends its
/// writes to the leader: the follower answers no more writes and the leader forwards none.
/// When the leader stops, the stale hint costs a retry and the writes still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_leader_hint_and_survive_a_stale_one() {
    let ids = [201, 202, 203];
    let mut cluster = cluster(&ids).await;
    let leader = leader_of(&cluster).await;
    let followers: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
    let order = [followers[0], followers[1], leader];
    let client = bank_client(&addresses(&cluster, &order));
    client
        .open_account(1, 0, 0, None)
        .await
        .expect("the first write, forwarded by a follower");

    let at_followers = || -> u64 { followers.iter().map(|&f| write_calls(&[f])).sum() };
    let forwarded = || calls(leader, "forward") + calls(leader, "forward_group");
    let (followers_before, forwarded_before) = (at_followers(), forwarded());
    let leader_before = write_calls(&[leader]);
    for k in 1..=20 {
        let written = client.deposit(1, 5).await.expect("deposit");
        assert_eq!(written.result.balance, Some(5 * k));
    }
    assert_eq!(
        at_followers(),
        followers_before,
        "no write went to a follower"
    );
    assert_eq!(
        forwarded(),
        forwarded_before,
        "the leader was forwarded nothing"
    );
    assert_eq!(write_calls(&[leader]) - leader_before, 20);

    // The hinted leader stops: the client's first attempt fails, the next branch serves it.
    cluster.stop(leader).await.expect("the leader stops");
    for k in 21..=25 {
        let written = client
            .deposit(1, 5)
            .await
            .expect("a deposit after the leader stopped");
        assert_eq!(written.result.balance, Some(5 * k));
    }
    // And the hint moves to the new leader: its writes are no longer forwarded.
    let new_leader = leader_of(&cluster).await;
    let forwarded_to_new = || calls(new_leader, "forward") + calls(new_leader, "forward_group");
    let before = forwarded_to_new();
    client.deposit(1, 5).await.expect("deposit");
    client.deposit(1, 5).await.expect("deposit");
    assert_eq!(forwarded_to_new(), before, "writes go to the new leader");
    cluster.shutdown().await;
}

/// A stub `Accounts` server: the first `Deposit` waits until released, later ones answer at
/// once; every `SubmitBatch` is recorded and answered `batch_status`.
#[derive(Clone)]
struct Stub {
    release: watch::Receiver<bool>,
    batches: Arc<Mutex<Vec<pb::SubmitBatchRequest>>>,
    batch_status: Code,
}

type Pages = Pin<Box<dyn futures::Stream<Item = Result<pb::AccountsPage, Status>> + Send>>;

fn ok_reply() -> pb::WriteReply {
    pb::WriteReply {
        result: Some(pb::WriteResult {
            outcome: pb::Outcome::Ok.into(),
            balance: Some(1),
            ..Default::default()
        }),
        log_index: 1,
    }
}

#[tonic::async_trait]
impl Accounts for Stub {
    async fn open_account(
        &self,
        _: Request<pb::OpenAccountRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn deposit(
        &self,
        _: Request<pb::DepositRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let mut release = self.release.clone();
        let _ = release.wait_for(|released| *released).await;
        Ok(Response::new(ok_reply()))
    }

    async fn withdraw(
        &self,
        _: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn transfer(
        &self,
        _: Request<pb::TransferRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        Err(Status::unimplemented("stub"))
    }

    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchReply>, Status> {
        self.batches
            .lock()
            .expect("batches")
            .push(request.into_inner());
        Err(Status::new(self.batch_status, "the stub fails every batch"))
    }

    async fn get_balances(
        &self,
        _: Request<pb::GetBalancesRequest>,
    ) -> Result<Response<pb::GetBalancesReply>, Status> {
        Err(Status::unimplemented("stub"))
    }

    type ListAccountsStream = Pages;

    async fn list_accounts(
        &self,
        _: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<Pages>, Status> {
        Err(Status::unimplemented("stub"))
    }
}

/// Serves `stub` on a fresh loopback port until `stop` is set; its address.
async fn serve(stub: Stub, stop: watch::Receiver<bool>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut stop = stop;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AccountsServer::new(stub))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                },
            ),
    );
    addr
}

/// Runs one deposit held in flight by the stub and `queued` more behind it (each under an id
/// the test chose), then releases the first; each queued caller's request id and answer, and
/// the batches the stub was sent.
async fn batch_against_stub(
    batch_status: Code,
    queued: u64,
) -> (
    Vec<(RequestId, Result<bank::client::Written, ClientError>)>,
    Vec<pb::SubmitBatchRequest>,
) {
    let (release, released) = watch::channel(false);
    let (stop, stopped) = watch::channel(false);
    let stub = Stub {
        release: released,
        batches: Arc::default(),
        batch_status,
    };
    let addr = serve(stub.clone(), stopped).await;
    let config = ClientConfig {
        deadline: Duration::from_millis(600),
        attempt_timeout: Duration::from_millis(600),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
        ..ClientConfig::default()
    };
    let client = Arc::new(Client::new(&[addr.to_string()], config).expect("client"));
    let first = {
        let client = client.clone();
        tokio::spawn(async move { client.deposit(1, 1).await })
    };
    // The first deposit is in flight once the client has the turn; then the others queue.
    let mut callers = JoinSet::new();
    let deadline = Deadline::after(Duration::from_secs(10)).polling(Duration::from_millis(5));
    for k in 0..queued {
        let id = client.next_request_id();
        let client = client.clone();
        callers.spawn(async move {
            let write = Write::Deposit {
                account: 10 + k,
                amount: 1,
            };
            (id, client.write_with_id(id, &write).await)
        });
    }
    while client.writes_queued() < queued as usize {
        deadline
            .pause(format!(
                "{queued} writes queued behind the one in flight, {} seen",
                client.writes_queued()
            ))
            .await;
    }
    release.send_replace(true);
    let first = first.await.expect("first caller runs");
    assert_eq!(first.expect("the first deposit").outcome(), Outcome::Ok);
    let mut answers = Vec::new();
    while let Some(joined) = callers.join_next().await {
        answers.push(joined.expect("caller runs"));
    }
    stop.send_replace(true);
    let batches = stub.batches.lock().expect("batches").clone();
    (answers, batches)
}

/// The ids a batch carries: its own and its items'.
fn ids_of(batch: &pb::SubmitBatchRequest) -> (Option<pb::RequestId>, Vec<pb::RequestId>) {
    use pb::batch_item::Write as W;
    let items = batch
        .items
        .iter()
        .filter_map(|item| match &item.write {
            Some(W::Deposit(deposit)) => deposit.request_id,
            _ => None,
        })
        .collect();
    (batch.request_id, items)
}

/// The batch's RPC fails until the deadline (UNAVAILABLE): every caller in it gets an
/// unknown outcome naming its own request id, and every retry resent the same batch id and
/// item ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_rpc_fails_gives_every_caller_an_error_naming_its_own_request_id() {
    let (answers, batches) = batch_against_stub(Code::Unavailable, 8).await;
    assert_eq!(answers.len(), 8);
    for (id, answer) in &answers {
        match answer {
            Err(error @ ClientError::OutcomeUnknown { .. }) => {
                assert_eq!(error.request_id().as_ref(), Some(id), "{error}");
                assert!(
                    error
                        .to_string()
                        .contains(&format!("{}:{}", id.origin, id.sequence)),
                    "{error}"
                );
            }
            other => panic!("expected an unknown outcome for {id:?}, got {other:?}"),
        }
    }
    assert!(
        batches.len() >= 2,
        "the batch was retried: {}",
        batches.len()
    );
    let (batch_id, items) = ids_of(&batches[0]);
    let expected: BTreeSet<(u64, u64)> = answers
        .iter()
        .map(|(id, _)| (id.origin, id.sequence))
        .collect();
    let sent: BTreeSet<(u64, u64)> = items.iter().map(|id| (id.origin, id.sequence)).collect();
    assert_eq!(sent, expected, "one batch carried every queued write");
    assert!(!expected.contains(&batch_id.map_or((0, 0), |id| (id.origin, id.sequence))));
    for retry in &batches[1..] {
        assert_eq!(
            ids_of(retry),
            (batch_id, items.clone()),
            "a retry keeps every id"
        );
    }
}

/// A batch refused whole (FAILED_PRECONDITION: not retried) gives every caller the refusal,
/// naming its own request id; one refused as not allowed (PERMISSION_DENIED) was not applied,
/// so its writes are sent again one by one, each getting its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_gives_every_caller_the_refusal_or_its_own_answer() {
    let (answers, batches) = batch_against_stub(Code::FailedPrecondition, 5).await;
    assert_eq!(batches.len(), 1, "a refusal is not retried");
    let mut refused: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for (id, answer) in &answers {
        match answer {
            Err(error @ ClientError::Refused { .. }) => {
                assert_eq!(error.request_id().as_ref(), Some(id), "{error}");
                refused.insert((id.origin, id.sequence), error.to_string());
            }
            other => panic!("expected a refusal for {id:?}, got {other:?}"),
        }
    }
    for ((origin, sequence), text) in &refused {
        assert!(
            text.contains(&format!("request {origin}:{sequence}")),
            "{text}"
        );
    }

    let (answers, batches) = batch_against_stub(Code::PermissionDenied, 5).await;
    assert_eq!(batches.len(), 1);
    for (id, answer) in &answers {
        let written = answer
            .as_ref()
            .unwrap_or_else(|e| panic!("{id:?} resent alone: {e}"));
        assert_eq!(written.request_id, *id);
        assert_eq!(written.outcome(), Outcome::Ok);
    }
}
