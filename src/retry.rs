//! Retry pauses for every retry loop of the crate: [`jittered`] and [`backoff`], drawn from
//! [`ThreadRng`], a per-thread generator that a simulation can seed ([`seed_thread_rng`]) so
//! that a run replays from its seed. The Raft runtime (`raft::runtime`) draws its election
//! timeouts from the same generator.
//!
//! Jitter is what keeps callers apart: after a failover every caller's first retry would
//! otherwise fall at the same instants, and so would every one after it.

use std::cell::RefCell;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

thread_local! {
    /// This thread's seeded generator, if a simulation seeded it.
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// From now on, random draws on this thread (retry pauses, election timeouts) come from a
/// generator seeded with `seed`. Used by the simulator; production never calls it.
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
/// so that callers retrying the same thing spread out instead of retrying in step.
pub fn jittered(pause: Duration) -> Duration {
    let half = pause / 2;
    let extra = ThreadRng.gen_range(0..=half.as_micros().min(u128::from(u64::MAX)) as u64);
    half + Duration::from_micros(extra)
}

/// The pause before retry `retry` (0 for the first): `min` doubled `retry` times, capped at
/// `max`, then [`jittered`]. Always within `[min / 2, max]` (with `min <= max`).
pub fn backoff(retry: u32, min: Duration, max: Duration) -> Duration {
    jittered(min.saturating_mul(1u32 << retry.min(16)).min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_thread_draws_the_same_pauses() {
        let draw = || {
            (0..8)
                .map(|retry| backoff(retry, Duration::from_millis(20), Duration::from_secs(1)))
                .collect::<Vec<_>>()
        };
        seed_thread_rng(7);
        let first = draw();
        seed_thread_rng(7);
        let second = draw();
        unseed_thread_rng();
        assert_eq!(first, second);
    }

    /// Over many draws the pauses are spread, never all equal, and stay within
    /// `[min / 2, max]` whatever the retry number.
    #[test]
    fn backoff_pauses_are_spread_and_bounded() {
        let (min, max) = (Duration::from_millis(20), Duration::from_millis(300));
        for retry in [0, 1, 3, 10, 40] {
            let pauses: Vec<Duration> = (0..200).map(|_| backoff(retry, min, max)).collect();
            assert!(
                pauses.iter().all(|&p| p >= min / 2 && p <= max),
                "{pauses:?}"
            );
            let (low, high) = (pauses.iter().min(), pauses.iter().max());
            assert!(low < high, "retry {retry}: every pause equal: {pauses:?}");
        }
        assert!(backoff(40, min, max) >= max / 2, "capped, then jittered");
    }
}
