//! One `bank bench` client, a [`LoadClient`] of the driver: what it sends — an operation drawn
//! from the mix, or with `batch > 1` a batch of that many writes sent as one `SubmitBatch`
//! (queries then read `batch` accounts at once) — and what it makes of the answers: latency by
//! kind of request, errors by kind, the money acknowledged writes moved, and (with `batch` 1)
//! each operation's completion for the history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::mix::{Kind, Mix};
use super::stall::Acks;
use crate::check::{Op, OpResult};
use crate::client::{BatchWritten, Client, ClientError, Outcome, ReadLevel, Write, Written};
use crate::load::driver::LoadClient;
use crate::load::history::{self, Completion, Reply};
use crate::load::measure::Tally;
use crate::load::random::Random;
use crate::proto::v1 as pb;

/// Amounts are drawn from `1..=AMOUNT_MAX`.
const AMOUNT_MAX: u64 = 100;

/// One request.
pub(crate) enum Request {
    /// Read these accounts.
    Query(Vec<u64>),
    /// One write (deposit, withdrawal or transfer).
    Single(Write),
    /// Writes sent as one batch.
    Batch(Vec<Write>),
}

/// What a request answered.
pub(crate) enum Answer {
    Read(Result<pb::GetBalancesReply, ClientError>),
    Written(Result<Written, ClientError>),
    Batch(Result<BatchWritten, ClientError>),
}

/// One load client of `bank bench`: one caller of a `bank.v1` [`Client`] (which, with
/// `--callers-per-client` above 1, it shares with that client's other callers), its random
/// choices, what it measured.
pub(crate) struct BenchClient {
    pub client: Arc<Client>,
    pub mix: Mix,
    /// Writes per request (1: one operation per request).
    pub batch: usize,
    pub read_level: ReadLevel,
    /// Accounts `1..=accounts` (at least 2).
    pub accounts: u64,
    pub random: Random,
    /// Incremented with every answered operation (for a progress bar).
    pub progress: Arc<AtomicU64>,
    /// Told of every acknowledged write (shared by the run's clients).
    pub acks: Acks,
    pub tally: Tally,
}

impl BenchClient {
    fn account(&mut self) -> u64 {
        1 + self.random.below(self.accounts)
    }

    fn write(&mut self, kind: Kind) -> Write {
        let amount = 1 + self.random.below(AMOUNT_MAX);
        match kind {
            Kind::Deposit => Write::Deposit {
                account: self.account(),
                amount,
            },
            Kind::Withdraw => Write::Withdraw {
                account: self.account(),
                amount,
            },
            Kind::Transfer | Kind::Query => {
                let from = self.account();
                let to = 1 + (from + self.random.below(self.accounts - 1)) % self.accounts;
                Write::Transfer { from, to, amount }
            }
        }
    }

    /// A write drawn from the mix, queries left out.
    fn batch_item(&mut self) -> Write {
        let kind = loop {
            let kind = self.mix.draw(&mut self.random);
            if kind != Kind::Query {
                break kind;
            }
        };
        self.write(kind)
    }

    fn answered(&mut self, operations: u64) {
        self.tally.operations += operations;
        self.progress.fetch_add(operations, Ordering::Relaxed);
    }
}

/// The kind of a write as the report names it, and the money it adds to the total.
fn kind_and_delta(write: &Write) -> (&'static str, i128) {
    match *write {
        Write::Deposit { amount, .. } => ("deposit", i128::from(amount)),
        Write::Withdraw { amount, .. } => ("withdraw", -i128::from(amount)),
        Write::Transfer { .. } => ("transfer", 0),
        Write::Open { .. } => ("open", 0),
    }
}

pub(crate) fn error_kind(error: &ClientError) -> String {
    match error {
        ClientError::OutcomeUnknown { .. } => "outcome_unknown".to_string(),
        ClientError::Unreachable { .. } => "unavailable".to_string(),
        ClientError::Refused { cause, .. } => format!("refused_{:?}", cause.code).to_lowercase(),
        ClientError::NoBranches
        | ClientError::BadAddress { .. }
        | ClientError::UnknownBranch(_)
        | ClientError::NegativeBalance { .. } => "client".to_string(),
        ClientError::QueueFull { .. } => "queue_full".to_string(),
        ClientError::Stream { .. } => "stream".to_string(),
    }
}

pub(crate) fn outcome_kind(outcome: Outcome) -> String {
    format!("{outcome:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let lower = c.to_ascii_lowercase();
            if c.is_ascii_uppercase() && i > 0 {
                vec!['_', lower]
            } else {
                vec![lower]
            }
        })
        .collect()
}

impl LoadClient for BenchClient {
    type Op = Request;
    type Answer = Answer;

    /// A request claims one unit per account read or write sent.
    fn units(&self) -> u64 {
        self.batch as u64
    }

    fn pick(&mut self) -> Request {
        let kind = self.mix.draw(&mut self.random);
        if kind == Kind::Query {
            Request::Query((0..self.batch).map(|_| self.account()).collect())
        } else if self.batch == 1 {
            Request::Single(self.write(kind))
        } else {
            Request::Batch((0..self.batch).map(|_| self.batch_item()).collect())
        }
    }

    fn invocation(&self, request: &Request) -> Option<Op> {
        match request {
            Request::Query(accounts) => Some(Op::Read {
                accounts: accounts.clone(),
            }),
            // Opens are not drawn: the accounts are opened before the run.
            Request::Single(write) => Some(history::write_op(write)),
            // A batch is not one operation of a history: `run_bench` records none with them.
            Request::Batch(_) => None,
        }
    }

    async fn perform(&mut self, request: &Request) -> Answer {
        match request {
            Request::Query(accounts) => {
                Answer::Read(self.client.get_balances(accounts, self.read_level).await)
            }
            Request::Single(write) => Answer::Written(self.client.write(write.clone()).await),
            Request::Batch(writes) => Answer::Batch(self.client.submit_batch(writes).await),
        }
    }

    fn completion(&self, invoked: &Op, answer: &Answer) -> Completion {
        match answer {
            Answer::Read(read) => history::completion(invoked, Reply::Read(read)),
            Answer::Written(written) => history::completion(invoked, Reply::Write(written)),
            // Not asked: a batch is not recorded (see `invocation`).
            Answer::Batch(Err(e)) => Completion::Info(e.to_string()),
            Answer::Batch(Ok(_)) => Completion::Ok(OpResult::default()),
        }
    }

    fn tally(&mut self, request: Request, answer: Answer, latency: Duration) {
        match (request, answer) {
            (Request::Query(accounts), Answer::Read(read)) => {
                self.tally.record("query", latency);
                match read {
                    Ok(_) => self.answered(accounts.len() as u64),
                    Err(e) => self.tally.error(format!("query_{}", error_kind(&e))),
                }
            }
            (Request::Single(write), Answer::Written(written)) => {
                let (kind, delta) = kind_and_delta(&write);
                self.tally.record(kind, latency);
                match written.map(|w| w.outcome()) {
                    Ok(Outcome::Ok) => {
                        self.answered(1);
                        self.acks.ack();
                        self.tally.net += delta;
                    }
                    Ok(outcome) => {
                        self.answered(1);
                        self.tally
                            .error(format!("{kind}_{}", outcome_kind(outcome)));
                    }
                    Err(e) => {
                        self.tally.error(format!("{kind}_{}", error_kind(&e)));
                        self.tally.unknown(delta);
                    }
                }
            }
            (Request::Batch(writes), Answer::Batch(written)) => {
                self.tally.record("batch", latency);
                self.tally_batch(&writes, written);
            }
            // `perform` answers each request with its own kind of answer.
            _ => {}
        }
    }
}

impl BenchClient {
    fn tally_batch(&mut self, writes: &[Write], written: Result<BatchWritten, ClientError>) {
        match written {
            Ok(written) if written.reply.outcome() == Outcome::Ok => {
                self.answered(writes.len() as u64);
                self.acks.ack();
                for (write, result) in writes.iter().zip(&written.reply.results) {
                    match result.outcome() {
                        Outcome::Ok => self.tally.net += kind_and_delta(write).1,
                        outcome => self
                            .tally
                            .error(format!("batch_item_{}", outcome_kind(outcome))),
                    }
                }
            }
            Ok(written) => self
                .tally
                .error(format!("batch_{}", outcome_kind(written.reply.outcome()))),
            Err(e) => {
                self.tally.error(format!("batch_{}", error_kind(&e)));
                for write in writes {
                    self.tally.unknown(kind_and_delta(write).1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_kinds_are_snake_case() {
        assert_eq!(
            outcome_kind(Outcome::InsufficientFunds),
            "insufficient_funds"
        );
    }
}
