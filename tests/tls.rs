//! TLS and tokens on real branches (`bank::bootstrap::standalone`, as `bank branch` runs them) on
//! `127.0.0.1:0` ports, with certificates made by `bank::tls::generate` (`bank certs`):
//! customers over TLS, mutual TLS between branches, a rogue peer refused, tokens restricted to
//! accounts, and the CLI's checks.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bank::bootstrap::standalone::{start, BranchConfig, RunningBranch};
use bank::client::{Client, ClientConfig, ClientError, ReadLevel, Token, Write};
use bank::ledger::{Command as LedgerCommand, Proposal, RequestId, ORIGINAL_ACCOUNT};
use bank::proto::customer::branch_client::BranchClient;
use bank::proto::customer::Request as CustomerRequest;
use bank::proto::peer::peer_client::PeerClient;
use bank::proto::peer::{ReadIndexRequest, StatusRequest};
use bank::raft::codec::encode;
use bank::raft::TypeConfig;
use bank::server::auth::Tokens;
use bank::tls::{CertFiles, TlsFiles};
use bank::BranchId;
use common::{bank, Deadline};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

const INITIAL: u64 = 500;
/// Bound on a cluster forming (its shared account readable at every branch).
const FORM_DEADLINE: Duration = Duration::from_secs(60);
/// Bound on any one call in these tests.
const CALL_DEADLINE: Duration = Duration::from_secs(5);

const ALICE: &str = "alice-token-0123456789abcdef";
const OPS: &str = "ops-token-0123456789abcdef00";
const ALICE_ACCOUNT: u64 = 11;
const OTHER_ACCOUNT: u64 = 12;

struct TlsCluster {
    branches: Vec<RunningBranch>,
    addresses: BTreeMap<BranchId, SocketAddr>,
    certs: CertFiles,
    _dir: tempfile::TempDir,
}

impl TlsCluster {
    /// Three branches with TLS from a new test CA, and `tokens` if given; returns once every
    /// branch has applied the genesis entry.
    async fn start(tokens: Option<&str>) -> TlsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = bank::tls::generate(&dir.path().join("certs"), &[], false).expect("certs");
        let tls = bank::tls::load_branch(&certs.branch_files()).expect("branch TLS loads");
        let tokens = tokens.map(|text| Arc::new(Tokens::parse(text).expect("token file")));
        let listeners = common::loopback_listeners(&[1, 2, 3]).await;
        let addresses = common::addresses_of(&listeners);
        let mut branches = Vec::new();
        // The lowest id creates the cluster once every other branch answers: it starts last.
        for (id, listener) in listeners.into_iter().rev() {
            let config = BranchConfig {
                tls: Some(tls.clone()),
                tokens: tokens.clone(),
                ..common::standalone_config(id, listener, &addresses, dir.path(), INITIAL)
            };
            branches.push(start(config).await.expect("branch starts"));
        }
        let cluster = TlsCluster {
            branches,
            addresses,
            certs,
            _dir: dir,
        };
        cluster.wait_formed().await;
        cluster
    }

    /// Until every branch has applied the genesis entry (its shared account exists).
    async fn wait_formed(&self) {
        let deadline = Deadline::after(FORM_DEADLINE).polling(Duration::from_millis(20));
        for running in &self.branches {
            loop {
                let opened = running
                    .branch
                    .local_balances(&[ORIGINAL_ACCOUNT])
                    .ok()
                    .is_some_and(|(balances, _)| balances[0].is_some());
                if opened {
                    break;
                }
                deadline
                    .pause(format!(
                        "branch {} did not apply the genesis entry",
                        running.branch.id
                    ))
                    .await;
            }
        }
    }

    fn addr(&self, id: BranchId) -> SocketAddr {
        self.addresses[&id]
    }

    /// A customer's TLS: trusts the cluster's CA, presents no certificate.
    fn customer_tls(&self) -> ClientTlsConfig {
        bank::tls::load_client(&self.certs.ca_cert, None).expect("customer TLS")
    }

    /// A client for every branch, over TLS, with `token`.
    fn client(&self, token: Option<&str>) -> Client {
        let addresses: Vec<String> = self.addresses.values().map(|a| a.to_string()).collect();
        let config = ClientConfig {
            deadline: Duration::from_secs(15),
            tls: Some(self.customer_tls()),
            token: token.map(|t| Token::new(t).expect("token")),
            ..ClientConfig::default()
        };
        Client::new(&addresses, config).expect("client")
    }

    /// Every branch's (term, last log index, shared balance).
    fn raft_state(&self) -> Vec<(u64, Option<u64>, Option<i64>)> {
        self.branches
            .iter()
            .map(|running| {
                let (term, last_log_index) = common::term_and_last_log_index(&running.branch);
                let balance = running
                    .branch
                    .local_balances(&[ORIGINAL_ACCOUNT])
                    .expect("balances")
                    .0[0];
                (term, last_log_index, balance)
            })
            .collect()
    }

    async fn shutdown(self) {
        for running in self.branches {
            running.shutdown().await;
        }
    }
}

async fn tls_channel(addr: SocketAddr, tls: ClientTlsConfig) -> Result<Channel, String> {
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(CALL_DEADLINE)
        .connect()
        .await
        .map_err(|e| bank::tls::error_chain(&e))
}

/// `message` as a request bounded by this file's [`CALL_DEADLINE`].
fn timed<T>(message: T) -> tonic::Request<T> {
    common::timed_within(message, CALL_DEADLINE)
}

fn refused_code(error: ClientError) -> tonic::Code {
    match error {
        ClientError::Refused { cause, .. } => cause.code,
        other => panic!("expected a refusal, got {other}"),
    }
}

/// A TLS cluster forms (its branches replicate over mutual TLS) and serves customers over TLS:
/// a deposit at one branch, then a linearizable read at another. Plaintext to the same port
/// gets nowhere; `bank status` needs the cluster's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_customers_and_refuses_plaintext() {
    let cluster = TlsCluster::start(None).await;
    let client = cluster.client(None);
    let written = client.deposit(ORIGINAL_ACCOUNT, 25).await.expect("deposit");
    assert_eq!(written.result.balance, Some(INITIAL as i64 + 25));
    let at_branch_3 = Client::new(
        &[cluster.addr(3).to_string()],
        ClientConfig {
            tls: Some(cluster.customer_tls()),
            ..ClientConfig::default()
        },
    )
    .expect("client");
    let read = at_branch_3
        .get_balances(&[ORIGINAL_ACCOUNT], ReadLevel::Linearizable)
        .await
        .expect("linearizable read over TLS");
    assert_eq!(read.balances[0].balance, Some(INITIAL as i64 + 25));

    // The original customer API over TLS too.
    let channel = tls_channel(cluster.addr(2), cluster.customer_tls())
        .await
        .expect("TLS connection");
    let reply = BranchClient::new(channel)
        .msg_delivery(timed(CustomerRequest {
            id: 1,
            interface: "query".into(),
            money: 0,
            writeset: vec![],
        }))
        .await
        .expect("query over TLS")
        .into_inner();
    assert_eq!(reply.balance, INITIAL as i32 + 25);

    // Plaintext to the TLS port: no answer at all.
    let plaintext = Client::new(
        &[cluster.addr(1).to_string()],
        ClientConfig {
            deadline: Duration::from_millis(800),
            ..ClientConfig::default()
        },
    )
    .expect("client");
    let error = plaintext
        .get_balances(&[ORIGINAL_ACCOUNT], ReadLevel::Local)
        .await
        .expect_err("a plaintext client must not be served");
    // HTTP/2 over a TLS port breaks the connection: a transport failure, never an answer.
    match &error {
        ClientError::Unreachable { .. } => {}
        ClientError::Refused { cause, .. } => assert!(
            matches!(cause.code, tonic::Code::Internal | tonic::Code::Unknown),
            "plaintext: {error}"
        ),
        other => panic!("plaintext: {other}"),
    }

    // Status is peer traffic: with the cluster's certificate it shows every branch...
    let operator = bank::tls::load_client(
        &cluster.certs.ca_cert,
        Some((&cluster.certs.branch_cert, &cluster.certs.branch_key)),
    )
    .expect("operator TLS");
    let status =
        bank::client::status::cluster_status_with(&cluster.addr(1).to_string(), Some(&operator))
            .await
            .expect("status with the cluster's certificate");
    assert_eq!(status.branches.len(), 3);
    assert!(status.branches.iter().all(|b| b.reachable), "{status:?}");
    // ... and without it, nothing.
    let refused = bank::client::status::cluster_status_with(
        &cluster.addr(1).to_string(),
        Some(&cluster.customer_tls()),
    )
    .await
    .expect_err("status without a cluster certificate");
    assert!(matches!(refused, ClientError::Refused { .. }), "{refused}");
    assert!(refused.to_string().contains("--tls-cert"), "{refused}");
    cluster.shutdown().await;
}

/// A client presenting a certificate signed by another CA fails the TLS handshake: it never
/// reaches any service, and the cluster is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let cluster = TlsCluster::start(None).await;
    let before = cluster.raft_state();
    let rogue_dir = tempfile::tempdir().expect("temp dir");
    let rogue = bank::tls::generate(rogue_dir.path(), &[], false).expect("rogue certs");
    // It trusts the real CA (so it accepts the branch) but presents its own certificate.
    let tls = bank::tls::load_client(
        &cluster.certs.ca_cert,
        Some((&rogue.branch_cert, &rogue.branch_key)),
    )
    .expect("rogue TLS");
    match tls_channel(cluster.addr(1), tls).await {
        // The connection itself fails (the server's alert arrives during the handshake).
        Err(error) => {
            let lowered = error.to_lowercase();
            assert!(
                lowered.contains("certificate")
                    || lowered.contains("alert")
                    || lowered.contains("tls")
                    || lowered.contains("connection"),
                "expected a TLS handshake failure, got: {error}"
            );
        }
        // TLS 1.3 finishes the client's side of the handshake before the server checks the
        // client's certificate: the server then drops the connection, and the first call
        // fails with a transport error from the client's own stack, not a status the server
        // sent.
        Ok(channel) => {
            let status = PeerClient::new(channel)
                .read_index(timed(ReadIndexRequest {}))
                .await
                .expect_err("a rogue certificate must not be served");
            let transport = std::error::Error::source(&status)
                .is_some_and(|source| source.is::<tonic::transport::Error>());
            assert!(transport, "not a transport failure: {status:?}");
        }
    }
    // The control: the same call with the cluster's own certificate is served.
    let member = bank::tls::load_client(
        &cluster.certs.ca_cert,
        Some((&cluster.certs.branch_cert, &cluster.certs.branch_key)),
    )
    .expect("member TLS");
    let channel = tls_channel(cluster.addr(1), member)
        .await
        .expect("the cluster's certificate connects");
    let served = PeerClient::new(channel)
        .status(timed(StatusRequest {}))
        .await
        .expect("the cluster's certificate is served");
    assert_eq!(served.get_ref().id, 1);
    assert_eq!(cluster.raft_state(), before, "the cluster changed");
    cluster.shutdown().await;
}

/// A process with TLS but no cluster certificate calls every peer RPC, with a vote in a huge
/// term and log entries that would add money: each is UNAUTHENTICATED, and no branch's term,
/// log or balance moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_certificate_cannot_vote_or_append() {
    let cluster = TlsCluster::start(None).await;
    let before = cluster.raft_state();
    let huge_term = 1u64 << 40;
    let rogue_id: BranchId = 99;
    let vote = openraft::Vote::new_committed(huge_term, rogue_id);
    let vote_request = openraft::raft::VoteRequest::<BranchId> {
        vote: openraft::Vote::new(huge_term, rogue_id),
        last_log_id: Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(huge_term, rogue_id),
            1_000_000,
        )),
    };
    let theft = openraft::Entry::<TypeConfig> {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(huge_term, rogue_id), 1),
        payload: openraft::EntryPayload::Normal(Proposal {
            request_id: RequestId {
                origin: 7,
                sequence: 1,
            },
            command: LedgerCommand::Deposit {
                account: ORIGINAL_ACCOUNT,
                amount_minor_units: 1_000_000,
            },
        }),
    };
    let append = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: None,
        entries: vec![theft],
        leader_commit: Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(huge_term, rogue_id),
            1,
        )),
    };
    let vote_payload = encode(&vote_request).expect("encode");
    let append_payload = encode(&append).expect("encode");
    for (&id, &addr) in &cluster.addresses {
        let channel = tls_channel(addr, cluster.customer_tls())
            .await
            .expect("server-authenticated TLS works without a client certificate");
        let mut rogue = PeerClient::new(channel);
        let calls = [
            ("Vote", rogue.vote(timed(vote_payload.clone())).await.err()),
            (
                "AppendEntries",
                rogue
                    .append_entries(timed(append_payload.clone()))
                    .await
                    .err(),
            ),
            (
                "InstallSnapshot",
                rogue
                    .install_snapshot(timed(append_payload.clone()))
                    .await
                    .err(),
            ),
            (
                "Forward",
                rogue.forward(timed(append_payload.clone())).await.err(),
            ),
            (
                "ForwardGroup",
                rogue
                    .forward_group(timed(append_payload.clone()))
                    .await
                    .err(),
            ),
            (
                "ChangeMembers",
                rogue
                    .change_members(timed(append_payload.clone()))
                    .await
                    .err(),
            ),
            (
                "ReadIndex",
                rogue.read_index(timed(ReadIndexRequest {})).await.err(),
            ),
            ("Status", rogue.status(timed(StatusRequest {})).await.err()),
        ];
        for (rpc, refused) in calls {
            let code = refused.map(|status| status.code());
            assert_eq!(
                code,
                Some(tonic::Code::Unauthenticated),
                "{rpc} at branch {id} was not refused"
            );
        }
    }
    // The refused calls changed nothing (a vote in a higher term would have raised every
    // term; the entry would have added money).
    assert_eq!(cluster.raft_state(), before, "the cluster changed");
    let exposition = bank::server::metrics::global()
        .render()
        .expect("metrics render");
    assert!(
        exposition
            .lines()
            .any(|line| line.starts_with("bank_requests_total")
                && line.contains(r#"interface="vote""#)
                && line.contains(r#"outcome="unauthenticated""#)),
        "refused peer calls are counted"
    );
    // And it still works.
    let written = cluster
        .client(None)
        .deposit(ORIGINAL_ACCOUNT, 1)
        .await
        .expect("deposit");
    assert_eq!(written.result.balance, Some(INITIAL as i64 + 1));
    cluster.shutdown().await;
}

/// A token for one account can move and read that account only; everything else is refused
/// whole, before anything is proposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_restrict_customers_to_their_accounts() {
    let tokens = format!(
        r#"{{"tokens": [
            {{"name": "alice", "token": "{ALICE}", "accounts": [{ALICE_ACCOUNT}]}},
            {{"name": "ops", "token": "{OPS}", "accounts": "all"}}
        ]}}"#
    );
    let cluster = TlsCluster::start(Some(&tokens)).await;
    let ops = cluster.client(Some(OPS));
    for account in [ALICE_ACCOUNT, OTHER_ACCOUNT] {
        ops.open_account(account, 100, 0, None).await.expect("open");
    }
    let alice = cluster.client(Some(ALICE));
    let deposited = alice.deposit(ALICE_ACCOUNT, 5).await.expect("her deposit");
    assert_eq!(deposited.result.balance, Some(105));
    let read = alice
        .get_balances(&[ALICE_ACCOUNT], ReadLevel::Linearizable)
        .await
        .expect("her balance");
    assert_eq!(read.balances[0].balance, Some(105));

    let denied = tonic::Code::PermissionDenied;
    let read_other = alice
        .get_balances(&[OTHER_ACCOUNT], ReadLevel::Linearizable)
        .await
        .expect_err("read another account");
    assert_eq!(refused_code(read_other), denied);
    let read_both = alice
        .get_balances(&[ALICE_ACCOUNT, OTHER_ACCOUNT], ReadLevel::Local)
        .await
        .expect_err("read two accounts, one not hers");
    assert_eq!(refused_code(read_both), denied);
    let steal = alice
        .transfer(OTHER_ACCOUNT, ALICE_ACCOUNT, 50)
        .await
        .expect_err("transfer from another account");
    assert_eq!(refused_code(steal), denied);
    let give = alice
        .transfer(ALICE_ACCOUNT, OTHER_ACCOUNT, 5)
        .await
        .expect_err("transfer to another account");
    assert_eq!(refused_code(give), denied);
    let withdraw = alice
        .withdraw(OTHER_ACCOUNT, 1)
        .await
        .expect_err("withdraw");
    assert_eq!(refused_code(withdraw), denied);
    let open = alice
        .open_account(13, 0, 0, None)
        .await
        .expect_err("open an account not hers");
    assert_eq!(refused_code(open), denied);
    let batch = alice
        .submit_batch(&[
            Write::Deposit {
                account: ALICE_ACCOUNT,
                amount: 7,
            },
            Write::Withdraw {
                account: OTHER_ACCOUNT,
                amount: 7,
            },
        ])
        .await
        .expect_err("a batch with one forbidden item");
    assert_eq!(refused_code(batch), denied);

    // No token, or an unknown one: UNAUTHENTICATED.
    let anonymous = cluster.client(None);
    let error = anonymous
        .get_balances(&[ALICE_ACCOUNT], ReadLevel::Local)
        .await
        .expect_err("no token");
    assert_eq!(refused_code(error), tonic::Code::Unauthenticated);
    let forged = cluster.client(Some("alice-token-0123456789abcdeX"));
    let error = forged
        .deposit(ALICE_ACCOUNT, 1)
        .await
        .expect_err("wrong token");
    assert_eq!(refused_code(error), tonic::Code::Unauthenticated);

    // The original API acts on the shared account: alice's token does not cover it.
    let channel = tls_channel(cluster.addr(1), cluster.customer_tls())
        .await
        .expect("TLS");
    let mut original = BranchClient::new(channel);
    let deposit = |token: Option<&str>| {
        let mut request = timed(CustomerRequest {
            id: 1,
            interface: "deposit".into(),
            money: 10,
            writeset: vec![],
        });
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
        }
        request
    };
    let code = |result: Result<_, tonic::Status>| result.err().map(|s| s.code());
    assert_eq!(
        code(original.msg_delivery(deposit(None)).await),
        Some(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        code(original.msg_delivery(deposit(Some(ALICE))).await),
        Some(denied)
    );
    assert_eq!(code(original.msg_delivery(deposit(Some(OPS))).await), None);

    // Nothing alice was refused happened: her account has her one deposit (the batch's
    // allowed item was not applied either), the other account is untouched.
    let balances = ops
        .get_balances(
            &[ALICE_ACCOUNT, OTHER_ACCOUNT, ORIGINAL_ACCOUNT],
            ReadLevel::Linearizable,
        )
        .await
        .expect("balances");
    let balances: Vec<Option<i64>> = balances.balances.iter().map(|b| b.balance).collect();
    assert_eq!(
        balances,
        vec![Some(105), Some(100), Some(INITIAL as i64 + 10)]
    );
    let exposition = bank::server::metrics::global()
        .render()
        .expect("metrics render");
    assert!(
        exposition.contains("permission_denied") && exposition.contains("unauthenticated"),
        "refusals are counted"
    );
    cluster.shutdown().await;
}

/// `p` as an argument for [`bank`] (the temp dirs are UTF-8).
fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// `bank certs` writes the four files and refuses to overwrite them; `bank branch` refuses
/// incomplete or unreadable TLS options with a message naming what to fix.
#[test]
fn the_cli_makes_certificates_and_checks_tls_options() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("certs");
    let made = bank(["certs", "--out", path(&out), "--host", "bank.example"]);
    assert!(made.status.success(), "{made:?}");
    let files = CertFiles::in_dir(&out);
    for file in [
        &files.ca_cert,
        &files.ca_key,
        &files.branch_cert,
        &files.branch_key,
    ] {
        assert!(file.is_file(), "{} not written", file.display());
    }
    let again = bank(["certs", "--out", path(&out)]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("exists already") && stderr.contains("--force"),
        "{stderr}"
    );
    bank::tls::load_branch(&files.branch_files()).expect("the CLI's files load");

    let data = dir.path().join("data");
    let half = bank([
        "branch",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        path(&data),
        "--tls-cert",
        path(&files.branch_cert),
    ]);
    assert!(!half.status.success());
    let stderr = String::from_utf8_lossy(&half.stderr);
    assert!(
        stderr.contains("--tls-key") && stderr.contains("--tls-ca"),
        "{stderr}"
    );

    let missing = dir.path().join("missing.key");
    let unreadable = bank([
        "branch",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        path(&data),
        "--tls-cert",
        path(&files.branch_cert),
        "--tls-key",
        path(&missing),
        "--tls-ca",
        path(&files.ca_cert),
    ]);
    assert!(!unreadable.status.success());
    let stderr = String::from_utf8_lossy(&unreadable.stderr);
    assert!(stderr.contains("missing.key"), "{stderr}");

    let not_a_certificate = TlsFiles {
        ca: files.branch_key.clone(),
        ..files.branch_files()
    };
    let refused = bank([
        "branch",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        path(&data),
        "--tls-cert",
        path(&not_a_certificate.cert),
        "--tls-key",
        path(&not_a_certificate.key),
        "--tls-ca",
        path(&not_a_certificate.ca),
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("branch.key") && stderr.contains("certificate"),
        "{stderr}"
    );

    // Tokens in clear off loopback are refused (nothing is bound: the check comes first).
    let tokens = dir.path().join("tokens.json");
    std::fs::write(
        &tokens,
        format!(r#"{{"tokens": [{{"name": "ops", "token": "{OPS}", "accounts": "all"}}]}}"#),
    )
    .expect("write tokens");
    let clear = bank([
        "branch",
        "--id",
        "1",
        "--listen",
        "0.0.0.0:0",
        "--data-dir",
        path(&data),
        "--tokens",
        path(&tokens),
    ]);
    assert!(!clear.status.success());
    let stderr = String::from_utf8_lossy(&clear.stderr);
    assert!(stderr.contains("in clear"), "{stderr}");
}

/// The commands of docs/operations.md's "TLS and tokens", end to end: `bank certs`, a
/// one-branch TLS `bank branch` with tokens, `bank account` with `--tls-ca` and `--token`,
/// `bank status` with the certificate.
#[test]
fn the_cli_runs_a_tls_branch_with_tokens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("certs");
    assert!(bank(["certs", "--out", path(&out)]).status.success());
    let files = CertFiles::in_dir(&out);
    let tokens = dir.path().join("tokens.json");
    std::fs::write(
        &tokens,
        format!(
            r#"{{"tokens": [
                {{"name": "alice", "token": "{ALICE}", "accounts": [1]}},
                {{"name": "ops", "token": "{OPS}", "accounts": "all"}}
            ]}}"#
        ),
    )
    .expect("write tokens");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let (cert, key, ca) = (
        path(&files.branch_cert),
        path(&files.branch_key),
        path(&files.ca_cert),
    );
    let _branch = common::ChildGuard::spawn(
        common::bank_command()
            .args(["branch", "--id", "1", "--listen", &addr, "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca])
            .arg("--tokens")
            .arg(&tokens)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    // The client retries until the branch serves and has a leader, within --timeout.
    let opened = bank([
        "account",
        "open",
        "1",
        "--balance",
        "100",
        "--branch",
        &addr,
        "--tls-ca",
        ca,
        "--token",
        OPS,
        "--timeout",
        "30",
    ]);
    assert!(opened.status.success(), "{opened:?}");
    let opened = bank([
        "account",
        "open",
        "2",
        "--balance",
        "100",
        "--branch",
        &addr,
        "--tls-ca",
        ca,
        "--token",
        OPS,
    ]);
    assert!(opened.status.success(), "{opened:?}");
    let mine = common::bank_with_env(
        [
            "account", "balance", "1", "--json", "--branch", &addr, "--tls-ca", ca,
        ],
        &[("BANK_TOKEN", ALICE)],
    );
    assert!(mine.status.success(), "{mine:?}");
    assert!(String::from_utf8_lossy(&mine.stdout).contains(r#""balance":100"#));
    let theirs = bank([
        "account", "transfer", "2", "1", "50", "--branch", &addr, "--tls-ca", ca, "--token", ALICE,
    ]);
    assert!(!theirs.status.success());
    let stderr = String::from_utf8_lossy(&theirs.stderr);
    assert!(stderr.contains("PermissionDenied"), "{stderr}");

    let plaintext = bank([
        "account",
        "balance",
        "1",
        "--branch",
        &addr,
        "--token",
        OPS,
        "--timeout",
        "2",
    ]);
    assert!(!plaintext.status.success());
    let stderr = String::from_utf8_lossy(&plaintext.stderr);
    assert!(stderr.contains("give --tls-ca"), "{stderr}");

    let status = bank([
        "status",
        "--branch",
        &addr,
        "--json",
        "--tls-ca",
        ca,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]);
    assert!(status.status.success(), "{status:?}");
    let no_certificate = bank(["status", "--branch", &addr, "--tls-ca", ca]);
    assert!(!no_certificate.status.success());
    let stderr = String::from_utf8_lossy(&no_certificate.stderr);
    assert!(stderr.contains("refused"), "{stderr}");
}
