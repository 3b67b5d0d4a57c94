//! A client library for the `bank.v1.Accounts` API that retries safely.
//!
//! [`Client`] talks to a list of branches. Every write gets a [`RequestId`]: a random origin
//! per `Client` (one per client incarnation) and an increasing sequence. When a branch answers
//! `UNAVAILABLE` (or `DEADLINE_EXCEEDED`, or the connection fails), the client retries the
//! **same** request, under the same id, at the next branch at once, and after each round of
//! branches pauses with a bounded, jittered exponential backoff, until its overall deadline ([`ClientConfig::deadline`], 10 s by default). The
//! ledger applies an id at most once, so a retry never applies a write twice. When the
//! deadline passes, the write's outcome is unknown and the error says so
//! ([`ClientError::OutcomeUnknown`]); the client never retries forever and never retries a
//! write under a new id.
//!
//! The client remembers the highest log index any of its writes committed at, and passes it
//! with [`ReadLevel::ReadYourWrites`] reads, so those see its own writes at any branch.
//!
//! Writes go to the leader first: every answer names the leader (`bank-leader` metadata), and
//! the client tries that branch first for its next writes, saving the follower's forward
//! ([`leader`]). Reads start at the branch that last answered one. A stale hint costs what no
//! hint costs: the follower forwards, or the next branch is tried.
//!
//! Writes are batched, as TigerBeetle's clients do ([`batcher`], on by default,
//! [`ClientConfig::batching`]): one write per client is in flight; those made meanwhile, by
//! other tasks sharing the client, queue (bounded) and go out together in one `SubmitBatch`
//! when it returns, each with its own request id, its own result and its own error. A
//! sequential caller sends exactly what it did before: one RPC per write.
//!
//! A branch started with TLS and tokens (see [`crate::server::auth`], [`crate::tls`]) is reached with
//! [`ClientConfig::tls`] (the cluster's CA) and [`ClientConfig::token`] (sent as
//! `authorization: Bearer <token>` on every call). A refusal (UNAUTHENTICATED,
//! PERMISSION_DENIED) is not retried: it is [`ClientError::Refused`]. A failure that points at
//! TLS on one end only (plaintext to a TLS branch, or TLS to a plaintext one) says so, typed:
//! [`ClientError::tls_mismatch`].
//!
//! [`Client::list_accounts`] reads every account at one applied index (a stream of pages).
//!
//! Beside it: [`status`] (`bank status`), [`members`] (`bank member`), [`course`] (the original
//! `Branch.MsgDelivery` API), [`backup`] (`bank backup`: a branch's backup stream into a file),
//! and [`endpoint`], the one endpoint builder they all use. Every one of them fails with the
//! one [`ClientError`], whose [`Cause`] says where and how (`error`).

pub mod backup;
mod batcher;
pub mod course;
mod error;
mod leader;
mod listing;
pub mod members;
pub mod status;
mod write;

pub use batcher::QUEUED_WRITES_MAX;
pub use error::{Asked, Cause, ClientError};

pub use listing::{Listing, LISTED_ACCOUNTS_MAX};

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use batcher::Batcher;
use leader::LeaderHint;

use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Code, Status};

use crate::ledger::RequestId;
use crate::proto::v1 as pb;
use crate::proto::v1::accounts_client::AccountsClient;

pub use crate::proto::v1::{Outcome, ReadLevel};
use crate::rpc as endpoint;
pub use crate::rpc::TlsMismatch;

/// At most this many attempts per call, whatever the deadline.
const ATTEMPTS_MAX: u32 = 64;

/// Timing bounds of a [`Client`], and how it proves who it is.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Overall bound on one call, retries included.
    pub deadline: Duration,
    /// Bound on one attempt at one branch (its gRPC deadline); then the next branch is tried.
    pub attempt_timeout: Duration,
    /// Pause after the first round of failed attempts (every branch tried once in turn, with
    /// no pause between them); doubles after each round, up to `backoff_max`; each pause is
    /// jittered to between half of it and all of it.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Bound on opening a connection to a branch.
    pub connect_timeout: Duration,
    /// TLS to the branches (`https`), e.g. [`crate::tls::load_client`]; `None`: plaintext.
    pub tls: Option<ClientTlsConfig>,
    /// The bearer token sent with every call; `None`: none.
    pub token: Option<Token>,
    /// Client-side batching (on by default): writes made while one of this client's writes is
    /// in flight wait for it and then go out together in one `SubmitBatch`, each with its own
    /// request id and result (see the module docs). A queued write waits for the one in
    /// flight before its own round trip, so its call may take up to twice `deadline`. Off:
    /// every write is its own RPC, and concurrent writes are concurrent RPCs.
    pub batching: bool,
    /// Send writes to the leader that the last answer named first (on by default; see the
    /// module docs). Off: every call starts at the branch that last answered one.
    pub leader_hints: bool,
}

/// A bearer token, ready to send; its `Debug` does not show it.
#[derive(Clone)]
pub struct Token(MetadataValue<Ascii>);

impl Token {
    /// `token` as an `authorization: Bearer <token>` value: visible ASCII only.
    pub fn new(token: &str) -> Result<Token, InvalidToken> {
        if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(InvalidToken);
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| InvalidToken)?;
        // Never written to HTTP/2's header compression tables.
        value.set_sensitive(true);
        Ok(Token(value))
    }
}

/// A token that cannot be sent as a bearer token.
#[derive(Debug, thiserror::Error)]
#[error("the token is not usable: give a non-empty token of visible ASCII characters, no spaces")]
pub struct InvalidToken;

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(4),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            tls: None,
            token: None,
            batching: true,
            leader_hints: true,
        }
    }
}

/// One write, before it gets its request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Open {
        account: u64,
        opening_balance: u64,
        overdraft_limit: u64,
        balance_max: Option<u64>,
    },
    Deposit {
        account: u64,
        amount: u64,
    },
    Withdraw {
        account: u64,
        amount: u64,
    },
    Transfer {
        from: u64,
        to: u64,
        amount: u64,
    },
}

/// A write's replicated result.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub request_id: RequestId,
    pub result: pb::WriteResult,
    /// The log index it committed at (the read-your-writes token).
    pub log_index: u64,
}

impl Written {
    pub fn outcome(&self) -> Outcome {
        self.result.outcome()
    }
}

/// A batch's replicated result: `request_ids[i]` is item `i`'s id.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchWritten {
    pub request_id: RequestId,
    pub request_ids: Vec<RequestId>,
    pub reply: pb::SubmitBatchReply,
}

/// Statuses after which the same request may be sent again (to another branch): the branch
/// could not serve it (unavailable; or, `RESOURCE_EXHAUSTED`, overloaded or its disk low on
/// space, having done nothing), or the answer was lost.
pub(super) fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted
    )
}

/// A `bank.v1` client over a list of branches. Cheap to share (`&self` methods); one cached
/// channel per branch.
pub struct Client {
    branches: Vec<(String, AccountsClient<Channel>)>,
    config: ClientConfig,
    /// Whether the channels use TLS; `None`: unknown (the caller built them).
    channels_tls: Option<bool>,
    origin: u64,
    sequence: AtomicU64,
    /// The branch to try a read first (and a write, while no leader is hinted): the last one
    /// that answered it.
    preferred: AtomicUsize,
    /// The branch to try a write first: the leader, as the last answer named it.
    leader: LeaderHint,
    /// Writes waiting for the one in flight.
    batcher: Batcher,
    /// The highest log index any write of this client committed at.
    write_index_max: AtomicU64,
}

impl Client {
    /// A client for the branches at `addresses` (`host:port` or `http://host:port`).
    /// Connections are opened lazily, on the first call. Call within a Tokio runtime.
    pub fn new(addresses: &[impl AsRef<str>], config: ClientConfig) -> Result<Client, ClientError> {
        if addresses.is_empty() {
            return Err(ClientError::NoBranches);
        }
        let endpoint_config = endpoint::EndpointConfig {
            tls: config.tls.as_ref(),
            connect_timeout: config.connect_timeout,
            keep_alive: None,
        };
        let mut branches = Vec::with_capacity(addresses.len());
        for addr in addresses {
            let addr = addr.as_ref();
            let channel = endpoint::endpoint(addr, &endpoint_config)
                .map_err(|e| ClientError::BadAddress {
                    cause: Cause::bad_address(addr, e),
                })?
                .connect_lazy();
            branches.push((addr.to_string(), AccountsClient::new(channel)));
        }
        let channels_tls = Some(config.tls.is_some());
        Ok(Client {
            branches,
            config,
            channels_tls,
            origin: random_origin(),
            sequence: AtomicU64::new(1),
            preferred: AtomicUsize::new(0),
            leader: LeaderHint::new(),
            batcher: Batcher::new(),
            write_index_max: AtomicU64::new(0),
        })
    }

    /// A client over channels the caller built, e.g. the simulator's channels over its simulated
    /// network (`crate::sim`), each with a name for error messages. `origin` is this client's
    /// request-id origin: it must be non-zero (0 is taken as 1) and differ between any two
    /// clients or incarnations of one client of a cluster; [`Client::new`] draws it at random,
    /// the simulator derives it from its seed so a run replays. `config`'s `tls` and
    /// `connect_timeout` are the channels' business here and are not used; its token is sent.
    pub fn from_channels(
        channels: Vec<(String, Channel)>,
        config: ClientConfig,
        origin: u64,
    ) -> Result<Client, ClientError> {
        if channels.is_empty() {
            return Err(ClientError::NoBranches);
        }
        Ok(Client {
            branches: channels
                .into_iter()
                .map(|(name, channel)| (name, AccountsClient::new(channel)))
                .collect(),
            config,
            channels_tls: None,
            origin: origin.max(1),
            sequence: AtomicU64::new(1),
            preferred: AtomicUsize::new(0),
            leader: LeaderHint::new(),
            batcher: Batcher::new(),
            write_index_max: AtomicU64::new(0),
        })
    }

    /// A request for one attempt: its gRPC deadline, and the bearer token if configured.
    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        if let Some(Token(token)) = &self.config.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }

    /// This client's request-id origin (random, non-zero).
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// The next request id: this client's origin and an increasing sequence.
    pub fn next_request_id(&self) -> RequestId {
        RequestId {
            origin: self.origin,
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The highest log index any write of this client committed at (0: none yet).
    pub fn write_index_max(&self) -> u64 {
        self.write_index_max.load(Ordering::Relaxed)
    }

    pub async fn open_account(
        &self,
        account: u64,
        opening_balance: u64,
        overdraft_limit: u64,
        balance_max: Option<u64>,
    ) -> Result<Written, ClientError> {
        self.write(Write::Open {
            account,
            opening_balance,
            overdraft_limit,
            balance_max,
        })
        .await
    }

    pub async fn deposit(&self, account: u64, amount: u64) -> Result<Written, ClientError> {
        self.write(Write::Deposit { account, amount }).await
    }

    pub async fn withdraw(&self, account: u64, amount: u64) -> Result<Written, ClientError> {
        self.write(Write::Withdraw { account, amount }).await
    }

    pub async fn transfer(&self, from: u64, to: u64, amount: u64) -> Result<Written, ClientError> {
        self.write(Write::Transfer { from, to, amount }).await
    }

    /// Sends `write` under a new request id (retried under that same id).
    pub async fn write(&self, write: Write) -> Result<Written, ClientError> {
        self.write_with_id(self.next_request_id(), &write).await
    }

    /// The balances of `accounts` at `level`; with [`ReadLevel::ReadYourWrites`], at least
    /// as fresh as this client's last write.
    pub async fn get_balances(
        &self,
        accounts: &[u64],
        level: ReadLevel,
    ) -> Result<pb::GetBalancesReply, ClientError> {
        let message = pb::GetBalancesRequest {
            accounts: accounts.to_vec(),
            read_level: level.into(),
            min_log_index: match level {
                ReadLevel::ReadYourWrites => self.write_index_max(),
                _ => 0,
            },
        };
        self.call(Asked::Read, |mut c, t| {
            let m = message.clone();
            async move { c.get_balances(self.request(m, t)).await }
        })
        .await
    }

    /// Calls `attempt` at one branch after another until one answers or the deadline passes.
    /// `asked`: a read, or the write being sent under its request id (its outcome is then
    /// unknown if no branch confirms it).
    async fn call<T, F, Fut>(&self, asked: Asked, mut attempt: F) -> Result<T, ClientError>
    where
        F: FnMut(AccountsClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.config.deadline;
        let write = matches!(asked, Asked::Write(_));
        let hints = self.config.leader_hints;
        let hinted = if write && hints {
            self.leader.get()
        } else {
            None
        };
        let first = hinted.unwrap_or_else(|| self.preferred.load(Ordering::Relaxed));
        let mut last = Cause::new("", Code::DeadlineExceeded, "no attempt made".to_string());
        let mut attempts = 0;
        while attempts < ATTEMPTS_MAX {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let index = (first + attempts as usize) % self.branches.len();
            let (addr, client) = &self.branches[index];
            let timeout = remaining.min(self.config.attempt_timeout);
            attempts += 1;
            match tokio::time::timeout(timeout, attempt(client.clone(), timeout)).await {
                Ok(Ok(reply)) => {
                    if hints {
                        let names = self.branches.iter().map(|(name, _)| name.as_str());
                        self.leader.learn(reply.metadata(), names);
                    }
                    // A write sent to the hinted leader says nothing of where to read.
                    if !write || (hinted.is_none() && self.leader.get().is_none()) {
                        self.preferred.store(index, Ordering::Relaxed);
                    }
                    return Ok(reply.into_inner());
                }
                Ok(Err(status)) if retryable(&status) => {
                    last = Cause::status(addr, &status, self.channels_tls);
                }
                Ok(Err(status)) => {
                    return Err(ClientError::Refused {
                        asked,
                        cause: Cause::status(addr, &status, self.channels_tls),
                    })
                }
                Err(_) => last = Cause::no_answer(addr, timeout),
            }
            if write && hints {
                // The hinted leader failed: the next answer names the leader again.
                self.leader.forget(index);
            }
            tracing::debug!(attempts, "retrying at the next branch: {last}");
            let pause = pause_after(&self.config, attempts, self.branches.len());
            if !pause.is_zero() {
                tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
            }
        }
        let deadline = self.config.deadline;
        Err(if write {
            ClientError::OutcomeUnknown {
                asked,
                cause: last,
                deadline,
                attempts,
            }
        } else {
            ClientError::Unreachable {
                asked,
                cause: last,
                deadline,
                attempts,
            }
        })
    }
}

/// The pause after failed attempt number `attempts` (from 1) at `branches` branches taken in
/// turn: none while some branch of the round is untried (the next one is tried at once, so a
/// dead branch costs no pause), then [`crate::retry::backoff`] after each full round, doubling
/// per round from `backoff_min` up to `backoff_max`, jittered so that clients that failed
/// together do not retry together.
fn pause_after(config: &ClientConfig, attempts: u32, branches: usize) -> Duration {
    let branches = u32::try_from(branches.max(1)).unwrap_or(u32::MAX);
    if attempts == 0 || !attempts.is_multiple_of(branches) {
        return Duration::ZERO;
    }
    crate::retry::backoff(
        attempts / branches - 1,
        config.backoff_min,
        config.backoff_max,
    )
}

/// A random non-zero origin: `RandomState` is seeded from the OS's randomness; the clock and
/// process id keep two incarnations apart even if a platform seeds it weakly.
fn random_origin() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let origin = RandomState::new().hash_one((nanos, std::process::id()));
    origin.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_ids_share_a_random_origin_and_increase() {
        let client = Client::new(&["127.0.0.1:1"], ClientConfig::default()).expect("client");
        let first = client.next_request_id();
        let second = client.next_request_id();
        assert_ne!(first.origin, 0);
        assert_eq!(first.origin, second.origin);
        assert!(second.sequence > first.sequence);
        let other = Client::new(&["127.0.0.1:1"], ClientConfig::default()).expect("client");
        assert_ne!(other.origin(), client.origin());
    }

    #[tokio::test]
    async fn no_branches_is_an_error() {
        let none: [&str; 0] = [];
        assert!(matches!(
            Client::new(&none, ClientConfig::default()),
            Err(ClientError::NoBranches)
        ));
    }

    /// Within a round of branches the next one is tried at once; after each round the pause
    /// is drawn: spread (never all equal), within `[backoff_min / 2, backoff_max]`.
    #[test]
    fn pauses_come_after_each_round_and_are_spread() {
        let config = ClientConfig::default();
        assert_eq!(pause_after(&config, 1, 3), Duration::ZERO);
        assert_eq!(pause_after(&config, 2, 3), Duration::ZERO);
        assert_eq!(pause_after(&config, 4, 3), Duration::ZERO);
        for (attempts, branches) in [(3, 3), (6, 3), (1, 1), (5, 1), (63, 3)] {
            let pauses: Vec<Duration> = (0..200)
                .map(|_| pause_after(&config, attempts, branches))
                .collect();
            assert!(
                pauses
                    .iter()
                    .all(|&p| p >= config.backoff_min / 2 && p <= config.backoff_max),
                "{pauses:?}"
            );
            assert!(
                pauses.iter().min() < pauses.iter().max(),
                "attempt {attempts} at {branches} branches: every pause equal"
            );
        }
    }

    /// Nothing listens on the address: the write is retried within the deadline, then reported
    /// as an unknown outcome naming its request id; never an endless retry.
    #[tokio::test]
    async fn an_unreachable_cluster_gives_an_unknown_outcome_within_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let config = ClientConfig {
            deadline: Duration::from_millis(300),
            ..ClientConfig::default()
        };
        let client = Client::new(&[addr], config).expect("client");
        let started = std::time::Instant::now();
        let error = client.deposit(1, 5).await.expect_err("nothing listens");
        assert!(started.elapsed() < Duration::from_secs(2));
        match error {
            ClientError::OutcomeUnknown {
                asked: Asked::Write(request_id),
                attempts,
                ..
            } => {
                assert_eq!(request_id.origin, client.origin());
                assert!(attempts >= 2, "retried: {attempts}");
            }
            other => panic!("expected an unknown outcome, got {other}"),
        }
    }
}
