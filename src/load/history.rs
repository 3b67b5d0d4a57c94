//! A history as it is recorded, for [`crate::check`]: [`Recorder`] keeps a run's events in the
//! order they happened, timed in microseconds on one clock (since the run started, or the
//! simulator's simulated time); [`Completion`] is how one operation ended, and [`completion`]
//! the one place that reads it from what the `bank.v1` client answered (for `bank bench`,
//! Jepsen's bank workload and the simulator's bank customers alike), as [`write_op`] is for a
//! write's invocation. The driver ([`super::driver`]) records each operation's invocation and
//! completion; the workloads add the `init` and `final` events.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::check::{HistoryEvent, Observation, Op, OpResult};
use crate::client::{ClientError, Outcome, Write, Written};
use crate::proto::v1 as pb;

/// How an operation ended, as a history records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// It happened, and answered this.
    Ok(OpResult),
    /// It definitely did not happen.
    Fail {
        observation: Option<Observation>,
        error: Option<String>,
    },
    /// Its outcome is unknown: it may take effect at any time later. The process that sent it
    /// is not reused (see [`super::driver`]).
    Info(String),
}

/// What the `bank.v1` client answered one operation.
#[derive(Debug, Clone, Copy)]
pub enum Reply<'a> {
    /// A read of balances.
    Read(&'a Result<pb::GetBalancesReply, ClientError>),
    /// A write (open, deposit, withdrawal, transfer).
    Write(&'a Result<Written, ClientError>),
}

/// How an operation sent through the `bank.v1` client ended, as a history records it. `op` is
/// the operation as its invocation was recorded: a transfer's result carries both balances
/// after it, any other write's the one balance after it.
///
/// - A read answered is `ok` with the balances (an account that does not exist is left out).
///   A read not answered is `fail`: a read changes nothing, so one no branch served did not
///   happen.
/// - A write the ledger applied is `ok`. One it refused is `fail` (nothing applied), with
///   what an insufficient-funds refusal saw, which the checker holds against its model; but a
///   write whose request id had expired (it may have been applied before) or was reused is
///   `info`.
/// - A write refused as invalid (`InvalidArgument`) was refused before it was proposed:
///   `fail`. Any other error (the client gave up at its deadline, no branch answered) is
///   `info`: it may take effect at any time later.
pub fn completion(op: &Op, reply: Reply<'_>) -> Completion {
    match reply {
        Reply::Read(Ok(read)) => Completion::Ok(OpResult::read(
            read.balances
                .iter()
                .filter_map(|b| b.balance.map(|balance| (b.account, balance)))
                .collect(),
        )),
        Reply::Read(Err(e)) => Completion::Fail {
            observation: None,
            error: Some(e.to_string()),
        },
        Reply::Write(Ok(written)) => {
            let result = &written.result;
            match written.outcome() {
                Outcome::Ok => Completion::Ok(match (op, result.balance, result.to_balance) {
                    (Op::Transfer { .. }, Some(from), Some(to)) => OpResult::transfer(from, to),
                    (Op::Transfer { .. } | Op::Read { .. }, _, _) => OpResult::default(),
                    (_, Some(balance), _) => OpResult::balance(balance),
                    _ => OpResult::default(),
                }),
                unknown @ (Outcome::RequestIdExpired | Outcome::RequestIdReused) => {
                    Completion::Info(format!("{unknown:?}"))
                }
                refused => Completion::Fail {
                    observation: (refused == Outcome::InsufficientFunds).then_some(
                        Observation::InsufficientFunds {
                            balance: result.balance,
                        },
                    ),
                    error: Some(format!("{refused:?}")),
                },
            }
        }
        Reply::Write(Err(ClientError::Refused { cause, .. }))
            if cause.code == tonic::Code::InvalidArgument =>
        {
            Completion::Fail {
                observation: None,
                error: Some(cause.message.clone()),
            }
        }
        Reply::Write(Err(e)) => Completion::Info(e.to_string()),
    }
}

/// A write as a history records its invocation. Amounts above `i64::MAX` (which no workload
/// draws) are recorded as `i64::MAX`.
pub fn write_op(write: &Write) -> Op {
    let signed = |amount: u64| i64::try_from(amount).unwrap_or(i64::MAX);
    match *write {
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
            balance_min: -signed(overdraft_limit),
        },
    }
}

/// Where a history's times come from.
#[derive(Debug, Clone, Copy)]
enum Clock {
    /// Microseconds since this instant, on the system's monotonic clock.
    Since(Instant),
    /// Microseconds from a clock of the caller's (the simulator's simulated time).
    Given(fn() -> u64),
}

/// The shared history of a run: cheap to clone, every clone records into the same events.
#[derive(Debug, Clone)]
pub struct Recorder {
    clock: Clock,
    events: Arc<Mutex<Vec<HistoryEvent>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Recorder {
            clock: Clock::Since(Instant::now()),
            events: Arc::default(),
        }
    }

    /// An empty history timed by `now_us`: microseconds from any origin, but one clock for the
    /// whole history (the checker compares times of different processes).
    pub fn with_clock(now_us: fn() -> u64) -> Self {
        Recorder {
            clock: Clock::Given(now_us),
            events: Arc::default(),
        }
    }

    /// Microseconds on the history's clock.
    pub fn now_us(&self) -> u64 {
        match self.clock {
            Clock::Since(started) => {
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
            }
            Clock::Given(now_us) => now_us(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<HistoryEvent>> {
        // A poisoned lock means a client task panicked; its events are still sound.
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `event` as it is.
    pub fn record(&self, event: HistoryEvent) {
        self.lock().push(event);
    }

    /// `process` sends `op`, now.
    pub fn invoke(&self, process: u64, op: Op) {
        let time_us = self.now_us();
        self.record(HistoryEvent::Invoke {
            process,
            time_us,
            op,
        });
    }

    /// `process`'s operation ended, now.
    pub fn complete(&self, process: u64, completion: Completion) {
        let time_us = self.now_us();
        self.record(match completion {
            Completion::Ok(result) => HistoryEvent::Ok {
                process,
                time_us,
                result,
            },
            Completion::Fail { observation, error } => HistoryEvent::Fail {
                process,
                time_us,
                observation,
                error,
            },
            Completion::Info(error) => HistoryEvent::Info {
                process,
                time_us,
                error: Some(error),
            },
        });
    }

    /// A copy of the events recorded so far, in order.
    pub fn events(&self) -> Vec<HistoryEvent> {
        self.lock().clone()
    }

    /// The events recorded so far, in order.
    pub fn into_events(self) -> Vec<HistoryEvent> {
        match Arc::try_unwrap(self.events) {
            Ok(events) => events
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            Err(shared) => shared
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::RequestId;

    fn written(outcome: Outcome, balance: Option<i64>, to_balance: Option<i64>) -> Written {
        Written {
            request_id: RequestId {
                origin: 1,
                sequence: 1,
            },
            result: pb::WriteResult {
                outcome: outcome as i32,
                balance,
                to_balance,
                unknown_account: None,
            },
            log_index: 3,
        }
    }

    fn refused(code: tonic::Code) -> ClientError {
        ClientError::Refused {
            asked: crate::client::Asked::Read,
            cause: crate::client::Cause::status("branch", &tonic::Status::new(code, "no"), None),
        }
    }

    #[test]
    fn a_write_answered_is_shaped_by_its_operation() {
        let transfer = Op::Transfer {
            from: 1,
            to: 2,
            amount: 5,
        };
        let deposit = Op::Deposit {
            account: 1,
            amount: 5,
        };
        let both = Ok(written(Outcome::Ok, Some(10), Some(20)));
        assert_eq!(
            completion(&transfer, Reply::Write(&both)),
            Completion::Ok(OpResult::transfer(10, 20))
        );
        assert_eq!(
            completion(&deposit, Reply::Write(&both)),
            Completion::Ok(OpResult::balance(10))
        );
        let short = Ok(written(Outcome::InsufficientFunds, Some(3), None));
        assert_eq!(
            completion(&transfer, Reply::Write(&short)),
            Completion::Fail {
                observation: Some(Observation::InsufficientFunds { balance: Some(3) }),
                error: Some("InsufficientFunds".to_string()),
            }
        );
        let expired = Ok(written(Outcome::RequestIdExpired, None, None));
        assert!(matches!(
            completion(&deposit, Reply::Write(&expired)),
            Completion::Info(_)
        ));
    }

    #[test]
    fn only_a_write_refused_as_invalid_is_known_not_to_have_happened() {
        let deposit = Op::Deposit {
            account: 1,
            amount: 5,
        };
        let invalid = Err(refused(tonic::Code::InvalidArgument));
        assert!(matches!(
            completion(&deposit, Reply::Write(&invalid)),
            Completion::Fail {
                observation: None,
                ..
            }
        ));
        let unavailable = Err(refused(tonic::Code::Unavailable));
        assert!(matches!(
            completion(&deposit, Reply::Write(&unavailable)),
            Completion::Info(_)
        ));
        // A read changes nothing: one not answered did not happen.
        let read = Op::Read { accounts: vec![1] };
        let unanswered = Err(refused(tonic::Code::Unavailable));
        assert!(matches!(
            completion(&read, Reply::Read(&unanswered)),
            Completion::Fail { .. }
        ));
    }

    #[test]
    fn completions_become_events_in_order() {
        let recorder = Recorder::new();
        let clone = recorder.clone();
        recorder.invoke(0, Op::Read { accounts: vec![1] });
        clone.complete(0, Completion::Info("gave up".to_string()));
        recorder.complete(
            1,
            Completion::Fail {
                observation: None,
                error: None,
            },
        );
        drop(clone);
        let events = recorder.into_events();
        assert!(matches!(events[0], HistoryEvent::Invoke { process: 0, .. }));
        assert!(
            matches!(&events[1], HistoryEvent::Info { process: 0, error: Some(e), .. } if e == "gave up")
        );
        assert!(matches!(events[2], HistoryEvent::Fail { process: 1, .. }));
    }
}
