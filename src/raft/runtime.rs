//! openraft's async runtime: tokio, with a random number generator that a simulation can seed.
//!
//! openraft draws every election timeout from `AsyncRuntime::thread_rng()`. In production that
//! is the thread's entropy-seeded generator, exactly as with `openraft::TokioRuntime`. A
//! deterministic simulation (`crate::sim`) calls [`seed_thread_rng`] on the thread that runs
//! the whole simulated cluster, so the same seed draws the same timeouts in the same order.
//! Everything else is delegated to [`TokioRuntime`] unchanged.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    /// This thread's seeded generator, if a simulation seeded it.
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// From now on, openraft's random draws on this thread come from a generator seeded with
/// `seed`. Used by the simulator; production never calls it.
pub fn seed_thread_rng(seed: u64) {
    SEEDED.with(|rng| *rng.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

/// Back to the thread's entropy-seeded generator.
pub fn unseed_thread_rng() {
    SEEDED.with(|rng| *rng.borrow_mut() = None);
}

/// A handle to this thread's generator: the seeded one if [`seed_thread_rng`] was called,
/// else `rand::thread_rng()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRng;

impl ThreadRng {
    fn with<T>(f: impl FnOnce(&mut dyn RngCore) -> T) -> T {
        SEEDED.with(|seeded| match seeded.borrow_mut().as_mut() {
            Some(rng) => f(rng),
            None => f(&mut rand::thread_rng()),
        })
    }
}

impl RngCore for ThreadRng {
    fn next_u32(&mut self) -> u32 {
        Self::with(|rng| rng.next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        Self::with(|rng| rng.next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        Self::with(|rng| rng.fill_bytes(dest))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        Self::with(|rng| rng.try_fill_bytes(dest))
    }
}

/// `pause` with jitter: a duration drawn uniformly between half of it and all of it, from
/// [`ThreadRng`] (so a simulation stays deterministic per seed). Every retry loop waits this,
/// so that branches retrying the same thing spread out instead of retrying in step.
pub fn jittered(pause: Duration) -> Duration {
    use rand::Rng;
    let half = pause / 2;
    let extra = ThreadRng.gen_range(0..=half.as_micros().min(u128::from(u64::MAX)) as u64);
    half + Duration::from_micros(extra)
}

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
