//! Linearizable reads: the leader's read index (shared by concurrent readers in rounds), then a
//! wait until this replica has applied up to it, then the local replica.

use std::sync::Arc;

use openraft::error::{CheckIsLeaderError, ForwardToLeader, RaftError};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{pause_before_retry, BranchError, Internal, Replica, ATTEMPTS_MAX, REQUEST_DEADLINE};
use crate::ledger::AccountId;
use crate::proto::peer::ReadIndexRequest;
use crate::raft::network::within;

impl Replica {
    /// The leader's read index: a log index such that every write acknowledged before this
    /// call started is at or below it.
    ///
    /// Concurrent callers share rounds: a caller waits for the next round that starts after
    /// it arrived (its answer covers every write acknowledged before then), so one quorum
    /// confirmation (and, on a follower, one call to the leader) serves many reads.
    pub(super) async fn read_index(&self, deadline: Instant) -> Result<Option<u64>, BranchError> {
        let round = || -> ReadRound {
            let replica = self.clone();
            Box::pin(async move {
                replica
                    .read_index_now(Instant::now() + REQUEST_DEADLINE)
                    .await
            })
        };
        self.read_rounds.join(round, deadline).await
    }

    /// One read-index round of its own (see [`Replica::read_index`]).
    async fn read_index_now(&self, deadline: Instant) -> Result<Option<u64>, BranchError> {
        for attempt in 0..ATTEMPTS_MAX {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let leader = match tokio::time::timeout(timeout, self.raft.get_read_log_id()).await {
                Err(_) => return Err(BranchError::NoLeader(REQUEST_DEADLINE)),
                Ok(Ok((read_log_id, _applied))) => return Ok(read_log_id.map(|id| id.index)),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                    forward
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                    tracing::debug!(branch = self.id, "read index: {e}");
                    ForwardToLeader::empty()
                }
                Ok(Err(RaftError::Fatal(_))) => return Err(BranchError::ShuttingDown),
            };
            if let Some(addr) = self.leader_address(&leader) {
                if let Ok(mut client) = self.peers.client(&addr) {
                    let mut request = tonic::Request::new(ReadIndexRequest {});
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    request.set_timeout(remaining);
                    match within(remaining, client.read_index(request)).await {
                        Ok(reply) => return Ok(reply.get_ref().index),
                        Err(status) => {
                            tracing::debug!(branch = self.id, "read index from leader: {status}")
                        }
                    }
                }
            }
            match leader.leader_id {
                Some(_) => pause_before_retry(attempt, deadline).await,
                None => {
                    self.wait_for_leader(deadline).await?;
                }
            }
        }
        Err(BranchError::NoLeader(REQUEST_DEADLINE))
    }

    /// A linearizable read of one account's balance, served from this branch's replica.
    pub(super) async fn read_balance(
        &self,
        account: AccountId,
    ) -> Result<Option<i64>, BranchError> {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        if !self.unsafe_local_reads {
            let read_index = self.read_index(deadline).await?;
            self.wait_applied(read_index, deadline).await?;
        }
        self.state_machine
            .read(|state| state.ledger.balance(account))
            .ok_or(BranchError::Internal(Internal::Poisoned))
    }

    /// Waits until this branch has applied the log up to `index`.
    pub(super) async fn wait_applied(
        &self,
        index: Option<u64>,
        deadline: Instant,
    ) -> Result<(), BranchError> {
        let Some(index) = index else { return Ok(()) };
        // Usually already applied (always on the leader): answered from the replica itself,
        // which is what the read is served from, without openraft's waiter, which clones the
        // whole metrics on every check.
        let applied = self
            .state_machine
            .read(|state| state.last_applied.map(|id| id.index))
            .flatten();
        if applied >= Some(index) {
            return Ok(());
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "read index applied")
            .await
        {
            Ok(_) => Ok(()),
            Err(openraft::metrics::WaitError::Timeout(..)) => {
                Err(BranchError::CatchUpTimeout(REQUEST_DEADLINE))
            }
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(BranchError::ShuttingDown),
        }
    }

    /// The balances of `accounts` (`None`: no such account) and the log index they reflect,
    /// read together from this branch's replica as it is now. No read index: the caller has
    /// already waited for whatever freshness it needs (see [`Branch::read_balance`]).
    pub(super) fn local_balances(
        &self,
        accounts: &[AccountId],
    ) -> Result<(Vec<Option<i64>>, Option<u64>), BranchError> {
        self.state_machine
            .read(|state| {
                let balances = accounts.iter().map(|&a| state.ledger.balance(a)).collect();
                (balances, state.last_applied.map(|id| id.index))
            })
            .ok_or(BranchError::Internal(Internal::Poisoned))
    }
}

/// One read-index round, as a future that owns what it needs.
type ReadRound =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<u64>, BranchError>> + Send>>;

#[derive(Default)]
struct RoundsState {
    /// Rounds started so far (the generation of the latest).
    started: u64,
    running: bool,
    /// The round to start when the running one ends: brought by the first caller that came
    /// while it ran.
    next: Option<ReadRound>,
}

/// Read-index rounds shared by concurrent readers (see [`Branch::read_index`]).
pub(super) struct ReadRounds {
    state: std::sync::Mutex<RoundsState>,
    /// The latest finished round: its generation and its answer.
    done: watch::Sender<(u64, Result<Option<u64>, BranchError>)>,
}

impl ReadRounds {
    pub(super) fn new() -> Self {
        ReadRounds {
            state: std::sync::Mutex::default(),
            done: watch::channel((0, Ok(None))).0,
        }
    }

    /// The answer of the first round that starts after this call (`round` makes one only if
    /// none is running now, to run, or none is queued yet, to queue).
    async fn join(
        self: &Arc<Self>,
        round: impl FnOnce() -> ReadRound,
        deadline: Instant,
    ) -> Result<Option<u64>, BranchError> {
        let mut done = self.done.subscribe();
        let target = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.running {
                if state.next.is_none() {
                    state.next = Some(round());
                }
                state.started + 1
            } else {
                state.running = true;
                state.started += 1;
                let generation = state.started;
                self.clone().run(generation, round());
                generation
            }
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        let finished = done.wait_for(|(generation, _)| *generation >= target);
        let answer = match tokio::time::timeout(timeout, finished).await {
            Ok(Ok(finished)) => finished.1.clone(),
            Ok(Err(_)) => Err(BranchError::ShuttingDown),
            Err(_) => Err(BranchError::NoLeader(REQUEST_DEADLINE)),
        };
        answer
    }

    /// Runs rounds back to back while callers keep queueing them.
    fn run(self: Arc<Self>, generation: u64, round: ReadRound) {
        tokio::spawn(async move {
            let (mut generation, mut round) = (generation, round);
            loop {
                let answer = round.await;
                // The previous answer is replaced: every waiter for it has seen it or a later one.
                let _previous = self.done.send_replace((generation, answer));
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                match state.next.take() {
                    Some(next) => {
                        state.started += 1;
                        generation = state.started;
                        round = next;
                    }
                    None => {
                        state.running = false;
                        return;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{BranchError, ReadRound, ReadRounds};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;

    /// A round that counts itself and answers its own number, after a while.
    fn counted(rounds: &Arc<AtomicU64>) -> ReadRound {
        let rounds = rounds.clone();
        Box::pin(async move {
            let number = rounds.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, BranchError>(Some(number))
        })
    }

    #[tokio::test]
    async fn concurrent_reads_share_rounds_and_never_get_an_older_one() {
        let shared = Arc::new(ReadRounds::new());
        let rounds = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(5);
        // The first caller starts round 1; callers that come while it runs need round 2.
        let first = {
            let (shared, round) = (shared.clone(), counted(&rounds));
            tokio::spawn(async move { shared.join(|| round, deadline).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut later = Vec::new();
        for _ in 0..50 {
            let (shared, round) = (shared.clone(), counted(&rounds));
            later.push(tokio::spawn(async move {
                shared.join(|| round, deadline).await
            }));
        }
        assert_eq!(first.await.expect("join").expect("answer"), Some(1));
        for waiter in later {
            let answer = waiter.await.expect("join").expect("answer");
            assert_eq!(
                answer,
                Some(2),
                "a caller that came during round 1 needs round 2"
            );
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 2, "51 reads took 2 rounds");
    }
}
