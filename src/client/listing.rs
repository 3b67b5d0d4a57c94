//! [`Client::list_accounts`]: every account and its balance, streamed in pages from one copy of
//! a branch's ledger taken after a read index, so the whole listing is one linearizable read.

use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tokio_stream::StreamExt;

use tonic::Code;

use super::{pb, Asked, Cause, Client, ClientError};

/// At most this many accounts in one listing held in memory (32 bytes each: 320 MB).
pub const LISTED_ACCOUNTS_MAX: usize = 10_000_000;

/// Every listed account (id, balance in minor units), ids increasing, as of `applied_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub applied_index: u64,
    pub accounts: Vec<(u64, i64)>,
}

impl Listing {
    /// The sum of the listed balances (`i128`: no sum of `i64`s overflows it).
    pub fn total_minor_units(&self) -> i128 {
        self.accounts.iter().map(|&(_, b)| i128::from(b)).sum()
    }
}

fn broken(cause: Cause) -> ClientError {
    ClientError::Stream {
        what: "the account listing",
        cause,
    }
}

impl Client {
    /// Every account with an id above `after` (all if `None`), at most `limit` of them (0: no
    /// limit), read at one applied index. The first answer is retried at other branches like
    /// any read; the pages must then all arrive within the client's deadline.
    pub async fn list_accounts(
        &self,
        after: Option<u64>,
        limit: u64,
    ) -> Result<Listing, ClientError> {
        let deadline = Instant::now() + self.config.deadline;
        let message = pb::ListAccountsRequest { after, limit };
        let mut pages = self
            .call(Asked::Read, |mut c, t| {
                let m = message;
                async move { c.list_accounts(self.request(m, t)).await }
            })
            .await?;
        let addr = &self.branches[self.preferred.load(Ordering::Relaxed)].0;
        let bad = |message: String| broken(Cause::new(addr, Code::DataLoss, message));
        let mut listing = Listing {
            applied_index: 0,
            accounts: Vec::new(),
        };
        let mut first = true;
        loop {
            let page = match tokio::time::timeout_at(deadline, pages.next()).await {
                Err(_) => {
                    return Err(broken(Cause::new(
                        addr,
                        Code::DeadlineExceeded,
                        format!("did not send every page within {:?}", self.config.deadline),
                    )))
                }
                Ok(None) => break,
                Ok(Some(Err(status))) => {
                    return Err(broken(Cause::status(addr, &status, self.channels_tls)))
                }
                Ok(Some(Ok(page))) => page,
            };
            if first {
                listing.applied_index = page.applied_index;
                first = false;
            } else if page.applied_index != listing.applied_index {
                return Err(bad(format!(
                    "sent pages of two indexes, {} and {}",
                    listing.applied_index, page.applied_index
                )));
            }
            if listing.accounts.len().saturating_add(page.accounts.len()) > LISTED_ACCOUNTS_MAX {
                return Err(broken(Cause::new(
                    addr,
                    Code::ResourceExhausted,
                    format!(
                        "sent more than {LISTED_ACCOUNTS_MAX} accounts; list them in parts with \
                         --after and --limit"
                    ),
                )));
            }
            for entry in page.accounts {
                let balance = entry.balance.ok_or_else(|| {
                    bad(format!("sent account {} with no balance", entry.account))
                })?;
                if let Some(&(previous, _)) = listing.accounts.last() {
                    if entry.account <= previous {
                        return Err(bad(format!(
                            "sent account {} after account {previous}: not in order",
                            entry.account
                        )));
                    }
                }
                listing.accounts.push((entry.account, balance));
            }
        }
        if first {
            return Err(bad("sent no page".to_string()));
        }
        Ok(listing)
    }
}
