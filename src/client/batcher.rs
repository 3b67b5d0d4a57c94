//! Client-side batching, as TigerBeetle's clients do it: the writes one [`Client`] is asked
//! for while one of its writes is in flight wait, and go out together, in one `SubmitBatch`,
//! as soon as it returns.
//!
//! One write (or batch) in flight per client, and no task of its own: the callers take turns.
//! - A write made when nothing is in flight goes out at once, alone, as its own RPC (a
//!   sequential caller pays nothing for batching: one lock taken twice).
//! - A write made while one is in flight queues (at most [`QUEUED_WRITES_MAX`]; beyond that
//!   the caller waits for room, at most the client's deadline, then gets
//!   [`ClientError::QueueFull`] and nothing was sent).
//! - When the write or batch in flight returns, its sender hands the turn to the first caller
//!   still waiting, which takes what is queued (its own write first, at most
//!   [`BATCH_ITEMS_MAX`] in all) and sends it: alone as its own RPC if nothing else came, as
//!   one `SubmitBatch` otherwise. So a caller waits for at most the one in flight and then its
//!   own round trip (each bounded by the client's deadline).
//! - Every write keeps its own request id. The batch gets a new id of its own, chosen before
//!   the first attempt; a retry resends the same batch id and item ids, and the ledger
//!   deduplicates both, so a write is applied at most once however often its batch is sent.
//! - Each caller gets its own answer: its item's `WriteResult` and the batch's log index. An
//!   error of the whole batch (its outcome unknown, or refused) is given to every write in it,
//!   each naming its own request id. A batch refused whole as malformed or not allowed
//!   (INVALID_ARGUMENT, PERMISSION_DENIED: a token that does not cover one item's account)
//!   was not applied; its writes are then sent one by one, each under its own id, so one
//!   caller's refusal is not another's.
//!
//! A caller that gives up (its future dropped) is skipped if its write was still queued; if
//! the turn was its, the turn passes on; if it was sending a batch, the writes in it end with
//! [`ClientError::OutcomeUnknown`] (the batch may have been sent).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::{Asked, Cause, Client, ClientError, Write, Written};
use crate::ledger::{RequestId, BATCH_ITEMS_MAX};
use crate::proto::v1 as pb;
use tonic::Code;

/// Writes waiting for the one in flight, at most: one full batch.
pub const QUEUED_WRITES_MAX: usize = BATCH_ITEMS_MAX;

/// Beyond the two round trips a queued write waits for (the one in flight, then its own),
/// each bounded by the client's deadline: how much longer its caller waits for its answer.
const TURN_SLACK: Duration = Duration::from_secs(1);

/// Writes of a batch refused whole that are sent again one by one, at most at once.
const RESENT_IN_FLIGHT_MAX: usize = 16;

/// What a queued write's caller is woken with.
enum Wake {
    /// Its answer: another caller sent it in a batch.
    Answer(Result<Written, ClientError>),
    /// Its turn: the write in flight has returned, and this caller sends the next batch.
    Turn,
}

/// A write waiting for the one in flight.
struct Queued {
    request_id: RequestId,
    write: Write,
    wake: oneshot::Sender<Wake>,
}

#[derive(Default)]
struct State {
    /// Whether a caller has the turn (a write or batch is in flight, or about to be).
    sending: bool,
    /// Writes waiting for it, oldest first; empty whenever `sending` is false.
    queue: VecDeque<Queued>,
}

/// One client's queue of writes; see the module docs.
pub(super) struct Batcher {
    state: Mutex<State>,
    /// Free places in the queue.
    room: Semaphore,
}

/// How a write joined the batcher.
enum Joined {
    /// Nothing was in flight: this caller has the turn.
    Send,
    /// Queued: the caller is woken with its answer or its turn.
    Queued(oneshot::Receiver<Wake>),
    /// The queue is full.
    Full,
}

impl Batcher {
    pub(super) fn new() -> Batcher {
        Batcher {
            state: Mutex::default(),
            room: Semaphore::new(QUEUED_WRITES_MAX),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; if it ever did, the queue is still a queue.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes waiting for the one in flight now.
    pub(super) fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// Takes the turn if nobody has it, else queues the write, in a place of the queue the
    /// caller already holds (`room`) or a free one.
    fn join(&self, request_id: RequestId, write: &Write, room: Option<SemaphorePermit>) -> Joined {
        let mut state = self.lock();
        if !state.sending {
            assert!(state.queue.is_empty(), "writes queued with none in flight");
            state.sending = true;
            return Joined::Send;
        }
        let Some(room) = room.or_else(|| self.room.try_acquire().ok()) else {
            return Joined::Full;
        };
        // Given back when the write leaves the queue.
        room.forget();
        let (wake, woken) = oneshot::channel();
        state.queue.push_back(Queued {
            request_id,
            write: write.clone(),
            wake,
        });
        Joined::Queued(woken)
    }

    /// Takes up to `count` queued writes whose callers still wait, oldest first.
    fn take(&self, count: usize) -> Vec<Queued> {
        let mut state = self.lock();
        let mut taken = Vec::new();
        let mut left = 0;
        while taken.len() < count {
            let Some(queued) = state.queue.pop_front() else {
                break;
            };
            left += 1;
            if !queued.wake.is_closed() {
                taken.push(queued);
            }
        }
        self.room.add_permits(left);
        taken
    }

    /// The turn's holder is done: the turn goes to the first caller still waiting, or to
    /// nobody if none is.
    fn pass_turn(&self) {
        let mut state = self.lock();
        assert!(state.sending, "a turn passed that nobody had");
        while let Some(next) = state.queue.pop_front() {
            self.room.add_permits(1);
            if next.wake.send(Wake::Turn).is_ok() {
                // Its caller takes the queue, its own write first.
                return;
            }
        }
        state.sending = false;
    }
}

/// The turn, held while a write or batch is in flight; passed on when dropped, whether the
/// send finished or its caller gave up.
struct Turn<'a>(&'a Batcher);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.pass_turn();
    }
}

/// A queued caller's wait; if it gives up after its turn came, the turn passes on.
struct Waiting<'a> {
    batcher: &'a Batcher,
    wake: Option<oneshot::Receiver<Wake>>,
}

impl Waiting<'_> {
    /// The wake-up, or `None` if none came within `limit`. `Err`: the caller sending the
    /// batch this write was in gave up.
    async fn next(&mut self, limit: Duration) -> Option<Result<Wake, oneshot::error::RecvError>> {
        let wake = self.wake.as_mut()?;
        let woken = tokio::time::timeout(limit, wake).await.ok()?;
        self.wake = None;
        Some(woken)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut wake) = self.wake.take() {
            // No turn can come after this; one that came before is passed on.
            wake.close();
            if let Ok(Wake::Turn) = wake.try_recv() {
                self.batcher.pass_turn();
            }
        }
    }
}

impl Client {
    /// Writes this client has waiting for the one in flight (see [`super::batcher`]).
    pub fn writes_queued(&self) -> usize {
        self.batcher.queued()
    }

    /// [`Client::write_with_id`] through the batcher: at once if nothing is in flight, else
    /// with whatever else is queued once it returns.
    pub(super) async fn write_batched(
        &self,
        request_id: RequestId,
        write: &Write,
    ) -> Result<Written, ClientError> {
        let room_deadline = Instant::now() + self.config.deadline;
        let mut room = None;
        let woken = loop {
            match self.batcher.join(request_id, write, room.take()) {
                Joined::Send => {
                    let _turn = Turn(&self.batcher);
                    return self.send_one(request_id, write).await;
                }
                Joined::Queued(woken) => break woken,
                Joined::Full => {
                    let acquired =
                        tokio::time::timeout_at(room_deadline, self.batcher.room.acquire()).await;
                    match acquired {
                        Ok(Ok(permit)) => room = Some(permit),
                        Ok(Err(_)) | Err(_) => {
                            return Err(ClientError::QueueFull {
                                request_id,
                                queued: QUEUED_WRITES_MAX,
                                waited: self.config.deadline,
                            })
                        }
                    }
                }
            }
        };
        let mut waiting = Waiting {
            batcher: &self.batcher,
            wake: Some(woken),
        };
        let limit = self.config.deadline.saturating_mul(2) + TURN_SLACK;
        match waiting.next(limit).await {
            Some(Ok(Wake::Answer(answer))) => answer,
            Some(Ok(Wake::Turn)) => {
                let _turn = Turn(&self.batcher);
                self.send_turn(request_id, write).await
            }
            Some(Err(_)) => Err(self.unknown(
                request_id,
                "the caller sending the batch it was in gave up".to_string(),
            )),
            None => Err(self.unknown(request_id, format!("no answer within {limit:?}"))),
        }
    }

    /// The turn of the caller of `request_id`: sends its write with what is queued, and
    /// answers the others.
    async fn send_turn(
        &self,
        request_id: RequestId,
        write: &Write,
    ) -> Result<Written, ClientError> {
        let others = self.batcher.take(BATCH_ITEMS_MAX - 1);
        if others.is_empty() {
            return self.send_one(request_id, write).await;
        }
        let mut items = Vec::with_capacity(others.len() + 1);
        items.push((request_id, write.clone()));
        let mut wakes = Vec::with_capacity(others.len());
        for queued in others {
            items.push((queued.request_id, queued.write));
            wakes.push(queued.wake);
        }
        let mut answers = self.send_items(&items).await.into_iter();
        let own = answers.next();
        for (wake, answer) in wakes.into_iter().zip(answers) {
            // A caller that gave up meanwhile is not told.
            let _ = wake.send(Wake::Answer(answer));
        }
        own.unwrap_or_else(|| Err(self.unknown(request_id, "no answer for it".to_string())))
    }

    /// Sends `items` as one batch under a new id; each item's answer, in order.
    async fn send_items(&self, items: &[(RequestId, Write)]) -> Vec<Result<Written, ClientError>> {
        let batch_id = self.next_request_id();
        match self.send_batch(batch_id, items).await {
            Ok(reply) => self.answers(batch_id, items, reply),
            Err(ClientError::Refused { cause, .. })
                if matches!(cause.code, Code::InvalidArgument | Code::PermissionDenied) =>
            {
                tracing::debug!(
                    "batch {}:{} refused whole ({}); sending its {} writes one by one",
                    batch_id.origin,
                    batch_id.sequence,
                    cause.message,
                    items.len()
                );
                let mut answers = Vec::with_capacity(items.len());
                for chunk in items.chunks(RESENT_IN_FLIGHT_MAX) {
                    let mut sends = Vec::with_capacity(chunk.len());
                    for (id, write) in chunk {
                        sends.push(self.send_one(*id, write));
                    }
                    answers.extend(futures::future::join_all(sends).await);
                }
                answers
            }
            Err(error) => items
                .iter()
                .map(|(id, _)| Err(error.for_request(*id)))
                .collect(),
        }
    }

    /// Each item's answer from the batch's reply.
    fn answers(
        &self,
        batch_id: RequestId,
        items: &[(RequestId, Write)],
        reply: pb::SubmitBatchReply,
    ) -> Vec<Result<Written, ClientError>> {
        if reply.outcome() != pb::Outcome::Ok || reply.results.len() != items.len() {
            let why = format!(
                "its batch {}:{} was answered {:?} with {} results for {} writes",
                batch_id.origin,
                batch_id.sequence,
                reply.outcome(),
                reply.results.len(),
                items.len()
            );
            return items
                .iter()
                .map(|(id, _)| Err(self.unknown(*id, why.clone())))
                .collect();
        }
        let log_index = reply.log_index;
        items
            .iter()
            .zip(reply.results)
            .map(|(&(request_id, _), result)| {
                Ok(Written {
                    request_id,
                    result,
                    log_index,
                })
            })
            .collect()
    }

    /// The outcome of `request_id` is unknown, for the reason `why` (inside this client: its
    /// batch's sender gave up, or the batch's answer did not fit it).
    fn unknown(&self, request_id: RequestId, why: String) -> ClientError {
        ClientError::OutcomeUnknown {
            asked: Asked::Write(request_id),
            cause: Cause::new("", Code::Unknown, why),
            deadline: self.config.deadline,
            attempts: 0,
        }
    }
}
