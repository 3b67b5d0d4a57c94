//! Customers: run a scenario's events against branches over real gRPC (`Branch.MsgDelivery`),
//! as the original course client does.
//!
//! Customers run one after another in input order, each customer's events in order (the
//! course's semantics), or all customers at once with `concurrent`. No sleeps are needed: a
//! reply means the operation is committed and applied. A customer's writeset (ids of its
//! earlier writes) is sent with each event, as the original P3 client does, capped at
//! [`WRITESET_IDS_MAX`] most recent ids so requests stay bounded.
//!
//! A write is never retried: the original API has no request ids, so a retry could apply a
//! deposit twice. Only queries, which change nothing, are retried while waiting for branches
//! to come up ([`wait_until_serving`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::proto::customer::branch_client::BranchClient;
use crate::proto::customer::Request;
use crate::raft::network::within;
use crate::workload::scenario::{Customer, CustomerReplies, EventReply, Interface, Scenario};

/// Deadline of one customer call.
pub const CALL_DEADLINE: Duration = Duration::from_secs(15);

/// At most this many earlier write ids travel in one request's writeset.
pub const WRITESET_IDS_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    #[error("the scenario names branch {0}, which has no address")]
    UnknownBranch(u32),
    #[error("branch {branch} at {addr}: {source}")]
    Connect {
        branch: u32,
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
    #[error("customer {customer}, event {event_id} ({interface}) at branch {branch}: {status_code:?}: {message}")]
    Call {
        customer: u32,
        event_id: i32,
        interface: &'static str,
        branch: u32,
        status_code: tonic::Code,
        message: String,
    },
    #[error("branch {branch} at {addr} did not answer within {deadline:?}: {last_error}")]
    NotServing {
        branch: u32,
        addr: SocketAddr,
        deadline: Duration,
        last_error: String,
    },
    #[error("customer task failed: {0}")]
    Task(String),
}

/// One lazily connected channel per branch.
#[derive(Clone)]
pub struct Branches {
    clients: BTreeMap<u32, (SocketAddr, BranchClient<Channel>)>,
}

impl Branches {
    pub fn new(addresses: &BTreeMap<u32, SocketAddr>) -> Result<Self, CustomerError> {
        let mut clients = BTreeMap::new();
        for (&branch, &addr) in addresses {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|source| CustomerError::Connect {
                    branch,
                    addr,
                    source,
                })?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true);
            clients.insert(branch, (addr, BranchClient::new(endpoint.connect_lazy())));
        }
        Ok(Branches { clients })
    }

    fn client(&self, branch: u32) -> Result<BranchClient<Channel>, CustomerError> {
        self.clients
            .get(&branch)
            .map(|(_, client)| client.clone())
            .ok_or(CustomerError::UnknownBranch(branch))
    }
}

/// Retries a query at every branch until it answers, for at most `deadline`.
pub async fn wait_until_serving(
    branches: &Branches,
    deadline: Duration,
) -> Result<(), CustomerError> {
    let until = Instant::now() + deadline;
    for (&branch, (addr, client)) in &branches.clients {
        loop {
            let mut request = tonic::Request::new(Request {
                id: 0,
                interface: "query".to_string(),
                money: 0,
                writeset: vec![],
            });
            let timeout = CALL_DEADLINE.min(until.saturating_duration_since(Instant::now()));
            request.set_timeout(timeout);
            match within(timeout, client.clone().msg_delivery(request)).await {
                Ok(_) => break,
                Err(status) if Instant::now() >= until => {
                    return Err(CustomerError::NotServing {
                        branch,
                        addr: *addr,
                        deadline,
                        last_error: status.to_string(),
                    })
                }
                // Bounded by `until`; the pause keeps a refused connection from spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}

async fn run_customer(
    branches: Branches,
    customer: Customer,
) -> Result<CustomerReplies, CustomerError> {
    let mut replies = Vec::with_capacity(customer.events.len());
    let mut writeset: Vec<i32> = Vec::new();
    for event in &customer.events {
        let mut client = branches.client(event.branch)?;
        let start = writeset.len().saturating_sub(WRITESET_IDS_MAX);
        let mut request = tonic::Request::new(Request {
            id: event.id,
            interface: event.interface.as_str().to_string(),
            money: event.money,
            writeset: writeset[start..].to_vec(),
        });
        request.set_timeout(CALL_DEADLINE);
        let reply = within(CALL_DEADLINE, client.msg_delivery(request))
            .await
            .map_err(|status| CustomerError::Call {
                customer: customer.id,
                event_id: event.id,
                interface: event.interface.as_str(),
                branch: event.branch,
                status_code: status.code(),
                message: status.message().to_string(),
            })?
            .into_inner();
        let success = reply.result == "success";
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
    })
}

/// Runs every customer of `scenario` and returns their replies in input order.
pub async fn run_customers(
    scenario: &Scenario,
    branches: &Branches,
    concurrent: bool,
) -> Result<Vec<CustomerReplies>, CustomerError> {
    if !concurrent {
        let mut all = Vec::with_capacity(scenario.customers.len());
        for customer in &scenario.customers {
            all.push(run_customer(branches.clone(), customer.clone()).await?);
        }
        return Ok(all);
    }
    let mut tasks = JoinSet::new();
    for (position, customer) in scenario.customers.iter().enumerate() {
        let branches = branches.clone();
        let customer = customer.clone();
        tasks.spawn(async move { (position, run_customer(branches, customer).await) });
    }
    let mut all: Vec<Option<CustomerReplies>> =
        (0..scenario.customers.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (position, replies) = joined.map_err(|e| CustomerError::Task(e.to_string()))?;
        all[position] = Some(replies?);
    }
    Ok(all.into_iter().flatten().collect())
}
