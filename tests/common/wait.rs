//! Bounded waiting: every poll in the tests runs against a [`Deadline`] and fails naming what
//! it waited for, so a test never synchronises on a bare sleep nor hangs.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a bounded wait polls, unless told otherwise ([`Deadline::polling`]).
pub const POLL: Duration = Duration::from_millis(50);

/// A time limit on a wait, started when made, with the interval it polls at.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    limit: Duration,
    poll: Duration,
}

impl Deadline {
    /// A deadline `limit` from now, polling every [`POLL`].
    pub fn after(limit: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
            poll: POLL,
        }
    }

    /// The same deadline, polling every `every` instead.
    pub fn polling(self, every: Duration) -> Deadline {
        Deadline {
            poll: every,
            ..self
        }
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The whole time allowed.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Panics with `failure` (what did not happen) once the deadline has passed.
    pub fn check(&self, failure: impl Display) {
        assert!(!self.passed(), "{failure} (waited {:?})", self.limit);
    }

    /// One step of an async poll loop: panics with `failure` if the deadline has passed, else
    /// waits one poll interval.
    pub fn pause(&self, failure: impl Display) -> impl Future<Output = ()> {
        self.check(failure);
        tokio::time::sleep(self.poll)
    }

    /// One step of a blocking poll loop (tests without a runtime): as [`Deadline::pause`].
    pub fn pause_blocking(&self, failure: impl Display) {
        self.check(failure);
        std::thread::sleep(self.poll);
    }
}

/// Polls `probe` every [`POLL`] until it gives `Some`, and returns that; panics with `failure`
/// (what did not happen) after `limit`.
pub async fn eventually<T, F, Fut>(failure: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Deadline::after(limit);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        deadline.pause(failure).await;
    }
}
