//! The longest stall of a run: the longest time between two consecutive acknowledged writes,
//! across all clients, and the wall-clock time it ended at. After a leader is killed, the
//! stall that covers the kill ends at the first write the new leader acknowledged, so
//! `ended_unix_s` minus the kill's time is the failover as a client sees it
//! (`bench/failover.sh`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The longest gap between consecutive acknowledged writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stall {
    /// Its length, in seconds (0 with fewer than two acknowledged writes).
    pub seconds: f64,
    /// When it ended (the acknowledgement after the gap), in seconds since the Unix epoch.
    pub ended_unix_s: f64,
}

#[derive(Debug, Default)]
struct Clock {
    last: Option<Instant>,
    longest: Duration,
    ended: Option<SystemTime>,
}

/// Shared by every client of a run: each acknowledged write is reported with [`Acks::ack`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Acks(Arc<Mutex<Clock>>);

impl Acks {
    /// A write was acknowledged now.
    pub fn ack(&self) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut clock = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = clock.last {
            let gap = now.saturating_duration_since(last);
            if gap > clock.longest {
                clock.longest = gap;
                clock.ended = Some(wall);
            }
        }
        clock.last = Some(clock.last.map_or(now, |last| last.max(now)));
    }

    /// The longest stall so far.
    pub fn longest(&self) -> Stall {
        let clock = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Stall {
            seconds: clock.longest.as_secs_f64(),
            ended_unix_s: clock
                .ended
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_between_acks_is_kept_with_its_end() {
        let acks = Acks::default();
        assert_eq!(acks.longest(), Stall::default());
        acks.ack();
        assert_eq!(acks.longest().seconds, 0.0, "one ack is no gap");
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        std::thread::sleep(Duration::from_millis(30));
        acks.ack();
        acks.ack();
        let stall = acks.longest();
        assert!(stall.seconds >= 0.03, "{stall:?}");
        assert!(stall.ended_unix_s >= before + 0.03, "{stall:?}");
    }
}
