//! Customers: run a scenario's events against branches over real gRPC (`Branch.MsgDelivery`,
//! through the course client [`crate::client::course`]), as the original course client does;
//! and [`run_scenario`], a whole `bank run`: a cluster on loopback, the customers, the output,
//! every branch's final balance.
//!
//! Customers run one after another in input order, each customer's events in order (the
//! course's semantics), or all customers at once with `concurrent`. No sleeps are needed: a
//! reply means the operation is committed and applied. A customer's writeset (ids of its
//! earlier writes) is sent with each event, as the original P3 client does, capped at
//! [`WRITESET_IDS_MAX`] most recent ids so requests stay bounded.
//!
//! A run can be watched: [`CustomerOptions`] paces the events (so a person can follow them)
//! and hands each answered event to an [`Observer`] (the live page), which must not block.
//!
//! A write is never retried: the original API has no request ids, so a retry could apply a
//! deposit twice. Only queries, which change nothing, are retried while waiting for branches
//! to come up ([`Branches::wait_until_serving`]).

use std::num::TryFromIntError;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::lamport::{ClockedRun, Parts, TooManyEvents};
use super::scenario::{
    render_output, Customer, CustomerReplies, EventReply, Interface, Scenario, Variant,
};
use crate::bootstrap::local::{bind_loopback, ClusterError, LocalCluster, Storage};
use crate::client::{ClientError, TlsMismatch};
use crate::lamport::{CourseRequest, LamportClock};
use crate::ledger::ORIGINAL_ACCOUNT;
use crate::proto::customer::Request;
use crate::BranchId;

pub use crate::client::course::{Branches, CALL_DEADLINE};

/// At most this many earlier write ids travel in one request's writeset.
pub const WRITESET_IDS_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    /// The course client could not be built, or a branch was not found.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// One of a customer's events failed.
    #[error("customer {customer}, event {event_id} ({interface}) at {error}")]
    Event {
        customer: u32,
        event_id: i32,
        interface: &'static str,
        /// A failed call ([`ClientError::Refused`] or [`ClientError::Unreachable`]), which
        /// names the branch.
        error: ClientError,
    },
    #[error("customer task failed: {0}")]
    Task(String),
}

impl CustomerError {
    /// Whether the failure points at TLS on one end only (see [`ClientError::tls_mismatch`]).
    pub fn tls_mismatch(&self) -> Option<TlsMismatch> {
        match self {
            CustomerError::Client(error) | CustomerError::Event { error, .. } => {
                error.tls_mismatch()
            }
            CustomerError::Task(_) => None,
        }
    }
}

/// One customer event, answered: what an [`Observer`] sees.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    pub customer: u32,
    pub event_id: i32,
    pub branch: BranchId,
    pub interface: &'static str,
    pub money: i32,
    pub success: bool,
    pub balance: i32,
}

/// Watches a run's customer events as they are answered. Called on the customer's task:
/// it must return at once (record, or hand over through a bounded buffer).
pub trait Observer: Send + Sync {
    fn seen(&self, event: &SeenEvent);
}

/// How customers run: all at once or in order, paced or not, watched or not.
#[derive(Clone, Default)]
pub struct CustomerOptions {
    pub concurrent: bool,
    /// A pause after each event, so that a person can follow the run (zero: none).
    pub pace: Duration,
    pub observer: Option<Arc<dyn Observer>>,
}

/// Runs one customer's events in order; with `clocked` (Project 2) the customer keeps a
/// Lamport clock and each call carries it.
async fn run_customer(
    branches: Branches,
    customer: Customer,
    options: CustomerOptions,
    clocked: bool,
) -> Result<CustomerReplies, CustomerError> {
    let mut replies = Vec::with_capacity(customer.events.len());
    let mut writeset: Vec<i32> = Vec::new();
    let lamport = LamportClock::new();
    for event in &customer.events {
        let start = writeset.len().saturating_sub(WRITESET_IDS_MAX);
        let request = Request {
            id: event.id,
            interface: event.interface.as_str().to_string(),
            money: event.money,
            writeset: writeset[start..].to_vec(),
        };
        let clock = clocked.then(|| {
            let course = CourseRequest {
                request: event.id,
                customer: customer.id,
                interface: event.interface,
            };
            (customer.id, lamport.customer_sends(&course))
        });
        let reply = branches
            .deliver_clocked(event.branch, request, clock, CALL_DEADLINE)
            .await
            .map_err(|error| match error {
                ClientError::Refused { .. } | ClientError::Unreachable { .. } => {
                    CustomerError::Event {
                        customer: customer.id,
                        event_id: event.id,
                        interface: event.interface.as_str(),
                        error,
                    }
                }
                other => CustomerError::Client(other),
            })?;
        let success = reply.result == "success";
        if let Some(observer) = &options.observer {
            observer.seen(&SeenEvent {
                customer: customer.id,
                event_id: event.id,
                branch: event.branch,
                interface: event.interface.as_str(),
                money: event.money,
                success,
                balance: reply.balance,
            });
        }
        if !options.pace.is_zero() {
            tokio::time::sleep(options.pace).await;
        }
        // As the original client does: the writeset lists this customer's successful writes.
        if success && event.interface != Interface::Query {
            writeset.push(event.id);
        }
        replies.push(EventReply {
            interface: event.interface,
            branch: event.branch,
            success,
            balance: reply.balance,
        });
    }
    Ok(CustomerReplies {
        customer_id: customer.id,
        replies,
        clocks: lamport.events().0,
    })
}

/// Runs every customer of `scenario` and returns their replies in input order.
pub async fn run_customers(
    scenario: &Scenario,
    branches: &Branches,
    concurrent: bool,
) -> Result<Vec<CustomerReplies>, CustomerError> {
    let options = CustomerOptions {
        concurrent,
        ..CustomerOptions::default()
    };
    run_customers_with(scenario, branches, &options).await
}

/// [`run_customers`] with `options`: paced, watched.
pub async fn run_customers_with(
    scenario: &Scenario,
    branches: &Branches,
    options: &CustomerOptions,
) -> Result<Vec<CustomerReplies>, CustomerError> {
    let clocked = scenario.variant == Variant::LamportClocks;
    if !options.concurrent {
        let mut all = Vec::with_capacity(scenario.customers.len());
        for customer in &scenario.customers {
            let options = options.clone();
            all.push(run_customer(branches.clone(), customer.clone(), options, clocked).await?);
        }
        return Ok(all);
    }
    let mut tasks = JoinSet::new();
    for (position, customer) in scenario.customers.iter().enumerate() {
        let branches = branches.clone();
        let customer = customer.clone();
        let options = options.clone();
        tasks.spawn(async move {
            let replies = run_customer(branches, customer, options, clocked).await;
            (position, replies)
        });
    }
    let mut all: Vec<Option<CustomerReplies>> =
        (0..scenario.customers.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (position, replies) = joined.map_err(|e| CustomerError::Task(e.to_string()))?;
        all[position] = Some(replies?);
    }
    Ok(all.into_iter().flatten().collect())
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the initial balance must not be negative")]
    NegativeInitialBalance(#[source] TryFromIntError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Customers(#[from] CustomerError),
    #[error(transparent)]
    TooManyEvents(#[from] TooManyEvents),
}

/// What [`run_scenario`] leaves behind.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    /// The customers' replies as `output.json` holds them ([`render_output`]).
    pub output: Value,
    /// Every branch's final balance of the shared account, by branch id, after the cluster
    /// settled (`None`: the branch has no such account).
    pub balances: Vec<(u64, Option<i64>)>,
    /// Whether every branch ended with an identical ledger.
    pub identical: bool,
    /// How long the cluster took to start and elect a leader.
    pub ready: Duration,
    /// How long the customers ran, the settling of the branches included.
    pub customers: Duration,
    /// Project 2: the three parts of Lamport events (the output is then part 3).
    pub clocked: Option<Parts>,
}

impl ScenarioRun {
    /// Every branch holds the same ledger and shows the same balance.
    pub fn agree(&self) -> bool {
        let first = self.balances.first().map(|(_, balance)| *balance);
        self.identical
            && self
                .balances
                .iter()
                .all(|(_, balance)| Some(*balance) == first)
    }
}

/// Starts every branch of `scenario` on loopback (`127.0.0.1:(base_port + id)`, or ports the
/// system picks without `base_port`), each with the scenario's initial balance.
pub async fn start_cluster(
    scenario: &Scenario,
    base_port: Option<u16>,
    storage: Storage,
) -> Result<LocalCluster, RunError> {
    let initial_balance =
        u64::try_from(scenario.initial_balance).map_err(RunError::NegativeInitialBalance)?;
    let ids: Vec<BranchId> = scenario.branches.iter().map(|b| b.id).collect();
    let listeners = bind_loopback(&ids, base_port).await?;
    Ok(LocalCluster::start(listeners, initial_balance, storage).await?)
}

/// `bank run` without its printing: starts every branch of `scenario` in this process on
/// loopback, runs the customers over gRPC (all at once if `concurrent`), waits for the
/// branches to settle, reads every branch's final state and shuts the cluster down (also when
/// a step fails).
pub async fn run_scenario(
    scenario: &Scenario,
    concurrent: bool,
    storage: Storage,
) -> Result<ScenarioRun, RunError> {
    let started = Instant::now();
    let cluster = start_cluster(scenario, None, storage).await?;
    let ready = started.elapsed();
    let result = run_on_cluster(scenario, &cluster, concurrent).await;
    let customers = started.elapsed().saturating_sub(ready);
    cluster.shutdown().await;
    let (output, balances, identical, clocked) = result?;
    Ok(ScenarioRun {
        output,
        balances,
        identical,
        ready,
        customers,
        clocked,
    })
}

/// The customers' output, every branch's balance, whether all ledgers are identical, and
/// (Project 2) the three parts of Lamport events.
#[allow(clippy::type_complexity)]
async fn run_on_cluster(
    scenario: &Scenario,
    cluster: &LocalCluster,
    concurrent: bool,
) -> Result<(Value, Vec<(u64, Option<i64>)>, bool, Option<Parts>), RunError> {
    let branches = Branches::new(&cluster.addresses()).map_err(CustomerError::from)?;
    let replies = run_customers(scenario, &branches, concurrent).await?;
    let (balances, identical) = final_balances(cluster).await?;
    if scenario.variant != Variant::LamportClocks {
        let output = render_output(scenario.variant, &replies);
        return Ok((output, balances, identical, None));
    }
    let parts = clocked_parts(cluster, replies)?;
    Ok((parts.all.clone(), balances, identical, Some(parts)))
}

/// The three parts of a Project 2 run on `cluster` once it settled (every branch has then
/// received every entry, so its events are all logged), from the customers' `replies`.
pub fn clocked_parts(
    cluster: &LocalCluster,
    replies: Vec<CustomerReplies>,
) -> Result<Parts, TooManyEvents> {
    let mut run = ClockedRun {
        customers: replies
            .into_iter()
            .map(|customer| (customer.customer_id, customer.clocks))
            .collect(),
        branches: Vec::new(),
    };
    run.collect_branches(cluster)?;
    Ok(run.parts())
}

/// Every running branch's balance of the shared account once the cluster has settled, and
/// whether their ledgers are identical.
#[allow(clippy::type_complexity)]
pub async fn final_balances(
    cluster: &LocalCluster,
) -> Result<(Vec<(u64, Option<i64>)>, bool), RunError> {
    let states = cluster.settled_states().await?;
    let balances = states
        .iter()
        .map(|(id, state)| (*id, state.ledger.balance(ORIGINAL_ACCOUNT)))
        .collect();
    let identical = states
        .windows(2)
        .all(|pair| pair[0].1.ledger == pair[1].1.ledger);
    Ok((balances, identical))
}
