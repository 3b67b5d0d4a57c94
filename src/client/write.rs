//! Writes on the wire: one write as its own RPC ([`Client::send_one`]), and writes sent
//! together as one `SubmitBatch` under ids chosen before the first attempt
//! ([`Client::send_batch`]), so that every retry resends the same batch id and item ids.
//! [`Client::write_with_id`] chooses between the batcher ([`super::batcher`]) and the single
//! RPC; [`Client::submit_batch`] is the caller's own batch, sent as it is.

use std::sync::atomic::Ordering;

use super::{Asked, BatchWritten, Client, ClientError, Write, Written};
use crate::ledger::RequestId;
use crate::proto::v1 as pb;

pub(super) fn wire_id(id: RequestId) -> Option<pb::RequestId> {
    Some(pb::RequestId {
        origin: id.origin,
        sequence: id.sequence,
    })
}

pub(super) fn batch_item(id: RequestId, write: &Write) -> pb::BatchItem {
    use pb::batch_item::Write as W;
    let request_id = wire_id(id);
    let write = match *write {
        Write::Open {
            account,
            opening_balance,
            overdraft_limit,
            balance_max,
        } => W::OpenAccount(pb::OpenAccountRequest {
            request_id,
            account,
            opening_balance,
            overdraft_limit,
            balance_max,
        }),
        Write::Deposit { account, amount } => W::Deposit(pb::DepositRequest {
            request_id,
            account,
            amount,
        }),
        Write::Withdraw { account, amount } => W::Withdraw(pb::WithdrawRequest {
            request_id,
            account,
            amount,
        }),
        Write::Transfer { from, to, amount } => W::Transfer(pb::TransferRequest {
            request_id,
            from_account: from,
            to_account: to,
            amount,
        }),
    };
    pb::BatchItem { write: Some(write) }
}

impl Client {
    /// Sends `write` under `request_id`: a new one from [`Client::next_request_id`], or the id
    /// of an earlier attempt whose outcome is unknown (resending it is safe). With batching on
    /// ([`super::ClientConfig::batching`]) a write made while another is in flight on this
    /// client waits for it and goes out with the others that came meanwhile, in one
    /// `SubmitBatch`, keeping its own id and getting its own result.
    pub async fn write_with_id(
        &self,
        request_id: RequestId,
        write: &Write,
    ) -> Result<Written, ClientError> {
        if self.config.batching {
            self.write_batched(request_id, write).await
        } else {
            self.send_one(request_id, write).await
        }
    }

    /// Sends one write as its own RPC (retried under the same id).
    pub(super) async fn send_one(
        &self,
        request_id: RequestId,
        write: &Write,
    ) -> Result<Written, ClientError> {
        let id = wire_id(request_id);
        let reply = match write.clone() {
            Write::Open {
                account,
                opening_balance,
                overdraft_limit,
                balance_max,
            } => {
                let message = pb::OpenAccountRequest {
                    request_id: id,
                    account,
                    opening_balance,
                    overdraft_limit,
                    balance_max,
                };
                self.call(Asked::Write(request_id), |mut c, t| async move {
                    c.open_account(self.request(message, t)).await
                })
                .await?
            }
            Write::Deposit { account, amount } => {
                let message = pb::DepositRequest {
                    request_id: id,
                    account,
                    amount,
                };
                self.call(Asked::Write(request_id), |mut c, t| async move {
                    c.deposit(self.request(message, t)).await
                })
                .await?
            }
            Write::Withdraw { account, amount } => {
                let message = pb::WithdrawRequest {
                    request_id: id,
                    account,
                    amount,
                };
                self.call(Asked::Write(request_id), |mut c, t| async move {
                    c.withdraw(self.request(message, t)).await
                })
                .await?
            }
            Write::Transfer { from, to, amount } => {
                let message = pb::TransferRequest {
                    request_id: id,
                    from_account: from,
                    to_account: to,
                    amount,
                };
                self.call(Asked::Write(request_id), |mut c, t| async move {
                    c.transfer(self.request(message, t)).await
                })
                .await?
            }
        };
        self.write_index_max
            .fetch_max(reply.log_index, Ordering::Relaxed);
        Ok(Written {
            request_id,
            result: reply.result.unwrap_or_default(),
            log_index: reply.log_index,
        })
    }

    /// Sends up to 8,190 writes as one batch: one id for the batch, one per item.
    pub async fn submit_batch(&self, writes: &[Write]) -> Result<BatchWritten, ClientError> {
        let request_id = self.next_request_id();
        let items: Vec<(RequestId, Write)> = writes
            .iter()
            .map(|write| (self.next_request_id(), write.clone()))
            .collect();
        let reply = self.send_batch(request_id, &items).await?;
        Ok(BatchWritten {
            request_id,
            request_ids: items.into_iter().map(|(id, _)| id).collect(),
            reply,
        })
    }

    /// Sends `items` as one `SubmitBatch` under `request_id`; every attempt resends the same
    /// message, so the batch and each item keep their ids across retries.
    pub(super) async fn send_batch(
        &self,
        request_id: RequestId,
        items: &[(RequestId, Write)],
    ) -> Result<pb::SubmitBatchReply, ClientError> {
        let message = pb::SubmitBatchRequest {
            request_id: wire_id(request_id),
            items: items
                .iter()
                .map(|(id, write)| batch_item(*id, write))
                .collect(),
        };
        let reply = self
            .call(Asked::Write(request_id), |mut c, t| {
                let m = message.clone();
                async move { c.submit_batch(self.request(m, t)).await }
            })
            .await?;
        self.write_index_max
            .fetch_max(reply.log_index, Ordering::Relaxed);
        Ok(reply)
    }
}
