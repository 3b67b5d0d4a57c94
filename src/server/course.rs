//! The original course API, `Branch.MsgDelivery` (`proto/banks.proto`): deposits, withdrawals
//! and queries on the one shared account, validated here and carried out by the
//! [`Branch`].

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::admission::Admission;
use super::auth::{authorize, Tokens};
use super::error::ServiceError;
use super::metrics;
use crate::lamport::{self, CourseRequest, Interface};
use crate::ledger::{Command, Outcome, ORIGINAL_ACCOUNT};
use crate::node::Branch;
use crate::proto::customer::{Reply, Request as CustomerRequest};

/// The original customer API.
pub struct CustomerService {
    pub(super) branch: Branch,
    pub(super) tokens: Option<Arc<Tokens>>,
    /// The branch's bound on customer calls in flight, shared with `bank.v1.Accounts`.
    pub(super) admission: Admission,
}

/// What a customer asked for, validated.
enum CustomerOp {
    Deposit(u64),
    Withdraw(u64),
    Query,
}

fn parse_customer_request(request: &CustomerRequest) -> Result<CustomerOp, ServiceError> {
    let interface = request.interface.to_ascii_lowercase();
    let amount = |verb: &str| {
        u64::try_from(request.money)
            .ok()
            .filter(|&money| money > 0)
            .ok_or_else(|| {
                ServiceError::InvalidRequest(format!(
                    "{verb} needs money > 0, got {} (event id {})",
                    request.money, request.id
                ))
            })
    };
    match interface.as_str() {
        "deposit" => Ok(CustomerOp::Deposit(amount("deposit")?)),
        "withdraw" => Ok(CustomerOp::Withdraw(amount("withdraw")?)),
        "query" => Ok(CustomerOp::Query),
        "propagate_deposit" | "propagate_withdraw" => {
            Err(ServiceError::PeerTrafficRefused(request.interface.clone()))
        }
        _ => Err(ServiceError::InvalidRequest(format!(
            "unknown interface {:?} (event id {}); expected \"deposit\", \"withdraw\" or \"query\"",
            request.interface, request.id
        ))),
    }
}

/// A customer request's `interface` label in the metrics.
fn interface_label(request: &CustomerRequest) -> &'static str {
    match parse_customer_request(request) {
        Ok(CustomerOp::Deposit(_)) => "deposit",
        Ok(CustomerOp::Withdraw(_)) => "withdraw",
        Ok(CustomerOp::Query) => "query",
        Err(_) => "invalid",
    }
}

fn wire_balance(balance_minor_units: i64) -> Result<i32, ServiceError> {
    i32::try_from(balance_minor_units)
        .map_err(|_| ServiceError::BalanceOutOfRange(balance_minor_units))
}

fn reply(interface: &str, success: bool, balance_minor_units: i64) -> Result<Reply, ServiceError> {
    Ok(Reply {
        interface: interface.to_string(),
        result: if success { "success" } else { "fail" }.to_string(),
        balance: wire_balance(balance_minor_units)?,
    })
}

#[tonic::async_trait]
impl crate::proto::customer::branch_server::Branch for CustomerService {
    async fn msg_delivery(
        &self,
        request: Request<CustomerRequest>,
    ) -> Result<Response<Reply>, Status> {
        let started = std::time::Instant::now();
        // It acts on the one original account: a token must allow that account.
        if let Err(refused) = authorize(self.tokens.as_deref(), &request, [ORIGINAL_ACCOUNT]) {
            let refused = ServiceError::from(refused);
            metrics::global().record_request(
                self.branch.id,
                interface_label(request.get_ref()),
                metrics::code_label(refused.code()),
                started.elapsed(),
            );
            return Err(refused.into());
        }
        let clock = customer_clock(request.metadata());
        let request = request.into_inner();
        // Held until the answer is ready; none left means the branch is at its bound.
        let answer = match (self.admission.admit(), clock) {
            (Ok(_permit), Ok(clock)) => self.deliver(&request, clock).await,
            (Err(refused), _) | (_, Err(refused)) => Err(refused),
        };
        let interface = interface_label(&request);
        let outcome = match &answer {
            Ok(reply) if reply.result == "success" => "success",
            Ok(_) => "fail",
            Err(error) => metrics::code_label(error.code()),
        };
        metrics::global().record_request(self.branch.id, interface, outcome, started.elapsed());
        answer.map(Response::new).map_err(Status::from)
    }
}

impl CustomerService {
    /// Carries out `request`; `clock` is its customer's id and Lamport clock when the call
    /// carries them (the course's Project 2), logged as this branch's receive.
    async fn deliver(
        &self,
        request: &CustomerRequest,
        clock: Option<(u32, u64)>,
    ) -> Result<Reply, ServiceError> {
        let op = parse_customer_request(request)?;
        let course = clock.map(|(customer, clock)| {
            let interface = match op {
                CustomerOp::Deposit(_) => Interface::Deposit,
                CustomerOp::Withdraw(_) => Interface::Withdraw,
                CustomerOp::Query => Interface::Query,
            };
            let course = CourseRequest {
                request: request.id,
                customer,
                interface,
            };
            self.branch.lamport().receive_from_customer(&course, clock);
            course
        });
        // Read-your-writes (the writeset) holds without waiting on it: every write was
        // acknowledged only once committed, and every query below is a read-index read, which
        // sees every write committed before it started.
        let (interface, command) = match op {
            CustomerOp::Query => {
                let balance = self
                    .branch
                    .read_balance(ORIGINAL_ACCOUNT)
                    .await?
                    .ok_or(ServiceError::NotReady)?;
                return reply("query", true, balance);
            }
            CustomerOp::Deposit(amount_minor_units) => (
                "deposit",
                Command::Deposit {
                    account: ORIGINAL_ACCOUNT,
                    amount_minor_units,
                },
            ),
            CustomerOp::Withdraw(amount_minor_units) => (
                "withdraw",
                Command::Withdraw {
                    account: ORIGINAL_ACCOUNT,
                    amount_minor_units,
                },
            ),
        };
        let (outcome, _log_index) = self.branch.submit_course(command, course).await?;
        match outcome {
            Outcome::Deposited {
                balance_minor_units,
            }
            | Outcome::Withdrawn {
                balance_minor_units,
            } => reply(interface, true, balance_minor_units),
            Outcome::InsufficientFunds {
                balance_minor_units,
            }
            | Outcome::BalanceLimitExceeded {
                balance_minor_units,
            } => reply(interface, false, balance_minor_units),
            Outcome::UnknownAccount { .. } => Err(ServiceError::NotReady),
            // Like an unknown outcome: the ledger no longer knows whether it was applied.
            Outcome::RequestIdExpired => Err(ServiceError::RequestIdExpired),
            other => Err(ServiceError::UnexpectedOutcome(format!("{other:?}"))),
        }
    }
}

/// The customer's id and Lamport clock, when its call carries them in metadata (the course's
/// Project 2: [`lamport::CUSTOMER_HEADER`], [`lamport::CLOCK_HEADER`]); both or neither.
fn customer_clock(metadata: &MetadataMap) -> Result<Option<(u32, u64)>, ServiceError> {
    let read = |key: &str| -> Result<Option<u64>, ServiceError> {
        let Some(value) = metadata.get(key) else {
            return Ok(None);
        };
        value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ServiceError::InvalidRequest(format!(
                    "metadata {key:?} must be a whole number, got {value:?}"
                ))
            })
    };
    match (
        read(lamport::CUSTOMER_HEADER)?,
        read(lamport::CLOCK_HEADER)?,
    ) {
        (None, None) => Ok(None),
        (Some(customer), Some(clock)) => {
            let customer = u32::try_from(customer).map_err(|_| {
                ServiceError::InvalidRequest(format!(
                    "metadata {:?} is {customer}, beyond a customer id",
                    lamport::CUSTOMER_HEADER
                ))
            })?;
            Ok(Some((customer, clock)))
        }
        _ => Err(ServiceError::InvalidRequest(format!(
            "a Lamport-clocked call carries both {:?} and {:?} metadata",
            lamport::CUSTOMER_HEADER,
            lamport::CLOCK_HEADER
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(interface: &str, money: i32) -> CustomerRequest {
        CustomerRequest {
            id: 1,
            interface: interface.to_string(),
            money,
            writeset: vec![],
        }
    }

    #[test]
    fn malformed_requests_get_clear_statuses() {
        let code = |interface, money| {
            parse_customer_request(&request(interface, money))
                .err()
                .map(|s| s.code())
        };
        assert_eq!(code("deposit", 0), Some(tonic::Code::InvalidArgument));
        assert_eq!(code("withdraw", -5), Some(tonic::Code::InvalidArgument));
        assert_eq!(code("teleport", 5), Some(tonic::Code::InvalidArgument));
        assert_eq!(
            code("propagate_deposit", 5),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            code("propagate_withdraw", 5),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(code("deposit", 5), None);
        assert_eq!(code("QUERY", 0), None);
    }

    #[test]
    fn balances_beyond_int32_are_out_of_range_not_wrapped() {
        assert_eq!(wire_balance(i64::from(i32::MAX)).ok(), Some(i32::MAX));
        let refused = wire_balance(i64::from(i32::MAX) + 1)
            .err()
            .map(|s| s.code());
        assert_eq!(refused, Some(tonic::Code::OutOfRange));
    }
}
