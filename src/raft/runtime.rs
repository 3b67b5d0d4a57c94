//! openraft's async runtime: tokio, with a random number generator that a simulation can seed.
//!
//! openraft draws every election timeout from `AsyncRuntime::thread_rng()`: here
//! [`crate::retry::ThreadRng`], the generator every retry pause of the crate is drawn from. In
//! production that is the thread's entropy-seeded generator, exactly as with
//! `openraft::TokioRuntime`. A deterministic simulation (`crate::sim`) calls
//! [`crate::retry::seed_thread_rng`] on the thread that runs the whole simulated cluster, so
//! the same seed draws the same timeouts and pauses in the same order.
//! Everything else is delegated to [`TokioRuntime`] unchanged.

use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};

use crate::retry::ThreadRng;

/// [`TokioRuntime`] with [`ThreadRng`] as its generator.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BankRuntime;

impl AsyncRuntime for BankRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = ThreadRng;
    type OneshotSender<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <TokioRuntime as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        ThreadRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        TokioRuntime::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use crate::retry::{seed_thread_rng, unseed_thread_rng};

    #[test]
    fn a_seeded_thread_draws_the_same_sequence() {
        let draw = || {
            let mut rng = BankRuntime::thread_rng();
            (0..8)
                .map(|_| rng.gen_range(800..1600))
                .collect::<Vec<u64>>()
        };
        seed_thread_rng(7);
        let first = draw();
        seed_thread_rng(7);
        let second = draw();
        unseed_thread_rng();
        assert_eq!(first, second);
    }
}
