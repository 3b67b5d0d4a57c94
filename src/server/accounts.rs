//! The `bank.v1.Accounts` gRPC service (`proto/bank/v1/bank.proto`): many accounts, transfers,
//! batches, exactly-once writes under the customer's own request ids, and read levels.
//!
//! This file only translates: protobuf requests become ledger [`Proposal`]s under the
//! customer's [`RequestId`] and go through [`Branch::submit_proposal`] (which forwards to the
//! leader and retries with the same id); ledger [`Outcome`]s become `WriteResult`s. Business
//! outcomes are replies; malformed input is `INVALID_ARGUMENT`; availability problems come
//! from the branch's errors, all through the one mapping in [`super::error`].

use std::collections::BTreeSet;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::admission::Admission;
use super::error::ServiceError;

use crate::ledger::{Command, Outcome, Proposal, RequestId, BATCH_ITEMS_MAX};
use crate::node::{Branch, REQUEST_DEADLINE};
use crate::proto::v1 as pb;
use crate::proto::v1::accounts_server::AccountsServer;
use crate::rpc::LEADER_METADATA;
use crate::server::auth::{Access, Tokens};

/// At most this many accounts in one `GetBalances` (one bound for every list in this API).
pub const ACCOUNTS_PER_READ_MAX: usize = BATCH_ITEMS_MAX;

/// At most this many accounts in one page of `ListAccounts`.
pub const LIST_PAGE_ACCOUNTS_MAX: usize = 1_000;

/// The pages of one `ListAccounts` call.
type AccountsPages = Pin<Box<dyn Stream<Item = Result<pb::AccountsPage, Status>> + Send>>;

/// The `balance_max` of an account opened without one.
pub const BALANCE_MAX_DEFAULT: u64 = i64::MAX as u64;

/// Largest request this service decodes: a full batch is about 8,190 × 40 bytes.
const MESSAGE_SIZE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Serves `bank.v1.Accounts` on one branch.
pub struct AccountsService {
    branch: Branch,
    /// Bearer tokens every call needs ([`crate::server::auth`]); `None`: open.
    tokens: Option<Arc<Tokens>>,
    /// The bound on calls in flight, shared with the branch's original customer API: at the
    /// bound, a call is refused at once with RESOURCE_EXHAUSTED rather than queued.
    admission: Admission,
}

impl AccountsService {
    /// Serves `branch` under `admission`, requiring a bearer token allowed every account a
    /// call touches when `tokens` are configured.
    pub fn new(branch: Branch, admission: Admission, tokens: Option<Arc<Tokens>>) -> Self {
        AccountsService {
            branch,
            tokens,
            admission,
        }
    }

    /// UNAUTHENTICATED / PERMISSION_DENIED unless the request's token may touch every account
    /// it names; then RESOURCE_EXHAUSTED if the branch is at its bound of calls in flight.
    /// Checked before the request is validated or proposed; the permit is held until the
    /// answer is ready.
    fn admit<T: Touches>(
        &self,
        request: &Request<T>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ServiceError> {
        crate::server::auth::authorize(
            self.tokens.as_deref(),
            request,
            request.get_ref().accounts(),
        )?;
        self.admission.admit()
    }

    /// The tonic server wrapping this service, with its message size bound.
    pub fn into_server(self) -> AccountsServer<Self> {
        AccountsServer::new(self).max_decoding_message_size(MESSAGE_SIZE_MAX_BYTES)
    }

    async fn write(&self, proposal: Proposal) -> Result<pb::WriteReply, ServiceError> {
        let (outcome, log_index) = self.branch.submit_proposal(proposal).await?;
        Ok(pb::WriteReply {
            result: Some(write_result(&outcome)?),
            log_index,
        })
    }
}

/// The accounts a request touches: what a bearer token must allow.
trait Touches {
    fn accounts(&self) -> Vec<u64>;
}

impl Touches for pb::OpenAccountRequest {
    fn accounts(&self) -> Vec<u64> {
        vec![self.account]
    }
}

impl Touches for pb::DepositRequest {
    fn accounts(&self) -> Vec<u64> {
        vec![self.account]
    }
}

impl Touches for pb::WithdrawRequest {
    fn accounts(&self) -> Vec<u64> {
        vec![self.account]
    }
}

impl Touches for pb::TransferRequest {
    fn accounts(&self) -> Vec<u64> {
        vec![self.from_account, self.to_account]
    }
}

impl Touches for pb::SubmitBatchRequest {
    fn accounts(&self) -> Vec<u64> {
        use pb::batch_item::Write;
        self.items
            .iter()
            .flat_map(|item| match &item.write {
                Some(Write::OpenAccount(r)) => r.accounts(),
                Some(Write::Deposit(r)) => r.accounts(),
                Some(Write::Withdraw(r)) => r.accounts(),
                Some(Write::Transfer(r)) => r.accounts(),
                None => Vec::new(),
            })
            .collect()
    }
}

impl Touches for pb::GetBalancesRequest {
    fn accounts(&self) -> Vec<u64> {
        self.accounts.clone()
    }
}

/// A customer's request id: present, with a non-zero origin.
fn request_id(id: Option<&pb::RequestId>) -> Result<RequestId, ServiceError> {
    let id =
        id.ok_or_else(|| invalid("request_id is missing: every write needs {origin, sequence}"))?;
    if id.origin == 0 {
        return Err(invalid(
            "request_id.origin is 0: choose a random non-zero origin per client incarnation",
        ));
    }
    Ok(RequestId {
        origin: id.origin,
        sequence: id.sequence,
    })
}

fn open_proposal(r: &pb::OpenAccountRequest) -> Result<Proposal, ServiceError> {
    Ok(Proposal {
        request_id: request_id(r.request_id.as_ref())?,
        command: Command::Open {
            account: r.account,
            balance_minor_units: r.opening_balance,
            overdraft_limit_minor_units: r.overdraft_limit,
            balance_max_minor_units: r.balance_max.unwrap_or(BALANCE_MAX_DEFAULT),
        },
    })
}

fn deposit_proposal(r: &pb::DepositRequest) -> Result<Proposal, ServiceError> {
    Ok(Proposal {
        request_id: request_id(r.request_id.as_ref())?,
        command: Command::Deposit {
            account: r.account,
            amount_minor_units: r.amount,
        },
    })
}

fn withdraw_proposal(r: &pb::WithdrawRequest) -> Result<Proposal, ServiceError> {
    Ok(Proposal {
        request_id: request_id(r.request_id.as_ref())?,
        command: Command::Withdraw {
            account: r.account,
            amount_minor_units: r.amount,
        },
    })
}

fn transfer_proposal(r: &pb::TransferRequest) -> Result<Proposal, ServiceError> {
    Ok(Proposal {
        request_id: request_id(r.request_id.as_ref())?,
        command: Command::Transfer {
            from: r.from_account,
            to: r.to_account,
            amount_minor_units: r.amount,
        },
    })
}

/// A whole batch as one proposal, validated: 1..=[`BATCH_ITEMS_MAX`] items, each a write with
/// its own request id, none reusing the batch's id.
fn batch_proposal(r: &pb::SubmitBatchRequest) -> Result<Proposal, ServiceError> {
    let batch_id = request_id(r.request_id.as_ref())?;
    if r.items.is_empty() || r.items.len() > BATCH_ITEMS_MAX {
        return Err(invalid(format!(
            "a batch holds 1 to {BATCH_ITEMS_MAX} items, got {}",
            r.items.len()
        )));
    }
    let mut items = Vec::with_capacity(r.items.len());
    for (position, item) in r.items.iter().enumerate() {
        use pb::batch_item::Write;
        let proposal = match &item.write {
            Some(Write::OpenAccount(r)) => open_proposal(r),
            Some(Write::Deposit(r)) => deposit_proposal(r),
            Some(Write::Withdraw(r)) => withdraw_proposal(r),
            Some(Write::Transfer(r)) => transfer_proposal(r),
            None => Err(invalid("the item has no write")),
        }
        .map_err(|error| invalid(format!("batch item {position}: {error}")))?;
        if proposal.request_id == batch_id {
            return Err(invalid(format!(
                "batch item {position} reuses the batch's own request id"
            )));
        }
        items.push(proposal);
    }
    Ok(Proposal {
        request_id: batch_id,
        command: Command::Batch(items),
    })
}

fn result(outcome: pb::Outcome) -> pb::WriteResult {
    pb::WriteResult {
        outcome: outcome.into(),
        ..Default::default()
    }
}

fn with_balance(outcome: pb::Outcome, balance_minor_units: i64) -> pb::WriteResult {
    pb::WriteResult {
        balance: Some(balance_minor_units),
        ..result(outcome)
    }
}

/// One write's ledger outcome on the wire. Batch-level outcomes are not write results.
fn write_result(outcome: &Outcome) -> Result<pb::WriteResult, ServiceError> {
    use pb::Outcome as O;
    Ok(match *outcome {
        Outcome::Opened {
            balance_minor_units,
        }
        | Outcome::Deposited {
            balance_minor_units,
        }
        | Outcome::Withdrawn {
            balance_minor_units,
        } => with_balance(O::Ok, balance_minor_units),
        Outcome::Transferred {
            from_balance_minor_units,
            to_balance_minor_units,
        } => pb::WriteResult {
            to_balance: Some(to_balance_minor_units),
            ..with_balance(O::Ok, from_balance_minor_units)
        },
        Outcome::InsufficientFunds {
            balance_minor_units,
        } => with_balance(O::InsufficientFunds, balance_minor_units),
        Outcome::BalanceLimitExceeded {
            balance_minor_units,
        } => with_balance(O::BalanceLimitExceeded, balance_minor_units),
        Outcome::AccountExists {
            balance_minor_units,
        } => with_balance(O::AccountExists, balance_minor_units),
        Outcome::UnknownAccount { account } => pb::WriteResult {
            unknown_account: Some(account),
            ..result(O::UnknownAccount)
        },
        Outcome::InvalidAmount => result(O::InvalidAmount),
        Outcome::RequestIdReused => result(O::RequestIdReused),
        Outcome::RequestIdExpired => result(O::RequestIdExpired),
        Outcome::InvalidBatch => return Err(invalid("the ledger refused the batch as malformed")),
        Outcome::Batch(_) | Outcome::NoCommand => {
            return Err(ServiceError::UnexpectedOutcome(format!(
                "{outcome:?} for a single write"
            )))
        }
    })
}

/// A batch's ledger outcome on the wire.
fn batch_reply(outcome: &Outcome, log_index: u64) -> Result<pb::SubmitBatchReply, ServiceError> {
    let (batch_outcome, results) = match outcome {
        Outcome::Batch(outcomes) => (
            pb::Outcome::Ok,
            outcomes
                .iter()
                .map(write_result)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        // The batch's own id was used for something else, or is forgotten: nothing applied.
        Outcome::RequestIdReused => (pb::Outcome::RequestIdReused, Vec::new()),
        Outcome::RequestIdExpired => (pb::Outcome::RequestIdExpired, Vec::new()),
        Outcome::InvalidBatch => return Err(invalid("the ledger refused the batch as malformed")),
        other => {
            return Err(ServiceError::UnexpectedOutcome(format!(
                "{other:?} for a batch"
            )))
        }
    };
    Ok(pb::SubmitBatchReply {
        outcome: batch_outcome.into(),
        results,
        log_index,
    })
}

impl AccountsService {
    /// A call's answer, as tonic wants it: errors through the one mapping in [`super::error`];
    /// an answer names the leader as this branch knows it ([`LEADER_METADATA`]), so that the
    /// client sends its writes there first and saves this branch's forward.
    fn answer<T>(&self, answer: Result<T, ServiceError>) -> Result<Response<T>, Status> {
        let mut response = answer.map(Response::new).map_err(Status::from)?;
        let leader = self
            .branch
            .leader_address()
            .and_then(|addr| MetadataValue::try_from(addr).ok());
        if let Some(leader) = leader {
            response.metadata_mut().insert(LEADER_METADATA, leader);
        }
        Ok(response)
    }
}

fn invalid(why: impl Into<String>) -> ServiceError {
    ServiceError::InvalidRequest(why.into())
}

#[tonic::async_trait]
impl pb::accounts_server::Accounts for AccountsService {
    async fn open_account(
        &self,
        request: Request<pb::OpenAccountRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        self.answer(self.write_call(&request, open_proposal).await)
    }

    async fn deposit(
        &self,
        request: Request<pb::DepositRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        self.answer(self.write_call(&request, deposit_proposal).await)
    }

    async fn withdraw(
        &self,
        request: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        self.answer(self.write_call(&request, withdraw_proposal).await)
    }

    async fn transfer(
        &self,
        request: Request<pb::TransferRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        self.answer(self.write_call(&request, transfer_proposal).await)
    }

    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchReply>, Status> {
        self.answer(self.submit_batch_call(&request).await)
    }

    async fn get_balances(
        &self,
        request: Request<pb::GetBalancesRequest>,
    ) -> Result<Response<pb::GetBalancesReply>, Status> {
        self.answer(self.get_balances_call(request).await)
    }

    type ListAccountsStream = AccountsPages;

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<AccountsPages>, Status> {
        self.answer(self.list_accounts_call(request).await)
    }
}

impl AccountsService {
    /// One write: admitted, validated into a proposal, proposed.
    async fn write_call<T: Touches>(
        &self,
        request: &Request<T>,
        proposal: impl FnOnce(&T) -> Result<Proposal, ServiceError>,
    ) -> Result<pb::WriteReply, ServiceError> {
        let _permit = self.admit(request)?;
        self.write(proposal(request.get_ref())?).await
    }

    async fn submit_batch_call(
        &self,
        request: &Request<pb::SubmitBatchRequest>,
    ) -> Result<pb::SubmitBatchReply, ServiceError> {
        let _permit = self.admit(request)?;
        let proposal = batch_proposal(request.get_ref())?;
        let (outcome, log_index) = self.branch.submit_proposal(proposal).await?;
        batch_reply(&outcome, log_index)
    }

    async fn get_balances_call(
        &self,
        request: Request<pb::GetBalancesRequest>,
    ) -> Result<pb::GetBalancesReply, ServiceError> {
        let _permit = self.admit(&request)?;
        let request = request.into_inner();
        if request.accounts.is_empty() || request.accounts.len() > ACCOUNTS_PER_READ_MAX {
            return Err(invalid(format!(
                "GetBalances takes 1 to {ACCOUNTS_PER_READ_MAX} accounts, got {}",
                request.accounts.len()
            )));
        }
        let level = pb::ReadLevel::try_from(request.read_level)
            .map_err(|_| invalid(format!("unknown read level {}", request.read_level)))?;
        let deadline = Instant::now() + REQUEST_DEADLINE;
        match level {
            pb::ReadLevel::Linearizable => {
                let read_index = self.branch.read_index(deadline).await?;
                self.branch.wait_applied(read_index, deadline).await?;
            }
            pb::ReadLevel::ReadYourWrites if request.min_log_index > 0 => {
                self.branch
                    .wait_applied(Some(request.min_log_index), deadline)
                    .await?;
            }
            pb::ReadLevel::ReadYourWrites | pb::ReadLevel::Local => {}
        }
        let (balances, applied_index) = self.branch.local_balances(&request.accounts)?;
        let balances = request
            .accounts
            .iter()
            .zip(balances)
            .map(|(&account, balance)| pb::AccountBalance { account, balance })
            .collect();
        Ok(pb::GetBalancesReply {
            balances,
            applied_index: applied_index.unwrap_or(0),
        })
    }
}

impl AccountsService {
    /// `ListAccounts`: a read index, then one copy of (id, balance) of every account the
    /// caller may see, taken in one short critical section with the index it reflects; the
    /// pages are streamed from that copy, so a slow reader never holds the state machine.
    async fn list_accounts_call(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<AccountsPages, ServiceError> {
        // A token listing only some accounts sees only those; no token configured: all.
        let visible: Option<BTreeSet<u64>> = match self.tokens.as_deref() {
            None => None,
            Some(tokens) => match &tokens.authenticate(&request)?.access {
                Access::All => None,
                Access::Accounts(accounts) => Some(accounts.clone()),
            },
        };
        let _permit = self.admission.admit()?;
        let request = request.into_inner();
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let read_index = self.branch.read_index(deadline).await?;
        self.branch.wait_applied(read_index, deadline).await?;
        let from = request.after.map_or(Bound::Unbounded, Bound::Excluded);
        let limit = match request.limit {
            0 => usize::MAX,
            limit => usize::try_from(limit).unwrap_or(usize::MAX),
        };
        let (accounts, applied_index) = self.branch.read_state(|state| {
            let ledger = &state.ledger;
            let accounts: Vec<(u64, i64)> = match &visible {
                None => ledger
                    .accounts()
                    .range_from(from)
                    .take(limit)
                    .map(|(id, account)| (id, account.balance_minor_units))
                    .collect(),
                Some(visible) => visible
                    .range((from, Bound::Unbounded))
                    .filter_map(|&id| ledger.balance(id).map(|balance| (id, balance)))
                    .take(limit)
                    .collect(),
            };
            (accounts, state.last_applied.map_or(0, |id| id.index))
        })?;
        Ok(Box::pin(pages(accounts, applied_index)))
    }
}

/// `accounts` as pages of at most [`LIST_PAGE_ACCOUNTS_MAX`], each carrying `applied_index`;
/// one empty page if there are none, so the caller always learns the index.
fn pages(
    accounts: Vec<(u64, i64)>,
    applied_index: u64,
) -> impl Stream<Item = Result<pb::AccountsPage, Status>> + Send + 'static {
    let count = accounts.len().div_ceil(LIST_PAGE_ACCOUNTS_MAX).max(1);
    futures::stream::iter(0..count).map(move |page| {
        let start = (page * LIST_PAGE_ACCOUNTS_MAX).min(accounts.len());
        let end = (start + LIST_PAGE_ACCOUNTS_MAX).min(accounts.len());
        Ok(pb::AccountsPage {
            accounts: accounts[start..end]
                .iter()
                .map(|&(account, balance)| pb::AccountBalance {
                    account,
                    balance: Some(balance),
                })
                .collect(),
            applied_index,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(origin: u64, sequence: u64) -> Option<pb::RequestId> {
        Some(pb::RequestId { origin, sequence })
    }

    fn deposit_item(origin: u64, sequence: u64) -> pb::BatchItem {
        pb::BatchItem {
            write: Some(pb::batch_item::Write::Deposit(pb::DepositRequest {
                request_id: id(origin, sequence),
                account: 1,
                amount: 5,
            })),
        }
    }

    fn code<T>(result: Result<T, ServiceError>) -> Option<tonic::Code> {
        result.err().map(|e| e.code())
    }

    /// What a token must allow: both sides of a transfer, every item of a batch (an item
    /// without a write touches nothing, and is refused as malformed later).
    #[test]
    fn requests_name_every_account_they_touch() {
        let transfer = pb::TransferRequest {
            request_id: id(1, 1),
            from_account: 4,
            to_account: 9,
            amount: 1,
        };
        assert_eq!(transfer.accounts(), vec![4, 9]);
        let batch = pb::SubmitBatchRequest {
            request_id: id(9, 1),
            items: vec![
                deposit_item(9, 2),
                pb::BatchItem {
                    write: Some(pb::batch_item::Write::Transfer(transfer)),
                },
                pb::BatchItem {
                    write: Some(pb::batch_item::Write::OpenAccount(pb::OpenAccountRequest {
                        request_id: id(9, 3),
                        account: 7,
                        ..Default::default()
                    })),
                },
                pb::BatchItem { write: None },
            ],
        };
        assert_eq!(batch.accounts(), vec![1, 4, 9, 7]);
        let read = pb::GetBalancesRequest {
            accounts: vec![3, 5],
            ..Default::default()
        };
        assert_eq!(read.accounts(), vec![3, 5]);
    }

    #[test]
    fn request_ids_must_be_present_with_a_non_zero_origin() {
        assert_eq!(code(request_id(None)), Some(tonic::Code::InvalidArgument));
        assert_eq!(
            code(request_id(id(0, 5).as_ref())),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            request_id(id(7, 0).as_ref()).ok(),
            Some(RequestId {
                origin: 7,
                sequence: 0
            })
        );
    }

    #[test]
    fn malformed_batches_are_invalid_arguments() {
        let batch = |items: Vec<pb::BatchItem>| pb::SubmitBatchRequest {
            request_id: id(9, 1),
            items,
        };
        assert_eq!(
            code(batch_proposal(&batch(vec![]))),
            Some(tonic::Code::InvalidArgument)
        );
        let full: Vec<_> = (0..BATCH_ITEMS_MAX as u64)
            .map(|s| deposit_item(9, s + 2))
            .collect();
        assert!(batch_proposal(&batch(full.clone())).is_ok());
        let mut over = full;
        over.push(deposit_item(9, 1_000_000));
        assert_eq!(
            code(batch_proposal(&batch(over))),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(batch_proposal(&batch(vec![deposit_item(9, 1)]))),
            Some(tonic::Code::InvalidArgument),
            "an item reusing the batch's id"
        );
        assert_eq!(
            code(batch_proposal(&batch(vec![deposit_item(0, 2)]))),
            Some(tonic::Code::InvalidArgument),
            "an item with a zero origin"
        );
        assert_eq!(
            code(batch_proposal(&batch(vec![pb::BatchItem { write: None }]))),
            Some(tonic::Code::InvalidArgument)
        );
    }

    #[test]
    fn every_business_outcome_is_a_reply() {
        let cases = [
            (
                Outcome::Transferred {
                    from_balance_minor_units: -3,
                    to_balance_minor_units: 8,
                },
                pb::Outcome::Ok,
                Some(-3),
                Some(8),
            ),
            (
                Outcome::InsufficientFunds {
                    balance_minor_units: 2,
                },
                pb::Outcome::InsufficientFunds,
                Some(2),
                None,
            ),
            (
                Outcome::RequestIdReused,
                pb::Outcome::RequestIdReused,
                None,
                None,
            ),
            (
                Outcome::RequestIdExpired,
                pb::Outcome::RequestIdExpired,
                None,
                None,
            ),
        ];
        for (outcome, expected, balance, to_balance) in cases {
            let result = write_result(&outcome).expect("a reply");
            assert_eq!(result.outcome(), expected);
            assert_eq!((result.balance, result.to_balance), (balance, to_balance));
        }
        let unknown = write_result(&Outcome::UnknownAccount { account: 42 }).expect("a reply");
        assert_eq!(unknown.unknown_account, Some(42));
        assert_eq!(
            code(write_result(&Outcome::NoCommand)),
            Some(tonic::Code::Internal)
        );
    }

    #[tokio::test]
    async fn listings_are_bounded_pages_at_one_index() {
        let accounts: Vec<(u64, i64)> = (0..2_500).map(|id| (id, id as i64 - 7)).collect();
        let got: Vec<pb::AccountsPage> = pages(accounts, 42)
            .map(|page| page.expect("a page"))
            .collect()
            .await;
        let sizes: Vec<usize> = got.iter().map(|page| page.accounts.len()).collect();
        assert_eq!(sizes, vec![1_000, 1_000, 500]);
        assert!(got.iter().all(|page| page.applied_index == 42));
        assert_eq!(got[2].accounts[499].account, 2_499);
        assert_eq!(got[2].accounts[499].balance, Some(2_492));
        let empty: Vec<_> = pages(Vec::new(), 9).collect().await;
        assert_eq!(empty.len(), 1, "an empty listing still says its index");
    }
}
