//! The simulated customers, and what they record.
//!
//! Two kinds, drawn per customer from the seed:
//! - a **bank customer** runs Jepsen's bank workload on the `bank.v1` Accounts API through the
//!   real library client, [`Client`], over simulated channels: transfers between random
//!   accounts, deposits, withdrawals, and linearizable reads of every account. The client's own
//!   retry logic runs: a write keeps its request id while it is resent to the next branch, until
//!   the client's deadline, then its outcome is unknown. Every write's request id and fate is
//!   kept for the exactly-once check. One read in four is at `READ_YOUR_WRITES` and one in four
//!   at `LOCAL`: [`crate::check`] takes every read as linearizable, so these are kept apart
//!   ([`WeakRead`]) and checked against the committed log instead;
//! - an **original customer** calls `Branch.MsgDelivery` (the course API) on the original
//!   account: deposits, withdrawals, queries. It has no request ids; the branch retries
//!   internally under its own.
//!
//! Both record one history in [`crate::check`]'s format (times in simulated microseconds); an
//! original customer also records [`history::Event`]s for [`history::judge`]. A customer whose
//! call had an unknown outcome continues as a new process, as in Jepsen.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use super::history::{self, Kind};
use super::{branch_addr, BRANCHES, FAULTS_END, FAULTS_START};
use crate::check::{Event, Observation, Op, OpResult};
use crate::client::{Client, ClientConfig, ClientError, Outcome, ReadLevel, Write};
use crate::ledger::{AccountId, RequestId, ORIGINAL_ACCOUNT};
use crate::proto::customer::branch_client::BranchClient;
use crate::proto::customer::Request as CustomerRequest;
use crate::raft::network::Peers;
use crate::BranchId;

/// An original customer's deadline on one call: past it the outcome is unknown (`info`).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A bank customer's client: a few seconds in all per call, so calls started before the heal
/// end soon after it.
fn client_config() -> ClientConfig {
    ClientConfig {
        deadline: Duration::from_secs(3),
        attempt_timeout: Duration::from_millis(1_200),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(400),
        connect_timeout: Duration::from_secs(1),
        // Customer i starts at branch i on purpose: followers forward, and the forwarding
        // paths are exercised under faults. With hints every write went to the leader, and the
        // broken-disk self-test caught none of seeds 0..20 (2 of seeds 20..45).
        leader_hints: false,
        ..ClientConfig::default()
    }
}

/// What became of a bank customer's write, for the exactly-once check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The cluster answered with its replicated outcome: applied exactly once.
    Answered,
    /// The client gave up: applied at most once.
    Unknown,
    /// Refused before it was proposed (invalid): never applied.
    Refused,
}

/// A read below `LINEARIZABLE`: what it asked and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeakRead {
    pub level: ReadLevel,
    /// The client's read-your-writes token (the highest log index its writes committed at).
    pub token: u64,
    /// The log index the branch had applied when it read.
    pub applied_index: u64,
    pub balances: BTreeMap<AccountId, i64>,
    pub at_us: u64,
}

/// Everything the customers record, shared by the customers of one run (one thread).
#[derive(Clone, Default)]
pub struct Records {
    pub events: Rc<RefCell<Vec<Event>>>,
    /// The original customers' calls, for [`history::judge`].
    pub original: Rc<RefCell<Vec<history::Event>>>,
    /// Every bank customer's write: its request id and fate.
    pub writes: Rc<RefCell<Vec<(RequestId, Fate)>>>,
    /// Reads at `READ_YOUR_WRITES` or `LOCAL` that a branch answered.
    pub weak_reads: Rc<RefCell<Vec<WeakRead>>>,
    /// Outcomes that must never be seen (a request id reused or expired).
    pub unexpected: Rc<RefCell<Vec<String>>>,
    /// Customers that have finished.
    pub done: Rc<Cell<usize>>,
}

impl Records {
    fn record(&self, event: Event) {
        self.events.borrow_mut().push(event);
    }
}

fn now_us() -> u64 {
    u64::try_from(turmoil::elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    u64::try_from(turmoil::elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn signed(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

/// Who a customer is in the run.
pub struct Customer {
    /// Its index among the run's customers; its first process id.
    pub index: usize,
    /// Customers in the run: a customer's next process after an unknown outcome is
    /// `process + customers`.
    pub customers: usize,
    pub rng: StdRng,
    pub records: Records,
}

/// A bank customer: Jepsen's bank workload until the fault window ends. It writes to the
/// `movable` accounts and reads all the `readable` ones at once.
pub async fn bank_customer(
    customer: Customer,
    movable: Vec<AccountId>,
    readable: Vec<AccountId>,
    origin: u64,
    peers: Peers,
) -> turmoil::Result {
    let Customer {
        index,
        customers,
        mut rng,
        records,
    } = customer;
    if movable.len() < 2 || readable.is_empty() {
        return Err("a bank customer needs two accounts to move money between".into());
    }
    // Customer i tries branch i first, then the others in turn.
    let channels = (0..BRANCHES)
        .map(|k| (index as u64 + k) % BRANCHES + 1)
        .map(|id| {
            let addr = branch_addr(id);
            let channel = peers.channel(&addr)?;
            Ok((addr, channel))
        })
        .collect::<Result<Vec<_>, crate::raft::network::PeerError>>()?;
    let client = Client::from_channels(channels, client_config(), origin)?;
    // Let the cluster elect a leader and open the accounts first.
    tokio::time::sleep(FAULTS_START - Duration::from_millis(500)).await;
    let mut process = index as u64;
    let pick = |rng: &mut StdRng| movable[rng.gen_range(0..movable.len())];
    while turmoil::elapsed() < FAULTS_END {
        let amount = rng.gen_range(1..=20u64);
        let write = match rng.gen_range(0..10) {
            0..=3 => {
                // Two different accounts: `to` is `from` moved on by 1..n-1 places.
                let n = movable.len();
                let from = rng.gen_range(0..n);
                let to = (from + rng.gen_range(1..n)) % n;
                Some(Write::Transfer {
                    from: movable[from],
                    to: movable[to],
                    amount,
                })
            }
            4 => Some(Write::Deposit {
                account: pick(&mut rng),
                amount,
            }),
            5 => Some(Write::Withdraw {
                account: pick(&mut rng),
                amount,
            }),
            _ => None,
        };
        match write {
            Some(write) => {
                if !write_once(&client, process, write, &records).await {
                    process += customers as u64;
                }
            }
            None => match rng.gen_range(0..4) {
                0 => weak_read(&client, ReadLevel::ReadYourWrites, &readable, &records).await,
                1 => weak_read(&client, ReadLevel::Local, &readable, &records).await,
                _ => read_all(&client, process, &readable, &records).await,
            },
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..150))).await;
    }
    records.done.set(records.done.get() + 1);
    Ok(())
}

/// A linearizable read of every account. A read changes nothing: one that no branch answered
/// did not happen (`fail`).
async fn read_all(client: &Client, process: u64, accounts: &[AccountId], records: &Records) {
    records.record(Event::Invoke {
        process,
        time_us: now_us(),
        op: Op::Read {
            accounts: accounts.to_vec(),
        },
    });
    let read = client.get_balances(accounts, ReadLevel::Linearizable).await;
    let time_us = now_us();
    records.record(match read {
        Ok(reply) => Event::Ok {
            process,
            time_us,
            result: OpResult::read(
                reply
                    .balances
                    .iter()
                    .filter_map(|b| b.balance.map(|balance| (b.account, balance)))
                    .collect(),
            ),
        },
        Err(e) => Event::Fail {
            process,
            time_us,
            observation: None,
            error: Some(e.to_string()),
        },
    });
}

/// A read at `level` below linearizable, kept for [`super::exactly_once::check`]: not in the
/// history, as the checker would take it for a linearizable read. One that fails is dropped.
async fn weak_read(client: &Client, level: ReadLevel, accounts: &[AccountId], records: &Records) {
    let token = client.write_index_max();
    if let Ok(reply) = client.get_balances(accounts, level).await {
        records.weak_reads.borrow_mut().push(WeakRead {
            level,
            token,
            applied_index: reply.applied_index,
            balances: reply
                .balances
                .iter()
                .filter_map(|b| b.balance.map(|balance| (b.account, balance)))
                .collect(),
            at_us: now_us(),
        });
    }
}

/// Sends one write under a new request id; returns false when its outcome is unknown (the
/// process must not be reused).
async fn write_once(client: &Client, process: u64, write: Write, records: &Records) -> bool {
    let op = match write {
        Write::Deposit { account, amount } => Op::Deposit {
            account,
            amount: signed(amount),
        },
        Write::Withdraw { account, amount } => Op::Withdraw {
            account,
            amount: signed(amount),
        },
        Write::Transfer { from, to, amount } => Op::Transfer {
            from,
            to,
            amount: signed(amount),
        },
        Write::Open {
            account,
            opening_balance,
            overdraft_limit,
            ..
        } => Op::Open {
            account,
            balance: signed(opening_balance),
            min_balance: -signed(overdraft_limit),
        },
    };
    let request_id = client.next_request_id();
    records.record(Event::Invoke {
        process,
        time_us: now_us(),
        op,
    });
    let sent = client.write_with_id(request_id, &write).await;
    let time_us = now_us();
    let (event, fate) = match sent {
        Ok(written) => {
            let result = &written.result;
            let event = match written.outcome() {
                Outcome::Ok => Event::Ok {
                    process,
                    time_us,
                    result: match (&write, result.balance, result.to_balance) {
                        (Write::Transfer { .. }, Some(from), Some(to)) => {
                            OpResult::transfer(from, to)
                        }
                        (Write::Transfer { .. }, _, _) => OpResult::default(),
                        (_, Some(balance), _) => OpResult::balance(balance),
                        _ => OpResult::default(),
                    },
                },
                Outcome::InsufficientFunds => Event::Fail {
                    process,
                    time_us,
                    observation: Some(Observation::InsufficientFunds {
                        balance: result.balance,
                    }),
                    error: None,
                },
                Outcome::RequestIdExpired | Outcome::RequestIdReused => {
                    // Never in a run: ids are unique per client and far fewer than the window.
                    records.unexpected.borrow_mut().push(format!(
                        "request {}:{} answered {:?}",
                        request_id.origin,
                        request_id.sequence,
                        written.outcome()
                    ));
                    Event::Info {
                        process,
                        time_us,
                        error: Some(format!("{:?}", written.outcome())),
                    }
                }
                other => Event::Fail {
                    process,
                    time_us,
                    observation: None,
                    error: Some(format!("refused: {other:?}")),
                },
            };
            (event, Fate::Answered)
        }
        Err(ClientError::Refused { cause, .. }) if cause.code == tonic::Code::InvalidArgument => (
            Event::Fail {
                process,
                time_us,
                observation: None,
                error: Some(cause.message.clone()),
            },
            Fate::Refused,
        ),
        Err(e) => (
            Event::Info {
                process,
                time_us,
                error: Some(e.to_string()),
            },
            Fate::Unknown,
        ),
    };
    let known = !matches!(event, Event::Info { .. });
    records.record(event);
    records.writes.borrow_mut().push((request_id, fate));
    known
}

/// An original customer: random `MsgDelivery` calls at random branches until the fault window
/// ends.
pub async fn original_customer(customer: Customer, peers: Peers) -> turmoil::Result {
    let Customer {
        index,
        customers,
        mut rng,
        records,
    } = customer;
    // Let the cluster elect a leader and open the account first.
    tokio::time::sleep(FAULTS_START - Duration::from_millis(500)).await;
    let mut id: i32 = 0;
    let mut process = index as u64;
    let account = ORIGINAL_ACCOUNT;
    while turmoil::elapsed() < FAULTS_END {
        let branch: BranchId = rng.gen_range(1..=BRANCHES);
        let amount: u64 = rng.gen_range(1..=50);
        let op = match rng.gen_range(0..10) {
            0..=3 => history::Op::Deposit(amount),
            4..=6 => history::Op::Withdraw(amount),
            _ => history::Op::Query,
        };
        let (interface, money, check_op) = match op {
            history::Op::Deposit(a) => (
                "deposit",
                a,
                Op::Deposit {
                    account,
                    amount: signed(a),
                },
            ),
            history::Op::Withdraw(a) => (
                "withdraw",
                a,
                Op::Withdraw {
                    account,
                    amount: signed(a),
                },
            ),
            history::Op::Query => (
                "query",
                0,
                Op::Read {
                    accounts: vec![account],
                },
            ),
        };
        id = id.saturating_add(1);
        let record = |kind| {
            records.original.borrow_mut().push(history::Event {
                at_ms: now_ms(),
                client: index,
                branch,
                op,
                kind,
            })
        };
        record(Kind::Invoke);
        records.record(Event::Invoke {
            process,
            time_us: now_us(),
            op: check_op,
        });
        let kind = match peers.channel(&branch_addr(branch)) {
            Err(_) => Kind::Fail,
            Ok(channel) => {
                let mut request = tonic::Request::new(CustomerRequest {
                    id,
                    interface: interface.to_string(),
                    money: i32::try_from(money).unwrap_or(i32::MAX),
                    writeset: vec![],
                });
                request.set_timeout(CALL_TIMEOUT);
                let called = tokio::time::timeout(
                    CALL_TIMEOUT + Duration::from_millis(100),
                    BranchClient::new(channel).msg_delivery(request),
                )
                .await;
                match (called, op) {
                    (Ok(Ok(reply)), _) if reply.get_ref().result == "success" => {
                        Kind::Ok(i64::from(reply.get_ref().balance))
                    }
                    (Ok(Ok(_)), _) => Kind::Fail,
                    (_, history::Op::Query) => Kind::Fail,
                    (Ok(Err(status)), _) if status.code() == tonic::Code::InvalidArgument => {
                        Kind::Fail
                    }
                    _ => Kind::Info,
                }
            }
        };
        record(kind);
        let time_us = now_us();
        records.record(match kind {
            Kind::Ok(balance) => Event::Ok {
                process,
                time_us,
                result: match op {
                    history::Op::Query => OpResult::read(BTreeMap::from([(account, balance)])),
                    _ => OpResult::balance(balance),
                },
            },
            Kind::Fail | Kind::Invoke => Event::Fail {
                process,
                time_us,
                observation: None,
                error: None,
            },
            Kind::Info => Event::Info {
                process,
                time_us,
                error: None,
            },
        });
        if kind == Kind::Info {
            process += customers as u64;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
    }
    records.done.set(records.done.get() + 1);
    Ok(())
}
