//! Open-loop load for the driver ([`super::driver`]): requests are due at fixed times
//! `t0 + i / rate`, whatever the cluster answers, and each one's latency is measured from the
//! time it was due, not from the time it was sent. A closed loop (each client sending its next
//! request when the last one is answered) slows down with the cluster and so never sees the
//! queue a slow moment builds: coordinated omission. Here a slow moment makes later requests
//! start late, and that lateness is part of their latency.
//!
//! The run's clients are a bounded pool of requests in flight: a free client takes the next
//! request due (in order, [`Schedule::next`]), waits until it is due, and sends it; when every
//! client is busy, the next request waits for one to be free, and starts late. The schedule
//! counts the requests started late and the worst lateness ([`OpenLoop`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// The highest rate accepted, in requests per second (one every microsecond).
pub const RATE_MAX: f64 = 1_000_000.0;
/// The lowest rate accepted, in requests per second (one every 1,000 seconds).
pub const RATE_MIN: f64 = 0.001;
/// A request started this much after it was due, or more, counts as late. Tokio's timers have
/// millisecond resolution: less is the timer, not a busy pool.
pub const LATE_AFTER: Duration = Duration::from_millis(1);

/// Whether `rate` (requests per second) is one [`Schedule`] accepts.
pub fn rate_is_valid(rate: f64) -> bool {
    rate.is_finite() && (RATE_MIN..=RATE_MAX).contains(&rate)
}

/// The requests due, and how they started; shared by the run's clients.
#[derive(Debug)]
pub(crate) struct Schedule {
    rate_per_s: f64,
    /// When request 0 is due.
    start: Instant,
    /// The next request to hand out.
    next: AtomicU64,
    started: AtomicU64,
    late: AtomicU64,
    worst_late_us: AtomicU64,
}

impl Schedule {
    /// `rate_per_s` requests per second from `start`; `rate_per_s` must pass [`rate_is_valid`]
    /// (else the schedule clamps it into the accepted range).
    pub fn new(rate_per_s: f64, start: Instant) -> Schedule {
        let rate_per_s = if rate_per_s.is_finite() {
            rate_per_s.clamp(RATE_MIN, RATE_MAX)
        } else {
            RATE_MAX
        };
        Schedule {
            rate_per_s,
            start,
            next: AtomicU64::new(0),
            started: AtomicU64::new(0),
            late: AtomicU64::new(0),
            worst_late_us: AtomicU64::new(0),
        }
    }

    /// Takes the next request: when it is due. `None`: too far in the future for the clock.
    pub fn next(&self) -> Option<Instant> {
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        let offset = Duration::try_from_secs_f64(index as f64 / self.rate_per_s).ok()?;
        self.start.checked_add(offset)
    }

    /// The request due at `due` started at `at`.
    pub fn started(&self, due: Instant, at: Instant) {
        self.started.fetch_add(1, Ordering::Relaxed);
        let late = at.saturating_duration_since(due);
        if late >= LATE_AFTER {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        self.worst_late_us.fetch_max(late_us, Ordering::Relaxed);
    }

    /// What the schedule achieved over a run that lasted `elapsed`.
    pub fn report(&self, elapsed: Duration) -> OpenLoop {
        let requests = self.started.load(Ordering::Relaxed);
        OpenLoop {
            rate_per_s: self.rate_per_s,
            requests,
            achieved_per_s: requests as f64 / elapsed.as_secs_f64().max(1e-9),
            late: self.late.load(Ordering::Relaxed),
            worst_late_us: self.worst_late_us.load(Ordering::Relaxed),
        }
    }
}

/// An open-loop run's pacing: the rate asked for and achieved, and the requests that could not
/// start when due because every client was busy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OpenLoop {
    /// The rate asked for, in requests per second (a batch is one request).
    pub rate_per_s: f64,
    /// Requests started.
    pub requests: u64,
    /// Requests started per second of the run (to the last answer).
    pub achieved_per_s: f64,
    /// Requests started [`LATE_AFTER`] or more after they were due.
    pub late: u64,
    /// The longest a request waited past its due time to start, in microseconds.
    pub worst_late_us: u64,
}

impl OpenLoop {
    /// The pacing in one line, and what the latencies are measured from.
    pub fn summary(&self) -> String {
        format!(
            "open loop at {} requests/s: achieved {:.1}/s; {} of {} started late (>= {} ms after \
             due), worst {}; latency from each request's due time",
            self.rate_per_s,
            self.achieved_per_s,
            self.late,
            self.requests,
            LATE_AFTER.as_millis(),
            super::measure::micros(self.worst_late_us)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_at_even_intervals_and_lateness_is_counted() {
        let start = Instant::now();
        let schedule = Schedule::new(4.0, start);
        let due: Vec<Instant> = (0..3).filter_map(|_| schedule.next()).collect();
        assert_eq!(
            due,
            [
                start,
                start + Duration::from_millis(250),
                start + Duration::from_millis(500)
            ]
        );
        schedule.started(due[0], due[0]);
        schedule.started(due[1], due[1] + Duration::from_micros(900));
        schedule.started(due[2], due[2] + Duration::from_millis(30));
        let report = schedule.report(Duration::from_secs(1));
        assert_eq!((report.requests, report.late), (3, 1));
        assert_eq!(report.worst_late_us, 30_000);
        assert_eq!(report.achieved_per_s, 3.0);
    }

    #[test]
    fn rates_are_bounded() {
        assert!(rate_is_valid(200.0) && rate_is_valid(RATE_MAX));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, RATE_MAX * 2.0] {
            assert!(!rate_is_valid(bad), "{bad}");
        }
    }
}
